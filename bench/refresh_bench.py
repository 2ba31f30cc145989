"""The refresh run's throughput, and what dashboard users feel while it runs.

Every scenario starts the real runner as cron does (``python analytics_refresh_cron.py``
in a process of its own, settings in its environment) against ``stub_backend.py``, while
a probe thread plays a dashboard user: a cheap read every 25 ms, idle first, then during
the run. ``python bench/refresh_bench.py`` prints the figures, the goals met or missed,
and the markdown table kept in bench/README.md. It takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import bench_db
import psycopg2
import requests
from bench_report import report

import api_key_auth

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
# The runner mints its tokens with it; the stub only checks that one is sent.
SECRET = secrets.token_urlsafe(36)
ENDPOINT = "/api/dashboard/inventory-analytics"
IDLE_SECONDS = 3.0
PROBE_INTERVAL = 0.025


# -- the stub and the probe ----------------------------------------------------------------
class Stub:
    """stub_backend.py in a process of its own, so its CPU never counts as the runner's."""

    def __init__(self, **options):
        self.workers = options.get("workers", 8)
        argv = [sys.executable, str(BENCH / "stub_backend.py")]
        for name, value in options.items():
            if value is not None:
                argv += [f"--{name.replace('_', '-')}", str(value)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        self.url = line.strip().removeprefix("listening on ")

    def stats(self) -> dict:
        return requests.get(f"{self.url}/_stats", timeout=10).json()

    def reset(self) -> None:
        requests.post(f"{self.url}/_reset", timeout=10)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


class Probe(threading.Thread):
    """A dashboard user: one cheap read every PROBE_INTERVAL, its latency recorded."""

    def __init__(self, url: str, client_id: str):
        super().__init__(daemon=True)
        self.url = f"{url}{ENDPOINT}"
        self.params = {"client_id": client_id, "platform": "shopify", "force_refresh": "false"}
        self.samples: list[float] = []
        self.errors = 0
        self.done = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        session = requests.Session()
        while not self.done.is_set():
            started = time.perf_counter()
            try:
                with session.get(self.url, params=self.params, timeout=30) as response:
                    response.content  # noqa: B018
                    ok = response.status_code == 200
            except requests.RequestException:
                ok = False
            elapsed = time.perf_counter() - started
            with self.lock:
                if ok:
                    self.samples.append(elapsed)
                else:
                    self.errors += 1
            self.done.wait(max(0.0, PROBE_INTERVAL - elapsed))

    def take(self) -> list[float]:
        with self.lock:
            samples, self.samples = self.samples, []
        return samples

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=35)


def percentile(samples: list[float], q: int) -> float:
    if len(samples) < 2:
        return samples[0] if samples else 0.0
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


# -- the runner ----------------------------------------------------------------------------
@dataclass
class RunnerResult:
    exit_code: int
    wall: float
    cpu: float
    max_rss_mb: float
    log: list[str] = field(default_factory=list)


def run_runner(env: dict, args: tuple[str, ...] = (), workdir: Path | None = None):
    """Start the cron entry point, wait for it, and return its exit code, wall and CPU."""
    workdir = Path(tempfile.mkdtemp(dir=workdir))
    logs = workdir / "logs"
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("REFRESH_", "LOG_"))},
        "API_SECRET_KEY": SECRET,
        "LOG_DIR": str(logs),
        "REFRESH_TIMEOUT": "60",
        **env,
    }
    started = time.perf_counter()
    # cwd is an empty directory: no stray .env changes the settings under test.
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "analytics_refresh_cron.py"), *args],
        env=full_env,
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    # wait4 gives this one child's own CPU and peak RSS.
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode not in (0, 1, 6):
        print(err, file=sys.stderr)
    # The log rotates past 10 MB: read the rotated files too, oldest first.
    files = sorted(logs.glob("analytics_refresh_cron.log*"), key=lambda p: -_rotation(p))
    lines = [line for f in files for line in f.read_text(encoding="utf-8").splitlines()]
    return RunnerResult(
        proc.returncode,
        wall,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,  # KiB on Linux
        lines,
    )


def _rotation(path: Path) -> int:
    suffix = path.name.rpartition(".log")[2].lstrip(".")
    return int(suffix) if suffix.isdigit() else 0


def limit_changes(lines: list[str]) -> tuple[int, str]:
    """Count the limit's moves in a debug log and sketch its path (first moves)."""
    moves = [re.search(r"Concurrency limit (\d+) -> (\d+)", line) for line in lines]
    moves = [m for m in moves if m]
    path = [moves[0].group(1)] if moves else []
    path += [m.group(2) for m in moves]
    sketch = " ".join(path[:12]) + (" ..." if len(path) > 12 else "")
    return len(moves), sketch


# -- the original design -------------------------------------------------------------------
def sequential_baseline(db_url: str, api_url: str) -> float:
    """The original loop: one client x platform after another, one request at a time."""
    conn = psycopg2.connect(db_url)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT client_id::text, array_agg(platform ORDER BY platform) "
            "FROM client_api_credentials WHERE status = 'connected' GROUP BY client_id"
        )
        clients = cur.fetchall()
    conn.close()
    started = time.perf_counter()
    for client_id, platforms in clients:
        for platform in [*platforms, "all"]:
            token = api_key_auth.mint_client_token(client_id, SECRET)
            response = requests.get(
                f"{api_url}{ENDPOINT}",
                params={"client_id": client_id, "platform": platform, "force_refresh": "true"},
                headers={"Authorization": f"Bearer {token}"},
                timeout=300,
            )
            response.json()
    return time.perf_counter() - started


# -- scenarios -----------------------------------------------------------------------------
@dataclass
class Scenario:
    name: str
    env: dict
    stub: dict = field(default_factory=dict)
    history: str = "warm"  # warm: the reference run's durations; none: a first run ever


def refresh_scenario(
    scenario: Scenario, db_url: str, probe_client: str, workdir: Path, run: int = 0
):
    stub = Stub(**{"workers": 8, "mean": 0.1, "run": run, **scenario.stub})
    probe = Probe(stub.url, probe_client)
    try:
        probe.start()
        time.sleep(IDLE_SECONDS)
        idle = probe.take()
        stub.reset()
        env = {"DATABASE_URL": db_url, "ANALYTICS_API_URL": stub.url, **scenario.env}
        result = run_runner(env, workdir=workdir)
        during = probe.take()
        stats = stub.stats()
    finally:
        probe.stop()
        stub.stop()
    run = bench_db.run_row(db_url, bench_db.last_run_id(db_url))
    changes, path = limit_changes(result.log)
    bound = max(stats["service_sum"] / stub.workers, stats["service_max"])
    mean_service = stats["service_sum"] / max(1, stats["served"])
    return {
        "name": scenario.name,
        "exit": result.exit_code,
        "wall": result.wall,
        "span": stats["span"],
        "bound": bound,
        "span_ratio": stats["span"] / bound,
        "wall_ratio": result.wall / bound,
        "wait_share": stats["queue_wait_mean"] / mean_service,
        "held_share": stats["held_sum"] / max(stats["service_sum"], 1e-9),
        "max_in_flight": stats["max_in_flight"],
        "requests": stats["requests"],
        "shed_share": stats["shed"] / max(1, stats["requests"]),
        "jobs_ok": f"{run['succeeded']}/{run['total']}",
        "all_ok": run["succeeded"] == run["total"],
        "idle_p50": statistics.median(idle),
        "idle_p99": percentile(idle, 99),
        "run_p50": statistics.median(during) if during else 0.0,
        "run_p99": percentile(during, 99),
        "probe_errors": probe.errors,
        "median_job": stats["service_median"],
        "limit_changes": changes,
        "limit_path": path,
    }


def runner_cost(server: str, workdir: Path, jobs: int) -> dict:
    """Runner CPU per job and peak RSS with free service, against a bare pooled GET."""
    db_url = bench_db.create_database(server, "bench_cost")
    try:
        bench_db.seed_clients(db_url, jobs, ("shopify",))
        stub = Stub(workers=8, mean=0)
        try:
            env = {
                "DATABASE_URL": db_url,
                "ANALYTICS_API_URL": stub.url,
                "REFRESH_CONCURRENCY": "8",
                "REFRESH_PLATFORMS": "shopify",
            }
            result = run_runner(env, workdir=workdir)
            # The yardstick varies by 10-20% from one process to the next: take a median.
            bare_cpu = statistics.median(
                float(
                    subprocess.run(
                        [sys.executable, str(BENCH / "bare_get.py"), stub.url + ENDPOINT, "3000"],
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout
                )
                for _ in range(3)
            )
        finally:
            stub.stop()
        run = bench_db.run_row(db_url, bench_db.last_run_id(db_url))
    finally:
        bench_db.drop_database(server, "bench_cost")
    per_job = result.cpu / jobs
    return {
        "jobs": jobs,
        "exit": result.exit_code,
        "jobs_ok": f"{run['succeeded']}/{run['total']}",
        "wall": result.wall,
        "cpu_per_job_ms": per_job * 1000,
        "bare_get_ms": bare_cpu * 1000,
        "cpu_ratio": per_job / bare_cpu,
        "max_rss_mb": result.max_rss_mb,
    }


def plan_at_scale(server: str, workdir: Path, clients: int) -> dict:
    """A dry run over ``clients`` clients with two platforms each (three jobs a client)."""
    db_url = bench_db.create_database(server, "bench_plan")
    try:
        seeded = time.perf_counter()
        bench_db.seed_clients(db_url, clients, ("shopify", "amazon"))
        seed_seconds = time.perf_counter() - seeded
        result = run_runner({"DATABASE_URL": db_url}, ("--dry-run",), workdir=workdir)
        # The log rotates past 10 MB: take the count from the plan's own line.
        processing = [m for line in result.log if (m := re.search(r"= (\d+) refresh jobs", line))]
        planned = int(processing[0].group(1)) if processing else 0
        # The same plan without its 300,000 "DRY RUN - would refresh" lines: what planning
        # itself costs, apart from writing the log.
        quiet = run_runner({"DATABASE_URL": db_url}, ("--dry-run", "-q"), workdir=workdir)
    finally:
        bench_db.drop_database(server, "bench_plan")
    return {
        "clients": clients,
        "jobs": planned,
        "exit": result.exit_code,
        "seed_seconds": seed_seconds,
        "wall": result.wall,
        "max_rss_mb": result.max_rss_mb,
        "quiet_wall": quiet.wall,
        "quiet_max_rss_mb": quiet.max_rss_mb,
    }


# The scenarios' database, and the copies each scenario starts from (bench_db.restore).
DATABASE, WARM, FIRST_EVER = "bench_refresh", "bench_refresh_warm", "bench_refresh_first"

SCENARIOS = [
    # The reference run: its record is the history every warm scenario starts from.
    Scenario("known C=8, fixed 8", {"REFRESH_CONCURRENCY": "8", "REFRESH_ADAPTIVE": "false"}),
    Scenario("known C=8, ceiling 8, adaptive", {"REFRESH_CONCURRENCY": "8"}),
    Scenario("unknown C=8, ceiling 64, adaptive", {"REFRESH_CONCURRENCY": "64"}),
    Scenario("unknown C=8, fixed 64", {"REFRESH_CONCURRENCY": "64", "REFRESH_ADAPTIVE": "false"}),
    Scenario(
        "unknown C=4, ceiling 64, adaptive",
        {"REFRESH_CONCURRENCY": "64"},
        {"workers": 4},
    ),
    Scenario(
        "shedding (503 past queue 2), ceiling 64, adaptive",
        {"REFRESH_CONCURRENCY": "64"},
        {"shed_queue": 2},
    ),
    Scenario(
        "shedding (503 past queue 2), fixed 64",
        {"REFRESH_CONCURRENCY": "64", "REFRESH_ADAPTIVE": "false"},
        {"shed_queue": 2},
    ),
    Scenario(
        "unknown C=8, ceiling 64, adaptive, first run",
        {"REFRESH_CONCURRENCY": "64"},
        history="none",
    ),
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200, help="2 jobs each (400 jobs)")
    parser.add_argument("--cost-jobs", type=int, default=5000)
    parser.add_argument("--plan-clients", type=int, default=100_000)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--only", help="run only the scenarios whose name contains this")
    parser.add_argument("--skip-scale", action="store_true", help="no runner cost, no plan")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--report", type=Path, help="print the tables of a --json file")
    args = parser.parse_args(argv)
    if args.report:
        print(report(json.loads(args.report.read_text())))
        return 0

    workdir = Path(tempfile.mkdtemp(prefix="refresh-bench-"))
    server = bench_db.server_url(workdir)
    results: dict = {"refresh": [], "command": "python bench/refresh_bench.py"}
    db_url = bench_db.create_database(server, DATABASE)
    try:
        ids = bench_db.seed_clients(db_url, args.clients, ("shopify",))
        bench_db.snapshot(server, DATABASE, FIRST_EVER)
        if not args.skip_baseline:
            stub = Stub(workers=8, mean=0.1)
            try:
                results["sequential_wall"] = sequential_baseline(db_url, stub.url)
                results["sequential_service"] = stub.stats()["service_sum"]
            finally:
                stub.stop()
            print(f"sequential baseline: {results['sequential_wall']:.1f}s", flush=True)
        for number, scenario in enumerate(SCENARIOS):
            if number and args.only and args.only not in scenario.name:
                continue
            # Every scenario but the reference starts from the very same database: the
            # reference run's record (warm) or none at all (a first run ever).
            if number:
                start = WARM if scenario.history == "warm" else FIRST_EVER
                bench_db.restore(server, DATABASE, start)
            env = {"LOG_LEVEL": "DEBUG", **scenario.env}
            row = refresh_scenario(
                Scenario(scenario.name, env, scenario.stub), db_url, ids[0], workdir, number
            )
            if not number:
                bench_db.snapshot(server, DATABASE, WARM)
            results["refresh"].append(row)
            print(json.dumps(row), flush=True)
    finally:
        for name in (DATABASE, WARM, FIRST_EVER):
            bench_db.drop_database(server, name)
    if args.skip_scale:
        for row in results["refresh"]:
            print(json.dumps(row))
        return 0
    results["cost"] = runner_cost(server, workdir, args.cost_jobs)
    print(json.dumps(results["cost"]), flush=True)
    results["plan"] = plan_at_scale(server, workdir, args.plan_clients)
    print(json.dumps(results["plan"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print()
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
