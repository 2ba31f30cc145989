"""What runs write, measured on the real runner: rows, log lines and time per run.

The cron entry point runs in a process of its own against a scratch PostgreSQL (the
runner's tables from ``db init``, ``client_api_credentials`` seeded by COPY) and the stub
backend answering at once with an ``expires_at`` a day out. Three runs over the same keys:
the first change-aware run (every key new: a full refresh), a classic run (no change
query: every key again), then a quiet change-aware run after ``changed`` keys' versions
were bumped through ``analytics_refresh_request()``, the way the reference triggers do.
Rows written are PostgreSQL's own counts (``pg_stat_user_tables``: inserted + updated +
deleted rows of the runner's tables), read after the runner's process has exited and
flushed them; log lines are the lines the run added to its log file.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import bench_db
import psycopg2
from refresh_bench import Stub, run_runner

ROOT = Path(__file__).resolve().parent.parent
CHANGE_FILE = str(ROOT / "dashboard_api" / "change_keys.sql")
TABLES = ("refresh_runs", "refresh_jobs", "refresh_state")
WRITES = """
    SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint
    FROM pg_stat_user_tables WHERE relname = ANY(%s)
"""


@dataclass(frozen=True)
class RunCost:
    """One run as measured."""

    jobs: int  # refreshes it made
    rows: int  # rows it wrote to the runner's tables
    log_lines: int
    seconds: float  # the process's wall time
    exit_code: int


@dataclass(frozen=True)
class Records:
    """The three measured runs, and the cost model they give: per run plus per refresh."""

    keys: int
    full: RunCost
    classic: RunCost
    quiet: RunCost
    changed: int

    def rows_per_day(self, runs: list[tuple[float, float, int]], scale: float = 1.0) -> float:
        """Rows a day of runs would write: each run's constant plus its refreshes' rows, the
        refreshes of each run multiplied by ``scale`` (more clients, the same traffic)."""
        per_job, fixed = self._line(lambda c: c.rows)
        return sum(fixed + per_job * jobs * scale for *_, jobs in runs)

    def lines_per_day(self, runs: list[tuple[float, float, int]], scale: float = 1.0) -> float:
        per_job, fixed = self._line(lambda c: c.log_lines)
        return sum(fixed + per_job * jobs * scale for *_, jobs in runs)

    def _line(self, value) -> tuple[float, float]:
        """The straight line through the quiet run and the full classic run."""
        slope = (value(self.classic) - value(self.quiet)) / (self.classic.jobs - self.quiet.jobs)
        return slope, value(self.quiet) - slope * self.quiet.jobs


def _writes(url: str) -> int:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_stat_clear_snapshot()")
            cur.execute(WRITES, (list(TABLES),))
            return cur.fetchone()[0]
    finally:
        conn.close()


def _jobs(url: str) -> int:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT jobs_succeeded FROM refresh_runs ORDER BY started_at DESC LIMIT 1")
            return cur.fetchone()[0]
    finally:
        conn.close()


def _run(url: str, env: dict, workdir: Path) -> RunCost:
    before = _writes(url)
    result = run_runner(env, workdir=workdir)
    time.sleep(0.5)  # the server publishes a finished backend's counts moments after it exits
    return RunCost(
        _jobs(url), _writes(url) - before, len(result.log), result.wall, result.exit_code
    )


def _bump(url: str, ids: list[str], count: int, seed: int) -> None:
    rng = random.Random(seed)
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for client_id in rng.sample(ids, count):
                cur.execute(
                    "SELECT analytics_refresh_request(%s, %s)",
                    (client_id, rng.choice(("shopify", "amazon"))),
                )
    finally:
        conn.close()


def measure(clients: int, changed: int, workdir: Path, seed: int = 7) -> Records:
    """Seed ``clients`` x (shopify, amazon), make the three runs, return what they cost."""
    server = bench_db.server_url(workdir)
    url = bench_db.create_database(server, "change_records")
    ids = bench_db.seed_clients(url, clients, ("shopify", "amazon"))
    stub = Stub(workers=64, mean=0.0, jitter=0.0, ttl=86400, body_kb=1)
    try:
        aware = {
            "DATABASE_URL": url,
            "ANALYTICS_API_URL": stub.url,
            "REFRESH_CHANGE_SQL_FILE": CHANGE_FILE,
            "REFRESH_INTERVAL_MINUTES": "10",
            "REFRESH_CONCURRENCY": "32",
            "REFRESH_ADAPTIVE": "false",
        }
        classic = {k: v for k, v in aware.items() if k != "REFRESH_CHANGE_SQL_FILE"}
        full = _run(url, aware, workdir)
        whole = _run(url, classic, workdir)
        _run(url, aware, workdir)  # stores every key after the classic run
        _bump(url, ids, changed, seed)
        quiet = _run(url, aware, workdir)
    finally:
        stub.stop()
        bench_db.drop_database(server, "change_records")
    return Records(clients * 3, full, whole, quiet, changed)
