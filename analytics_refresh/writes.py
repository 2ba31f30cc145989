"""Writing the run's record: its ``refresh_runs`` row and its jobs' rows (records.py reads).

One connection of the run's own, reconnected when it drops. Every call is bounded twice:
by ``statement_timeout`` on the server, and by the client (dbwatch.py), since a server that
stopped answering enforces nothing. After the deadline the writes that record how the run
ended get a short grace each; once ``give_up_at`` has passed, no write waits or retries.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence

import psycopg2
import psycopg2.errors
import psycopg2.extras

from . import db, dbwatch
from . import statements as sql
from .clock import Deadline
from .errors import DatabaseError, RefreshError, first_line
from .outcome import STORED_TEXT_CHARS, Ending, JobRecord, OtherRun
from .plan import Job
from .text import plain

log = logging.getLogger(__name__)

# Five tries over about 7.5 s ride out a database restart or a failover's switch.
RECONNECT_ATTEMPTS = 5
# After the deadline the run still records how it ended, with this long for each write.
FINAL_WRITE_SECONDS = 5.0
BATCH_ROWS = 500
STOPPED_ANSWERING = "the database stopped answering"


class RunWriter:
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
        self.give_up_at: float | None = None  # monotonic: past it, no write waits or retries
        self._conn = None
        self._timeout = 0.0
        self._mutex = threading.Lock()

    # -- the connection -------------------------------------------------------------------
    def _execute(self, action: Callable) -> object:
        """Run ``action(cursor)``; on a lost connection reconnect and run it again."""
        if not self._mutex.acquire(timeout=max(0.0, self._left(db.STATEMENT_SECONDS * 2))):
            raise DatabaseError(f"{STOPPED_ANSWERING}: an earlier write is still waiting")
        try:
            for attempt in range(1, RECONNECT_ATTEMPTS + 1):
                try:
                    return self._once(action)
                except (psycopg2.OperationalError, psycopg2.InterfaceError, DatabaseError) as exc:
                    if isinstance(exc, psycopg2.errors.QueryCanceled):
                        raise db.translate(exc, self.url, self.deadline) from exc
                    if isinstance(exc, db.DatabaseStoppedAnswering | dbwatch.DatabaseSilent):
                        # Reconnecting to a server that stopped answering costs seconds.
                        self._drop()
                        if isinstance(exc, RefreshError):
                            raise
                        raise db.translate(exc, self.url) from exc
                    # Every statement here is idempotent, so repeating one is safe.
                    self._drop()
                    if isinstance(exc, db.DatabaseStoppedAnswering):
                        raise  # found silent moments ago: retrying would only wait
                    pause = 0.5 * 2 ** (attempt - 1)
                    if attempt == RECONNECT_ATTEMPTS or self._left(pause) < pause:
                        if isinstance(exc, RefreshError):
                            raise
                        raise db.translate(exc, self.url) from exc
                    log.warning(
                        "Run record write lost its connection (%s); reconnecting", first_line(exc)
                    )
                    time.sleep(pause)
                except psycopg2.Error as exc:
                    raise db.translate(exc, self.url, self.deadline) from exc
            return None
        finally:
            self._mutex.release()

    def _once(self, action: Callable) -> object:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
            self._timeout = db.STATEMENT_SECONDS
        self._bound()
        try:
            with self._conn.cursor() as cur:
                return action(cur)
        except dbwatch.DatabaseSilent as exc:
            raise db.DatabaseStoppedAnswering(
                f"{STOPPED_ANSWERING}: no answer in {self._timeout:g}s", hint=db.SILENT_HINT
            ) from exc

    def _connect(self):
        if self.give_up_at is None:
            return db.connect(
                self.url, application_name="analytics-refresh", deadline=self.deadline
            )
        left = self._left(db.CONNECT_TIMEOUT_SECONDS)
        if left < 1:
            raise DatabaseError(f"{STOPPED_ANSWERING}: no time left to reconnect")
        try:
            return db.connect(
                self.url,
                application_name="analytics-refresh",
                deadline=Deadline(left),
                silence=db.silence_of(self.deadline),
            )
        except db.DeadlineReached as exc:
            raise DatabaseError(f"{STOPPED_ANSWERING}: {exc}") from exc

    def _left(self, wanted: float) -> float:
        """Return how long a wait may be, within ``give_up_at``."""
        if self.give_up_at is None:
            return wanted
        return min(wanted, self.give_up_at - time.monotonic())

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def _bound(self) -> None:
        """Keep each write within what the deadline leaves; after it, a short grace for the
        writes that record how the run ended."""
        remaining = self.deadline.remaining()
        wanted = float(round(min(db.STATEMENT_SECONDS, remaining)))
        if wanted < 1:
            wanted = FINAL_WRITE_SECONDS
        wanted = max(1.0, float(round(self._left(wanted))))
        if wanted != self._timeout:
            db.bound(self._conn, wanted)
            self._timeout = wanted

    # -- the run row ----------------------------------------------------------------------
    def insert_run(
        self,
        status: str,
        *,
        ending: Ending | None = None,
        lease_seconds: float | None = None,
        lock_pid: int | None = None,
    ) -> None:
        """Insert this run's row: ``running`` with its lease, or final at once (``ending``)."""
        params = {
            "run_id": self.run_id,
            "trigger": self.trigger,
            "host": self.host,
            "shard": self.shard,
            "pid": self.pid,
            "machine": self.machine,
            "status": status if ending is None else ending.status,
            "exit_code": None if ending is None else ending.exit_code,
            "note": None if ending is None or ending.note is None else _text(ending.note),
            "lease_seconds": lease_seconds,
            "lock_pid": lock_pid,
        }
        self._execute(lambda cur: cur.execute(sql.INSERT_RUN, params))

    def running_elsewhere(self, query: str = sql.RUNNING_ELSEWHERE) -> list[OtherRun]:
        """Return the rows left ``running`` that no run holding a lock now can own."""
        count = self.shard.partition("/")[2]
        params = {"shard": self.shard, "count": count, "run_id": self.run_id}

        def action(cur):
            cur.execute(query, params)
            return [OtherRun(*row) for row in cur.fetchall()]

        return self._execute(action)

    def mark_abandoned(self, other: OtherRun, note: str) -> None:
        params = {"run_id": other.run_id, "note": note}
        self._execute(lambda cur: cur.execute(sql.MARK_ABANDONED, params))

    def finish_run(
        self, ending: Ending, counts: dict, concurrency_limit: int | None = None
    ) -> None:
        params = {
            "run_id": self.run_id,
            "status": ending.status,
            "exit_code": ending.exit_code,
            "note": None if ending.note is None else _text(ending.note),
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

    def run(self, statement: str, params=()) -> None:
        """Run one statement of the run's own that returns nothing."""
        self._execute(lambda cur: cur.execute(statement, params))

    def query(self, statement: str, params=()) -> list[tuple]:
        """Run one read of the run's own (the claim's look at the lock's holders)."""

        def action(cur):
            cur.execute(statement, params)
            return cur.fetchall()

        return self._execute(action)

    # -- the jobs' rows -------------------------------------------------------------------
    def insert_planned(self, jobs: Sequence[Job]) -> None:
        """Insert a ``not_attempted`` row for every planned job."""
        run_id = self.run_id

        def action(cur):
            psycopg2.extras.execute_values(
                cur,
                sql.INSERT_PLANNED_JOBS,
                ((run_id, j.client_id, j.platform, "not_attempted") for j in jobs),
                page_size=1000,
            )

        self._execute(action)

    def write_jobs(self, records: Sequence[JobRecord]) -> None:
        """Write finished jobs' rows and their keys' state, in one statement."""
        rows = [r.row(self.run_id) for r in records]

        def action(cur):
            psycopg2.extras.execute_values(
                cur, sql.FINISH_JOBS, rows, template=sql.FINISH_JOBS_TEMPLATE, page_size=BATCH_ROWS
            )

        self._execute(action)

    def cut(self) -> None:
        """Shut the connection's socket: a write waiting on a silent server fails now."""
        conn = self._conn
        if conn is not None:
            db.silence_of(self.deadline).found()
            dbwatch.cut(conn)

    def close(self) -> None:
        if self._mutex.acquire(timeout=FINAL_WRITE_SECONDS):
            try:
                self._drop()
            finally:
                self._mutex.release()
        else:
            self.cut()


def _text(note: str) -> str:
    return plain(note, STORED_TEXT_CHARS)


def unreachable(exc: BaseException) -> bool:
    """Whether a write failed for want of a connection (worth trying again later)."""
    cause = exc.__cause__
    if isinstance(exc, DatabaseError) and str(exc).startswith(STOPPED_ANSWERING):
        return True
    return isinstance(cause, psycopg2.OperationalError | psycopg2.InterfaceError) and not (
        isinstance(cause, psycopg2.errors.QueryCanceled)
    )
