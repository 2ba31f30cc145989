"""The 100,000-client case of the history bench: the metrics file and status at 300,000 keys.

One scratch database with ``clients`` connected clients after one run (history_data.py),
every key then refreshed but a few made stale (three aged by 30 hours, one never
refreshed), as a healthy fleet with a few stragglers. It measures, as
real processes and over ``repeat`` rounds (median): a one-client run end to end
(``analytics_refresh_cron.py --client X`` with ``METRICS_FILE`` set, against a loopback
backend that answers at once), the metrics file it wrote (bytes, series, ``promtool check
metrics``), the time to write that file (in-process, the run's own publish step), and
``status`` and ``status --json`` (seconds, bytes of output); and checks that the stale keys
are named first among the worst keys of both.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import history_data as data
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
CRON = ROOT / "analytics_refresh_cron.py"
PROCESS_SECONDS = 600
WORST = "analytics_refresh_worst_key_last_current_timestamp_seconds"
KB = 1024
# The synthetic run failed a few keys at random, never refreshed since: call them refreshed,
# so that the fleet is healthy but for the keys made stale below.
HEAL = """
    UPDATE refresh_state SET last_success_at = last_attempt_at, verified_at = last_attempt_at,
                             last_status = 'succeeded', consecutive_failures = 0
    WHERE last_success_at IS NULL
"""
# Three keys no run refreshed for 30 hours, and one never refreshed: clients 2, 3, 5 and 7.
AGE_KEYS = """
    UPDATE refresh_state SET last_success_at = now() - interval '30 hours',
                             verified_at = now() - interval '30 hours'
    WHERE (client_id, platform) IN (
        (md5('client:2')::uuid, 'shopify'), (md5('client:3')::uuid, 'all'),
        (md5('client:5')::uuid, 'amazon'))
    RETURNING client_id::text, platform
"""
FORGET_KEY = """
    DELETE FROM refresh_state WHERE client_id = md5('client:7')::uuid AND platform = 'amazon'
    RETURNING client_id::text, platform
"""
FRESH_CLIENT = "SELECT md5('client:11')::uuid::text"


def make_stale(url: str) -> tuple[list[tuple[str, str]], str]:
    """Age three keys and forget one; return them (never refreshed first) and a fresh client."""
    conn = data.connect(url)
    with conn.cursor() as cur:
        cur.execute(HEAL)
        cur.execute(FORGET_KEY)
        keys = [tuple(r) for r in cur.fetchall()]
        cur.execute(AGE_KEYS)
        keys += sorted(tuple(r) for r in cur.fetchall())
        cur.execute("VACUUM ANALYZE refresh_state")
        cur.execute(FRESH_CLIENT)
        (fresh,) = cur.fetchone()
    conn.close()
    return keys, fresh


def _process(args: list[str], env: dict, workdir: str, out=subprocess.DEVNULL) -> tuple:
    started = time.perf_counter()
    proc = subprocess.run(
        args,
        env=env,
        cwd=workdir,
        stdout=out,
        stderr=subprocess.PIPE,
        text=True,
        timeout=PROCESS_SECONDS,
        check=False,
    )
    return time.perf_counter() - started, proc


def one_client_run(env: dict, url: str, backend_url: str, client: str, path: Path) -> float:
    """Return the wall seconds of a one-client run, metrics file included."""
    run_env = {
        **env,
        "DATABASE_URL": url,
        "ANALYTICS_API_URL": backend_url,
        "METRICS_FILE": str(path),
        "REFRESH_HISTORY_DAYS": "0",  # the history under test stays as built
    }
    seconds, proc = _process(
        [sys.executable, str(CRON), "--client", client], run_env, env["BENCH_WORKDIR"]
    )
    if proc.returncode != 0:
        raise RuntimeError(f"one-client run: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return seconds


def status(env: dict, url: str, *flags: str) -> tuple[float, str]:
    """Return the wall seconds and the output of one ``analytics-refresh status`` process."""
    seconds, proc = _process(
        [str(data.CLI), "status", *flags],
        {**env, "DATABASE_URL": url},
        env["BENCH_WORKDIR"],
        out=subprocess.PIPE,
    )
    if proc.returncode not in (0, 1):  # 1: some key is stale, still a full report
        raise RuntimeError(f"status {' '.join(flags)}: exit {proc.returncode}\n{proc.stderr}")
    return seconds, proc.stdout


def write_seconds(env: dict, url: str, path: Path) -> float:
    """Return the seconds the run's publish step takes to read the record and write the file."""
    code = (
        "import sys, time\n"
        "from analytics_refresh.metrics import publish\n"
        "from analytics_refresh.runner import RunResult\n"
        "from analytics_refresh.settings import Settings\n"
        "import os\n"
        "settings = Settings.from_env(os.environ)\n"
        "now = time.time()\n"
        "result = RunResult(None, 'succeeded', 0, started_at=now, finished_at=now)\n"
        "started = time.perf_counter()\n"
        "publish(settings, result)\n"
        "print(time.perf_counter() - started)\n"
    )
    _, proc = _process(
        [sys.executable, "-c", code],
        {**env, "DATABASE_URL": url, "METRICS_FILE": str(path)},
        env["BENCH_WORKDIR"],
        out=subprocess.PIPE,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"publish: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def _backend_cpu(pid: int) -> float | None:
    """Return the CPU seconds a local PostgreSQL backend has used, or None when unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summary_cpu(env: dict, url: str) -> tuple[float, float | None, float]:
    """Return the summary query's wall seconds, its backend's CPU seconds, and ours.

    CPU seconds do not grow with the machine's load the way wall seconds do on a shared
    machine; the backend's are readable only when the server runs here.
    """
    from analytics_refresh import key_freshness
    from analytics_refresh.settings import Settings

    settings = Settings.from_env({**env, "DATABASE_URL": url})
    conn = data.connect(url)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        (pid,) = cur.fetchone()
    before, ours = _backend_cpu(pid), time.process_time()
    started = time.perf_counter()
    key_freshness.read(conn, settings, worst=20, streaks=20)
    wall = time.perf_counter() - started
    after, ours = _backend_cpu(pid), time.process_time() - ours
    conn.close()
    return wall, None if before is None or after is None else after - before, ours


def promtool_check(path: Path) -> str:
    """Return ``clean``, the findings, or ``not run`` when promtool is not installed."""
    promtool = shutil.which("promtool")
    if not promtool:
        return "not run (no promtool)"
    done = subprocess.run(
        [promtool, "check", "metrics"],
        input=path.read_text(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    found = (done.stdout + done.stderr).strip()
    return "clean" if done.returncode == 0 and not found else found[:500]


def measure(server: str, env: dict, clients: int, repeat: int, backend) -> dict:
    """Build the fleet, make keys stale, and time every figure; return them all."""
    print(f"building {clients:,} clients x 1 run", flush=True)
    ds = data.build(
        server, f"{clients:,} x 1 run", "history_bench_fleet", clients=clients, days=1,
        runs_per_day=1, env=env,
    )  # fmt: skip
    stale, fresh = make_stale(ds.url)
    workdir = Path(env["BENCH_WORKDIR"])
    path = workdir / "fleet.prom"
    figures = {"run": [], "write": [], "status": [], "status_json": [], "query": []}
    cpu = []
    outputs = {}
    load = []  # the machine's 1-minute load average: the times are wall times
    for round_ in range(1, repeat + 1):
        load.append(os.getloadavg()[0])
        figures["run"].append(one_client_run(env, ds.url, backend.url, fresh, path))
        figures["write"].append(write_seconds(env, ds.url, workdir / "write.prom"))
        seconds, outputs["status"] = status(env, ds.url)
        figures["status"].append(seconds)
        seconds, outputs["status_json"] = status(env, ds.url, "--json")
        figures["status_json"].append(seconds)
        wall, backend_cpu, our_cpu = summary_cpu(env, ds.url)
        figures["query"].append(wall)
        if backend_cpu is not None:
            cpu.append(backend_cpu + our_cpu)
        print(
            f"  round {round_}/{repeat}: run {figures['run'][-1]:.2f}s, "
            f"write {figures['write'][-1]:.2f}s, status {figures['status'][-1]:.2f}s, "
            f"--json {figures['status_json'][-1]:.2f}s",
            flush=True,
        )
    text = path.read_text(encoding="utf-8")
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    named = sorted((s for s in samples if s.name == WORST), key=lambda s: s.value)
    metric_worst = [(s.labels["client_id"], s.labels["platform"]) for s in named]
    report = json.loads(outputs["status_json"])
    status_worst = [(k["client_id"], k["platform"]) for k in report["worst"]]
    return {
        "dataset": {k: v for k, v in vars(ds).items() if k != "url"},
        "keys": ds.keys,
        "medians": {k: statistics.median(v) for k, v in figures.items()},
        "samples": figures,
        "load": statistics.median(load),
        "query_cpu": statistics.median(cpu) if cpu else None,
        "cpus": os.cpu_count(),
        "file_bytes": len(text.encode()),
        "series": len(samples),
        "promtool": promtool_check(path),
        "status_bytes": len(outputs["status"].encode()),
        "status_json_bytes": len(outputs["status_json"].encode()),
        "stale": stale,
        "stale_in_metrics": sum(1 for k in stale if k in metric_worst[: len(stale)]),
        "stale_in_status": sum(1 for k in stale if k in status_worst[: len(stale)]),
        "ds": ds,
    }


def goal(met: bool, text: str) -> str:
    return f"| {text} | {'met' if met else 'MISSED'} |"


def report(f: dict, repeat: int) -> str:
    """Return the figures against the goals, as a table."""
    m, n, keys = f["medians"], len(f["stale"]), f["keys"]
    head = f"{keys:,} keys, one run (median of {repeat})"
    return "\n".join(
        [
            f"| {head} | figure |",
            "|---|---|",
            f"| metrics file | {f['file_bytes'] / KB:,.1f} KB, {f['series']:,} series |",
            f"| metrics file written (read the record + write) | {m['write']:.2f} s |",
            f"| one-client run, end to end | {m['run']:.2f} s |",
            f"| `status` | {m['status']:.2f} s, {f['status_bytes'] / KB:,.1f} KB |",
            f"| `status --json` | {m['status_json']:.2f} s, "
            f"{f['status_json_bytes'] / KB:,.1f} KB |",
            f"| `promtool check metrics` | {f['promtool']} |",
            f"| the summary's query (counts, worst keys, streaks) | {m['query']:.2f} s wall, "
            + (
                f"{f['query_cpu']:.2f} s CPU (database + client) |"
                if f["query_cpu"] is not None
                else "CPU not readable (a remote server) |"
            ),
            f"| load average while timing (median) | {f['load']:.1f} on {f['cpus']} CPUs |",
            "",
            "| goal | |",
            "|---|---|",
            goal(
                f["series"] <= 1000 and f["file_bytes"] <= 256 * KB and m["write"] <= 1.0,
                f"metrics file: {f['series']:,} series, {f['file_bytes'] / KB:,.1f} KB, "
                f"written in {m['write']:.2f} s; at most 1,000 series, 256 KB, 1 s",
            ),
            goal(m["run"] <= 3.0, f"one-client run: {m['run']:.2f} s, at most 3 s"),
            goal(m["status"] <= 1.0, f"`status`: {m['status']:.2f} s, at most 1 s"),
            goal(
                m["status_json"] <= 1.0 and f["status_json_bytes"] <= 64 * KB,
                f"`status --json`: {m['status_json']:.2f} s, "
                f"{f['status_json_bytes'] / KB:,.1f} KB; at most 1 s and 64 KB",
            ),
            goal(f["promtool"] == "clean", f"`promtool check metrics`: {f['promtool']}"),
            goal(
                f["stale_in_metrics"] == n and f["stale_in_status"] == n,
                f"the {n} stale keys named first among the worst: {f['stale_in_metrics']} in "
                f"the metrics, {f['stale_in_status']} in `status --json`",
            ),
        ]
    )
