"""A synthetic refresh history, built in PostgreSQL with ``generate_series``.

The history bench needs weeks of runs for thousands of clients; running the runner that
long is out of the question, so the rows are made in the database, in the shape a real
runner leaves them: one ``refresh_runs`` row every 24/``runs_per_day`` hours, the newest
having finished 10 minutes ago, and one ``refresh_jobs`` row per run x client x platform
(each client has ``shopify`` and ``amazon`` connected, so three jobs). The rows of a run
are inserted together, run after run, so the heap is in time order as a runner writes it.
The tables stay logged, as in production; only ``synchronous_commit`` is off for the load.

About 0.5% of the jobs fail at random, and the ``amazon`` job of every thousandth client
(starting with the first) fails in the last three runs, so ``status`` has failure streaks
to show. ``refresh_state`` is then filled by ``analytics-refresh db init``: its upgrade
step fills the state from the history while the table is empty, as on an install that
upgrades to the release with the state table.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import psycopg2.extensions
from bench_db import empty_database

CLI = Path(sys.executable).parent / "analytics-refresh"
HOST = "synthetic-history"  # the host of every synthetic run; the bench's own runs differ
RUN_MINUTES = 20
PLATFORMS = ("shopify", "amazon")

SEED_CREDENTIALS = """
    INSERT INTO client_api_credentials (client_id, platform, status)
    SELECT md5('client:' || i)::uuid, p.platform, 'connected'
    FROM generate_series(1, %(clients)s) AS i
    CROSS JOIN unnest(%(platforms)s::text[]) AS p(platform)
"""
# The keys once, with what stays the same from run to run (a job's typical duration, its
# SKU count), so each run's INSERT only does arithmetic.
CREATE_KEYS = """
    CREATE TEMP TABLE bench_keys AS
    SELECT i, p.n AS p, p.platform, md5('client:' || i)::uuid AS client_id,
           60 + (i * 7919 + p.n * 104729) %% 1400 AS base_ms,
           1 + (i * 13 + p.n) %% 500 AS skus
    FROM generate_series(1, %(clients)s) AS i
    CROSS JOIN (VALUES (1, 'shopify'), (2, 'amazon'), (3, 'all')) AS p(n, platform)
"""
CREATE_LAST = """
    CREATE TEMP TABLE bench_last (
        client_id uuid, platform text, at timestamptz, PRIMARY KEY (client_id, platform))
"""
INSERT_RUNS = """
    INSERT INTO refresh_runs (run_id, trigger, host, shard, pid, started_at, finished_at,
                              heartbeat_at, status, exit_code, concurrency_limit)
    SELECT md5('run:' || n)::uuid, 'cron', %(host)s, '', 1000 + n, s.at,
           s.at + make_interval(mins => %(run_minutes)s, secs => 1),
           s.at + make_interval(mins => %(run_minutes)s, secs => 1),
           'succeeded', 0, 8
    FROM generate_series(1, %(runs)s) AS n
    CROSS JOIN LATERAL (
        SELECT %(last_start)s::timestamptz - (%(runs)s - n) * %(every)s * interval '1 hour'
    ) AS s(at)
"""
# One run's jobs, and the run's counts from the rows just inserted.
INSERT_JOBS = """
    WITH jobs AS (
        INSERT INTO refresh_jobs (run_id, client_id, platform, status, attempts, http_status,
                                  duration_ms, platform_count, sku_count, error, finished_at,
                                  prev_success_at)
        SELECT md5('run:' || %(n)s)::uuid, k.client_id, k.platform,
               CASE WHEN f.failed THEN 'failed' ELSE 'succeeded' END,
               CASE WHEN f.failed THEN 3 ELSE 1 END,
               CASE WHEN f.failed THEN 500 ELSE 200 END,
               k.base_ms + (k.i * 3 + %(n)s * 7) %% 40,
               CASE WHEN f.failed THEN NULL WHEN k.platform = 'all' THEN 2 ELSE 1 END,
               CASE WHEN f.failed THEN NULL ELSE k.skus END,
               CASE WHEN f.failed THEN 'HTTP 500 after 3 attempts' END,
               %(started)s::timestamptz
                   + make_interval(secs => (k.i * 3 + k.p) %% (%(run_minutes)s * 60)),
               -- As a runner writes it: the key's success before this one (none: -infinity).
               CASE WHEN NOT f.failed THEN coalesce(l.at, '-infinity') END
        FROM bench_keys AS k
        LEFT JOIN bench_last AS l ON l.client_id = k.client_id AND l.platform = k.platform
        CROSS JOIN LATERAL (
            SELECT (k.i * 31 + %(n)s * 17 + k.p * 7) %% 197 = 0
                   OR (k.i %% 1000 = 1 AND k.p = 2 AND %(n)s > %(runs)s - 3)
        ) AS f(failed)
        RETURNING client_id, platform, status, finished_at
    ), last AS (
        INSERT INTO bench_last AS l (client_id, platform, at)
        SELECT client_id, platform, finished_at FROM jobs WHERE status = 'succeeded'
        ON CONFLICT (client_id, platform) DO UPDATE SET at = excluded.at
    )
    UPDATE refresh_runs
    SET jobs_total = c.total, jobs_succeeded = c.total - c.failed, jobs_failed = c.failed,
        status = CASE WHEN c.failed > 0 THEN 'partial' ELSE 'succeeded' END,
        exit_code = CASE WHEN c.failed > 0 THEN 1 ELSE 0 END
    FROM (SELECT count(*) AS total, count(*) FILTER (WHERE status = 'failed') AS failed
          FROM jobs) AS c
    WHERE run_id = md5('run:' || %(n)s)::uuid
"""
RUN_STARTS = "SELECT started_at FROM refresh_runs WHERE host = %s ORDER BY started_at"
STATE_SUMMARY = """
    SELECT count(*), count(*) FILTER (WHERE consecutive_failures >= 3) FROM refresh_state
"""
HISTORY_ROWS = "SELECT (SELECT count(*) FROM refresh_jobs), (SELECT count(*) FROM refresh_runs)"
SIZES = """
    SELECT pg_total_relation_size('refresh_jobs') + pg_total_relation_size('refresh_runs'),
           pg_total_relation_size('refresh_state')
"""
# Equal before and after a prune when the prune left every state row as it was.
STATE_CHECKSUM = """
    SELECT count(*), md5(coalesce(string_agg(s::text, '|' ORDER BY client_id, platform), ''))
    FROM refresh_state AS s
"""


@dataclass
class Dataset:
    """One scratch database and what was built in it."""

    label: str
    name: str
    url: str
    clients: int
    days: int
    runs: int = 0
    job_rows: int = 0
    build_seconds: float = 0.0
    fill_seconds: float = 0.0
    state_rows: int = 0
    streak_keys: int = 0
    sizes: dict = field(default_factory=dict)

    @property
    def keys(self) -> int:
        return self.clients * (len(PLATFORMS) + 1)


def connect(url: str):
    conn = psycopg2.connect(url)
    conn.autocommit = True
    return conn


def cli(url: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``analytics-refresh ARGS`` against ``url``; raise with its stderr on failure."""
    with tempfile.TemporaryDirectory() as empty:  # no .env of the checkout's
        done = subprocess.run(
            [str(CLI), *args],
            env={**os.environ, **(env or {}), "DATABASE_URL": url},
            cwd=empty,
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(
            f"analytics-refresh {' '.join(args)}: exit {done.returncode}\n{done.stderr[-2000:]}"
        )
    return done


def server_version(server: str) -> str:
    conn = connect(server)
    with conn.cursor() as cur:
        cur.execute("SHOW server_version")
        (version,) = cur.fetchone()
    conn.close()
    return version


def build(
    server: str,
    label: str,
    name: str,
    *,
    clients: int,
    days: int,
    runs_per_day: int,
    env: dict,
    progress=print,
) -> Dataset:
    """Create database ``name`` with ``clients`` connected clients and ``days`` of history."""
    started = time.perf_counter()
    url = empty_database(server, name)
    ds = Dataset(label, name, url, clients, days, runs=days * runs_per_day)
    cli(url, "db", "init", "--with-api-schema", env=env)
    conn = connect(url)
    with conn.cursor() as cur:
        cur.execute("SET synchronous_commit = off")
        cur.execute(SEED_CREDENTIALS, {"clients": clients, "platforms": list(PLATFORMS)})
        if ds.runs:
            cur.execute(CREATE_KEYS, {"clients": clients})
            cur.execute(CREATE_LAST)
            cur.execute(
                INSERT_RUNS,
                {
                    "host": HOST,
                    "runs": ds.runs,
                    "run_minutes": RUN_MINUTES,
                    "every": 24 / runs_per_day,
                    "last_start": _last_start(conn),
                },
            )
            cur.execute(RUN_STARTS, (HOST,))
            starts = [row[0] for row in cur.fetchall()]
            for n, at in enumerate(starts, start=1):
                cur.execute(
                    INSERT_JOBS,
                    {"n": n, "started": at, "runs": ds.runs, "run_minutes": RUN_MINUTES},
                )
                if n % max(1, ds.runs // 6) == 0 or n == ds.runs:
                    progress(f"  {label}: {n}/{ds.runs} runs, {time.perf_counter() - started:.0f}s")
            cur.execute("DROP TABLE bench_keys, bench_last")
        cur.execute("VACUUM ANALYZE client_api_credentials, refresh_runs, refresh_jobs")
        ds.job_rows = _history_rows(cur)[0]
    ds.build_seconds = time.perf_counter() - started
    # The upgrade step of `db init` fills refresh_state from the history (it is empty).
    fill_started = time.perf_counter()
    cli(url, "db", "init", env=env)
    ds.fill_seconds = time.perf_counter() - fill_started
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE refresh_state")
        cur.execute(STATE_SUMMARY)
        ds.state_rows, ds.streak_keys = cur.fetchone()
    conn.close()
    if ds.runs and ds.state_rows != ds.keys:
        raise RuntimeError(
            f"{label}: refresh_state has {ds.state_rows} rows for {ds.keys} keys with history"
        )
    return ds


def _last_start(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT now() - make_interval(mins => %s + 10)", (RUN_MINUTES,))
        return cur.fetchone()[0]


def _history_rows(cur) -> tuple[int, int]:
    cur.execute(HISTORY_ROWS)
    return cur.fetchone()


def sizes(url: str) -> dict:
    """Return the history's and the state's size in bytes, their rows, the state checksum."""
    conn = connect(url)
    with conn.cursor() as cur:
        cur.execute(SIZES)
        history_bytes, state_bytes = cur.fetchone()
        job_rows, run_rows = _history_rows(cur)
        cur.execute(STATE_CHECKSUM)
        state_rows, checksum = cur.fetchone()
    conn.close()
    return {
        "history_bytes": history_bytes,
        "state_bytes": state_bytes,
        "job_rows": job_rows,
        "run_rows": run_rows,
        "state_rows": state_rows,
        "state_checksum": checksum,
    }


def vacuum(url: str, *, full: bool = False) -> None:
    conn = connect(url)
    with conn.cursor() as cur:
        cur.execute(f"VACUUM {'FULL ' if full else ''}ANALYZE refresh_runs, refresh_jobs")
    conn.close()


def forget_bench_runs(url: str, *, clear_state: bool) -> None:
    """Delete the runs the bench itself started (and their jobs); optionally the state too.

    An empty history must stay empty from one start-up measurement to the next.
    """
    conn = connect(url)
    with conn.cursor() as cur:
        cur.execute("DELETE FROM refresh_runs WHERE host <> %s", (HOST,))
        if clear_state:
            cur.execute("DELETE FROM refresh_state")
    conn.close()
