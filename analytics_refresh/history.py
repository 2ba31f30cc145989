"""The run's record in ``refresh_runs`` and ``refresh_jobs`` (INTERFACE.md section 6).

Every planned job gets a ``not_attempted`` row before the first request, and each row is
updated the moment its job ends. A run killed at any point therefore leaves a true record:
what finished says so, and everything else says ``not_attempted``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg2
import psycopg2.extras

from .db import connect
from .errors import DatabaseError, first_line
from .plan import Job

log = logging.getLogger(__name__)

# Five tries over about 7.5 s ride out a database restart or a failover's switch.
RECONNECT_ATTEMPTS = 5
# What a JSON log line says of a job (the error text is already in its message).
LOGGED_COLUMNS = ("client_id", "platform", "status", "attempts", "http_status", "duration_ms")

INSERT_RUN = """
    INSERT INTO refresh_runs (run_id, trigger, host, shard, pid, status, exit_code, note,
                              finished_at)
    VALUES (%(run_id)s, %(trigger)s, %(host)s, %(shard)s, %(pid)s, %(status)s, %(exit_code)s,
            %(note)s, CASE WHEN %(status)s = 'running' THEN NULL ELSE now() END)
    ON CONFLICT (run_id) DO NOTHING
"""

# Rows left 'running' by a run that died; only a lock holder may call them abandoned. An
# unsharded run holds every lock's ground, so no other run can be alive; a shard's run
# knows its own shard and every other shard count are not running (lock.py).
MARK_ABANDONED = """
    UPDATE refresh_runs SET status = 'abandoned', finished_at = now(),
           note = 'left running by a run that ended without finishing'
    WHERE status = 'running' AND run_id <> %(run_id)s
      AND (%(shard)s = '' OR shard = %(shard)s OR split_part(shard, '/', 2) <> %(count)s)
    RETURNING run_id
"""

INSERT_PLANNED_JOBS = """
    INSERT INTO refresh_jobs (run_id, client_id, platform, status) VALUES %s
"""

FINISH_JOB = """
    UPDATE refresh_jobs
    SET status = %(status)s, attempts = %(attempts)s, http_status = %(http_status)s,
        duration_ms = %(duration_ms)s, platform_count = %(platform_count)s,
        sku_count = %(sku_count)s, error = %(error)s, finished_at = now()
    WHERE run_id = %(run_id)s AND client_id = %(client_id)s AND platform = %(platform)s
"""

FINISH_RUN = """
    UPDATE refresh_runs
    SET status = %(status)s, exit_code = %(exit_code)s, finished_at = now(), note = %(note)s,
        jobs_total = %(total)s, jobs_succeeded = %(succeeded)s, jobs_failed = %(failed)s,
        jobs_not_attempted = %(not_attempted)s, jobs_skipped = %(skipped)s
    WHERE run_id = %(run_id)s
"""

# The newest success of each client x platform, for skip-fresh and longest-first ordering.
LAST_SUCCESSES = """
    SELECT DISTINCT ON (client_id, platform)
           client_id::text, platform, finished_at, duration_ms
    FROM refresh_jobs
    WHERE status = 'succeeded'
    ORDER BY client_id, platform, finished_at DESC
"""


@dataclass(frozen=True)
class JobRecord:
    """How one job ended."""

    job: Job
    status: str  # succeeded | failed | not_attempted | skipped
    attempts: int = 0
    http_status: int | None = None
    duration_ms: int | None = None
    platform_count: int | None = None
    sku_count: int | None = None
    error: str | None = None

    def columns(self) -> dict:
        """Return the record as ``refresh_jobs`` columns (without the run id)."""
        return {
            "client_id": self.job.client_id,
            "platform": self.job.platform,
            "status": self.status,
            "attempts": self.attempts,
            "http_status": self.http_status,
            "duration_ms": self.duration_ms,
            "platform_count": self.platform_count,
            "sku_count": self.sku_count,
            "error": self.error,
        }

    def log_fields(self) -> dict:
        """Return the fields a JSON log line carries for this job."""
        columns = self.columns()
        return {k: columns[k] for k in LOGGED_COLUMNS}


class History:
    """Writes one run's rows on a connection of its own, reconnecting when it drops."""

    def __init__(self, url: str, *, trigger: str, shard: str = ""):
        self.url = url
        self.run_id = str(uuid.uuid4())
        self.trigger = trigger
        self.shard = shard
        self.host = socket.gethostname()
        self._conn = None
        self._mutex = threading.Lock()

    def _execute(self, action: Callable) -> object:
        """Run ``action(cursor)``; on a lost connection reconnect and run it again."""
        with self._mutex:
            for attempt in range(1, RECONNECT_ATTEMPTS + 1):
                try:
                    if self._conn is None or self._conn.closed:
                        self._conn = connect(self.url, application_name="analytics-refresh")
                    with self._conn.cursor() as cur:
                        return action(cur)
                except (psycopg2.OperationalError, psycopg2.InterfaceError, DatabaseError) as exc:
                    # Every statement here is idempotent, so repeating one is safe.
                    if self._conn is not None:
                        self._conn.close()
                    self._conn = None
                    if attempt == RECONNECT_ATTEMPTS:
                        raise
                    log.warning(
                        "History write lost its connection (%s); reconnecting",
                        first_line(exc),
                    )
                    time.sleep(0.5 * 2 ** (attempt - 1))
            return None

    def record_run(self, status: str, *, exit_code: int | None = None, note: str | None = None):
        """Insert this run's row (``running``, or final at once for a skipped run)."""
        params = {
            "run_id": self.run_id,
            "trigger": self.trigger,
            "host": self.host,
            "shard": self.shard,
            "pid": os.getpid(),
            "status": status,
            "exit_code": exit_code,
            "note": note,
        }
        self._execute(lambda cur: cur.execute(INSERT_RUN, params))

    def mark_abandoned(self) -> list[str]:
        """Mark runs left ``running`` by a killed run as ``abandoned``; return their ids."""

        def action(cur):
            count = self.shard.partition("/")[2]
            cur.execute(
                MARK_ABANDONED, {"shard": self.shard, "count": count, "run_id": self.run_id}
            )
            return [str(row[0]) for row in cur.fetchall()]

        return self._execute(action)

    def record_planned(self, jobs: Sequence[Job], records: Sequence[JobRecord] = ()) -> None:
        """Insert a ``not_attempted`` row for every job, then the final rows of ``records``."""
        run_id = self.run_id

        def action(cur):
            psycopg2.extras.execute_values(
                cur,
                INSERT_PLANNED_JOBS + " ON CONFLICT DO NOTHING",
                ((run_id, j.client_id, j.platform, "not_attempted") for j in jobs),
                page_size=1000,
            )

        self._execute(action)
        for record in records:
            self.record_job(record)

    def record_job(self, record: JobRecord) -> None:
        """Write how a job ended (idempotent: it overwrites the job's row)."""
        params = {"run_id": self.run_id, **record.columns()}
        self._execute(lambda cur: cur.execute(FINISH_JOB, params))

    def finish_run(self, status: str, exit_code: int, counts: dict, note: str | None) -> None:
        params = {
            "run_id": self.run_id,
            "status": status,
            "exit_code": exit_code,
            "note": note,
            **counts,
        }
        self._execute(lambda cur: cur.execute(FINISH_RUN, params))

    def last_successes(self) -> dict[tuple[str, str], tuple[float, int | None]]:
        """Return {(client_id, platform): (finished_at epoch, duration_ms)} of past successes."""

        def action(cur):
            cur.execute(LAST_SUCCESSES)
            return {(c, p): (f.timestamp(), d) for c, p, f, d in cur}

        return self._execute(action)

    def close(self) -> None:
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
