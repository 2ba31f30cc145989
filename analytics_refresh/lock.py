"""One run at a time, across hosts: a PostgreSQL session-level advisory lock.

The lock lives as long as its database session, on a connection of its own that nothing
else uses. A killed run therefore never leaves a stale lock behind: PostgreSQL drops it
with the session. The flip side is that losing that session loses the lock, so the runner
checks it before starting each job.
"""

from __future__ import annotations

import hashlib
import threading
import time

import psycopg2

from .db import connect
from .settings import Shard

CHECK_INTERVAL_SECONDS = 1.0


def lock_key(shard: Shard | None) -> int:
    """Return the 64-bit advisory lock key of a run (each shard has its own)."""
    name = "analytics-refresh" if shard is None else f"analytics-refresh shard {shard}"
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class RunLock:
    """The advisory lock of one run; ``acquire()`` returns whether this run got it."""

    def __init__(self, url: str, shard: Shard | None = None):
        self.url = url
        self.key = lock_key(shard)
        self.conn = None
        self._checked_at = 0.0
        self._held = False
        self._mutex = threading.Lock()

    def acquire(self) -> bool:
        self.conn = connect(self.url, application_name="analytics-refresh lock")
        with self.conn.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
            self._held = bool(cur.fetchone()[0])
        self._checked_at = time.monotonic()
        if not self._held:
            self.release()
        return self._held

    def still_held(self) -> bool:
        """Return False once the lock's session is gone (checked at most once a second)."""
        with self._mutex:
            if not self._held or self.conn is None or self.conn.closed:
                self._held = False
                return False
            if time.monotonic() - self._checked_at < CHECK_INTERVAL_SECONDS:
                return True
            try:
                with self.conn.cursor() as cur:
                    cur.execute("SELECT 1")
            except psycopg2.Error:
                self._held = False
                return False
            self._checked_at = time.monotonic()
            return True

    def release(self) -> None:
        with self._mutex:
            if self.conn is not None and not self.conn.closed:
                try:
                    if self._held:
                        with self.conn.cursor() as cur:
                            cur.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
                except psycopg2.Error:
                    pass  # the session is gone, and the lock with it
                self.conn.close()
            self._held = False
