"""One run at a time, across hosts: PostgreSQL session-level advisory locks.

The locks live as long as their database session, on a connection of their own that
nothing else uses. A killed run therefore never leaves a stale lock behind: PostgreSQL
drops it with the session. The flip side is that losing that session loses the lock, so
the run's claim (claim.py) checks it every second, and no job starts once it is lost.

Unsharded and sharded runs exclude each other too. An unsharded run holds the global key
exclusively. A sharded run holds the global key shared, so shards run side by side but
never beside an unsharded run; its shard's key exclusively, so a shard runs once; and a
shared "layout" lock on its shard count, so that runs of two layouts (0/2 and 1/4, say,
during a change of COUNT) never cover the same clients at once.
"""

from __future__ import annotations

import hashlib
import threading

import psycopg2
import psycopg2.errors

from . import dbwatch
from .db import boundary, connect
from .errors import first_line
from .settings import Shard

# The longest a check of the lock's session may wait for the database.
CHECK_SECONDS = 5.0
# The lock's statements are instant; one that takes longer means the database stopped
# answering, and the run should know within seconds, not when its deadline comes.
STATEMENT_SECONDS = 5.0
# The first half of the two-key advisory locks that say which shard count is running.
LAYOUT_CLASS = 0x41524653

TRY_SHARED = "SELECT pg_try_advisory_lock_shared(%s)"
TRY_EXCLUSIVE = "SELECT pg_try_advisory_lock(%s)"
TRY_LAYOUT = "SELECT pg_try_advisory_lock_shared(%s, %s)"
# A layout lock of another shard count, held now in this database.
OTHER_LAYOUT_RUNNING = """
    SELECT EXISTS (
        SELECT 1 FROM pg_locks
        WHERE locktype = 'advisory' AND objsubid = 2 AND granted
          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND classid = %s AND objid <> %s
    )
"""


def lock_key(shard: Shard | None) -> int:
    """Return the 64-bit advisory lock key of a run: the global one, or a shard's."""
    name = "analytics-refresh" if shard is None else f"analytics-refresh shard {shard}"
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class RunLock:
    """The advisory locks of one run; ``acquire()`` returns whether this run got them."""

    def __init__(self, url: str, shard: Shard | None = None, deadline=None):
        self.url = url
        self.deadline = deadline
        self.shard = shard
        self.conn = None
        self.backend_pid: int | None = None  # the lock session's server process
        self.silent = False  # the lock was lost because the database stopped answering
        self.also_failed: str | None = None  # why the last ``also`` statement failed
        self._held = False
        self._mutex = threading.Lock()

    def acquire(self) -> bool:
        """Try to take the locks, without waiting; return whether this run holds them."""
        self.release()
        self.conn = connect(
            self.url, application_name="analytics-refresh lock", deadline=self.deadline
        )
        with boundary(self.url), self.conn.cursor() as cur:
            self._held = self._try(cur)
            cur.execute("SELECT pg_backend_pid()")
            self.backend_pid = cur.fetchone()[0]
        if not self._held:
            self.release()
        return self._held

    def _try(self, cur) -> bool:
        def granted(sql: str, *params) -> bool:
            cur.execute(sql, params)
            return bool(cur.fetchone()[0])

        if self.shard is None:
            return granted(TRY_EXCLUSIVE, lock_key(None))
        if not granted(TRY_SHARED, lock_key(None)):
            return False
        if not granted(TRY_LAYOUT, LAYOUT_CLASS, self.shard.count):
            return False
        if granted(OTHER_LAYOUT_RUNNING, LAYOUT_CLASS, self.shard.count):
            return False
        return granted(TRY_EXCLUSIVE, lock_key(self.shard))

    def still_held(self, also: tuple[str, dict] | None = None) -> bool:
        """Ask the database whether the lock's session lives; False once it is gone.

        ``also``, a short statement (the lease's renewal), runs first on the same session;
        if the server refuses or cancels it, ``also_failed`` says why and the lock still
        counts. Bounded by the client too: a session that does not answer within
        CHECK_SECONDS is cut, and its locks are then as good as lost.
        """
        with self._mutex:
            if not self._held or self.conn is None or self.conn.closed:
                self._held = False
                return False
            dbwatch.set_bound(self.conn, CHECK_SECONDS)
            try:
                with self.conn.cursor() as cur:
                    if also is not None:
                        self.also_failed = _refused(cur, *also)
                    cur.execute("SELECT 1")
            except psycopg2.Error as exc:
                self._held = False
                self.silent = isinstance(exc, dbwatch.DatabaseSilent)
                return False
            return True

    def cut(self) -> None:
        """Shut the lock session's socket: its locks end with it, and nothing waits."""
        if self.conn is not None:
            dbwatch.cut(self.conn)
        self._held = False

    def release(self) -> None:
        """Release every lock and close the session; bounded, as a check may be waiting."""
        if not self._mutex.acquire(timeout=CHECK_SECONDS + 1):
            conn = self.conn
            if conn is not None:
                dbwatch.cut(conn)  # the session ends, and the locks with it
            self._held = False
            return
        try:
            if self.conn is not None and not self.conn.closed:
                try:
                    dbwatch.set_bound(self.conn, CHECK_SECONDS)
                    with self.conn.cursor() as cur:
                        cur.execute("SELECT pg_advisory_unlock_all()")
                except psycopg2.Error:
                    pass  # the session is gone, and the locks with it
                self.conn.close()
            self._held = False
        finally:
            self._mutex.release()


def _refused(cur, statement: str, params: dict) -> str | None:
    """Run ``statement``; return why the server refused or cancelled it, or None.

    A lost connection is not a refusal: it propagates, and the lock with it.
    """
    try:
        cur.execute(statement, params)
    except psycopg2.errors.QueryCanceled as exc:
        return first_line(exc)
    except (psycopg2.OperationalError, psycopg2.InterfaceError):
        raise
    except psycopg2.Error as exc:
        return first_line(exc)
    return None
