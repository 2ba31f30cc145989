"""The run's record: its ``refresh_runs`` row, its jobs' rows and their keys' state.

Every planned job gets a ``not_attempted`` row before the first request. A finished job is
queued and written within a fraction of a second, together with its key's
``refresh_state`` row in one statement, in batches so that the writes cost little per job;
``flush()`` writes what is queued, and every way out of a run flushes. A run killed at any
point therefore leaves a true record: what was written says so, the rest ``not_attempted``.
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
from datetime import datetime

import psycopg2
import psycopg2.errors
import psycopg2.extras

from . import db
from . import statements as sql
from .clock import Deadline
from .errors import DatabaseError, RefreshError, first_line
from .plan import Job
from .text import int4, plain

log = logging.getLogger(__name__)

# Five tries over about 7.5 s ride out a database restart or a failover's switch.
RECONNECT_ATTEMPTS = 5
# After the deadline the run still records how it ended, with this long for each write.
FINAL_WRITE_SECONDS = 5.0
MAX_ERROR_TEXT = 1000
BATCH_ROWS = 500
# What a JSON log line says of a job (the error text is already in its message).
LOGGED_COLUMNS = ("client_id", "platform", "status", "attempts", "http_status", "duration_ms")


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
    change_key: str | None = None
    expires_at: datetime | None = None  # until when the refreshed copy holds, if declared
    change_at: datetime | None = None  # when the change this refresh covers was first seen
    # Why earlier attempts failed ("HTTP 503", ...), for the log line; not stored.
    retried_after: tuple[str, ...] = ()

    def columns(self) -> dict:
        """Return the record as ``refresh_jobs`` columns: any text made plain, any number
        that does not fit dropped, so whatever the API sent, the row can be written."""
        return {
            "client_id": self.job.client_id,
            "platform": self.job.platform,
            "status": self.status,
            "attempts": int4(self.attempts) or 0,
            "http_status": int4(self.http_status),
            "duration_ms": int4(self.duration_ms),
            "platform_count": int4(self.platform_count),
            "sku_count": int4(self.sku_count),
            "error": None if self.error is None else plain(self.error, MAX_ERROR_TEXT),
        }

    def row(self, run_id: str) -> tuple:
        c = self.columns()
        key = None if self.change_key is None else plain(self.change_key, MAX_ERROR_TEXT)
        return (
            run_id,
            c["client_id"],
            c["platform"],
            c["status"],
            c["attempts"],
            c["http_status"],
            c["duration_ms"],
            c["platform_count"],
            c["sku_count"],
            c["error"],
            key,
            self.expires_at,
            self.change_at,
        )

    def log_fields(self) -> dict:
        """Return the fields a JSON log line carries for this job."""
        columns = self.columns()
        return {k: columns[k] for k in LOGGED_COLUMNS}


@dataclass(frozen=True)
class OtherRun:
    """A run row left ``running`` by another process, and how fresh its lease is."""

    run_id: str
    host: str
    pid: int | None
    lease_age: float
    machine: str | None = None  # its boot and pid namespace (lease.machine_id)

    def __str__(self) -> str:
        return f"run {self.run_id} on {self.host} (pid {self.pid})"


class History:
    """Writes one run's rows on a connection of its own, reconnecting when it drops."""

    def __init__(
        self, url: str, *, trigger: str, shard: str = "", deadline: Deadline, machine: str = ""
    ):
        self.url = url
        self.run_id = str(uuid.uuid4())
        self.trigger = trigger
        self.shard = shard
        self.deadline = deadline
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.machine = machine
        self.failures = 0  # job records that could not be written
        self._conn = None
        self._timeout = 0.0
        self._mutex = threading.Lock()
        self._pending: list[JobRecord] = []
        self._pending_mutex = threading.Lock()

    # -- the connection -------------------------------------------------------------------
    def _execute(self, action: Callable) -> object:
        """Run ``action(cursor)``; on a lost connection reconnect and run it again."""
        with self._mutex:
            for attempt in range(1, RECONNECT_ATTEMPTS + 1):
                try:
                    if self._conn is None or self._conn.closed:
                        self._conn = db.connect(
                            self.url, application_name="analytics-refresh", deadline=self.deadline
                        )
                        self._timeout = db.STATEMENT_SECONDS
                    self._bound()
                    with self._conn.cursor() as cur:
                        return action(cur)
                except (psycopg2.OperationalError, psycopg2.InterfaceError, DatabaseError) as exc:
                    if isinstance(exc, psycopg2.errors.QueryCanceled):
                        raise db.translate(exc, self.url, self.deadline) from exc
                    # Every statement here is idempotent, so repeating one is safe.
                    if self._conn is not None:
                        self._conn.close()
                    self._conn = None
                    if attempt == RECONNECT_ATTEMPTS:
                        if isinstance(exc, RefreshError):
                            raise
                        raise db.translate(exc, self.url) from exc
                    log.warning(
                        "History write lost its connection (%s); reconnecting",
                        first_line(exc),
                    )
                    time.sleep(0.5 * 2 ** (attempt - 1))
                except psycopg2.Error as exc:
                    raise db.translate(exc, self.url, self.deadline) from exc
            return None

    def _bound(self) -> None:
        """Keep each write within what the deadline leaves; after it, a short grace for the
        writes that record how the run ended."""
        remaining = self.deadline.remaining()
        wanted = float(round(min(db.STATEMENT_SECONDS, remaining)))
        if wanted < 1:
            wanted = FINAL_WRITE_SECONDS
        if wanted != self._timeout:
            db.bound(self._conn, wanted)
            self._timeout = wanted

    # -- the run row ----------------------------------------------------------------------
    def record_run(self, status: str, *, exit_code: int | None = None, note: str | None = None):
        """Insert this run's row (``running``, or final at once for a skipped run)."""
        params = {
            "run_id": self.run_id,
            "trigger": self.trigger,
            "host": self.host,
            "shard": self.shard,
            "pid": self.pid,
            "machine": self.machine,
            "status": status,
            "exit_code": exit_code,
            "note": note,
        }
        self._execute(lambda cur: cur.execute(sql.INSERT_RUN, params))

    def renew_lease(self) -> None:
        self._execute(lambda cur: cur.execute(sql.RENEW_LEASE, {"run_id": self.run_id}))

    def running_elsewhere(self) -> list[OtherRun]:
        """Return the rows left ``running`` that no run holding a lock now can own."""
        count = self.shard.partition("/")[2]
        params = {"shard": self.shard, "count": count, "run_id": self.run_id}

        def action(cur):
            cur.execute(sql.RUNNING_ELSEWHERE, params)
            return [OtherRun(*row) for row in cur.fetchall()]

        return self._execute(action)

    def mark_abandoned(self, other: OtherRun, note: str) -> None:
        params = {"run_id": other.run_id, "note": note}
        self._execute(lambda cur: cur.execute(sql.MARK_ABANDONED, params))

    def finish_run(
        self,
        status: str,
        exit_code: int,
        counts: dict,
        note: str | None,
        concurrency_limit: int | None = None,
    ) -> None:
        params = {
            "run_id": self.run_id,
            "status": status,
            "exit_code": exit_code,
            "note": None if note is None else plain(note, MAX_ERROR_TEXT),
            "concurrency_limit": concurrency_limit,
            **counts,
        }
        self._execute(lambda cur: cur.execute(sql.FINISH_RUN, params))

    def learned_limit(self) -> int | None:
        def action(cur):
            cur.execute(sql.LEARNED_LIMIT, (self.shard,))
            row = cur.fetchone()
            return row[0] if row else None

        return self._execute(action)

    # -- the jobs' rows -------------------------------------------------------------------
    def record_planned(self, jobs: Sequence[Job], records: Sequence[JobRecord] = ()) -> None:
        """Insert a ``not_attempted`` row for every job, then the final rows of ``records``."""
        run_id = self.run_id

        def action(cur):
            psycopg2.extras.execute_values(
                cur,
                sql.INSERT_PLANNED_JOBS,
                ((run_id, j.client_id, j.platform, "not_attempted") for j in jobs),
                page_size=1000,
            )

        self._execute(action)
        if records:
            self._write(list(records))

    def record_job(self, record: JobRecord) -> None:
        """Queue how a job ended; the next ``flush()`` (a fraction of a second) writes it."""
        with self._pending_mutex:
            self._pending.append(record)

    def flush(self, *, final: bool = False) -> int:
        """Write every queued job record; return how many could not be written.

        A batch the database refuses is written row by row, so one bad row costs only
        itself. A batch that cannot reach the database goes back to the queue for the next
        flush; only the ``final`` flush gives up on it and counts it as lost.
        """
        with self._pending_mutex:
            batch, self._pending = self._pending, []
        if not batch:
            return 0
        # One row per key: a job recorded twice would make the statement refuse the batch.
        batch = list({(r.job.client_id, r.job.platform): r for r in batch}.values())
        try:
            self._write(batch)
            return 0
        except RefreshError as exc:
            if _unreachable(exc) and not final:
                with self._pending_mutex:
                    self._pending[:0] = batch
                return 0
            if _unreachable(exc):
                return self._lost(batch, exc)
        lost = [r for r in batch if not self._write_one(r)]
        return self._lost(lost, None) if lost else 0

    def _write_one(self, record: JobRecord) -> bool:
        try:
            self._write([record])
        except RefreshError as exc:
            log.error("❌ Could not record %s in refresh_jobs: %s", record.job, first_line(exc))
            return False
        return True

    def _lost(self, records: list[JobRecord], exc: RefreshError | None) -> int:
        self.failures += len(records)
        if exc is not None:
            log.error(
                "❌ Could not record %d finished jobs in refresh_jobs: %s",
                len(records),
                first_line(exc),
            )
        return len(records)

    def _write(self, records: list[JobRecord]) -> None:
        rows = [r.row(self.run_id) for r in records]

        def action(cur):
            psycopg2.extras.execute_values(
                cur, sql.FINISH_JOBS, rows, template=sql.FINISH_JOBS_TEMPLATE, page_size=BATCH_ROWS
            )

        self._execute(action)

    def close(self) -> None:
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _unreachable(exc: BaseException) -> bool:
    """Whether a write failed for want of a connection (worth trying again later)."""
    cause = exc.__cause__
    return isinstance(cause, psycopg2.OperationalError | psycopg2.InterfaceError) and not (
        isinstance(cause, psycopg2.errors.QueryCanceled)
    )
