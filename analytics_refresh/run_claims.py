"""A run's claims on the keys it refreshes, so that a run and the listeners never refresh
one key at once: each job claims its key just before its first request (skipped when a
listener holds it) and frees it after, a success covering the changes read at the claim.

On a connection of its own, shared by the run's threads, with a thread renewing the
claims held. Where the listeners' tables do not exist, or the database cannot be asked,
a run goes on as before: claims keep a run from overlapping a listener, never from running.
"""

from __future__ import annotations

import logging
import threading

import psycopg2

from . import db
from .errors import RefreshError, first_line
from .key_claims import LEASE_SECONDS, RENEW_SECONDS, Claims
from .plan import Job
from .settings import Settings

log = logging.getLogger(__name__)

SKIP_REASON = "a listener is refreshing it now"

# Claim statements are instant: past this, the database stopped answering.
CLAIM_SECONDS = 5.0


def holder(run_id: str) -> str:
    """The name a run's key claims are held under."""
    return f"run:{run_id}"


class RunClaims:
    """Claims of one run, taken and freed one job at a time."""

    SKIP_REASON = SKIP_REASON

    def __init__(self, url: str, run_id: str, settings: Settings, conn, deadline=None):
        # A run's request may take REFRESH_TIMEOUT per attempt: the lease outlasts one.
        self.claims = Claims(holder(run_id), max(LEASE_SECONDS, settings.timeout + LEASE_SECONDS))
        self.url = url
        self.deadline = deadline
        self.platforms = settings.platforms
        self.conn = conn
        self._mutex = threading.Lock()
        self._done = threading.Event()
        self._warned = False
        self._thread = threading.Thread(target=self._renew, name="run-claims", daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, url: str, run_id: str, settings: Settings, deadline=None) -> RunClaims | None:
        """Return the run's claims, or None where no listener can run (no claims table).

        Its calls share the run's deadline and its record of a silent database, and are
        instant statements: one that takes seconds means the database stopped answering.
        """
        try:
            conn = _connect(url, deadline)
        except RefreshError:
            return None
        try:
            if db.missing_tables(conn, ("refresh_claims", "refresh_requests")):
                conn.close()
                return None
        except psycopg2.Error:
            conn.close()
            return None
        return cls(url, run_id, settings, conn, deadline)

    def take(self, job: Job) -> bool:
        """Claim ``job``'s key; False when a listener holds it (the job is then skipped)."""
        with self._mutex:
            try:
                self._connected()
                return self.claims.take_one(self.conn, job) is not None
            except (psycopg2.Error, RefreshError) as exc:
                self._trouble(exc)
                return True

    def release(self, job: Job, status: str) -> None:
        with self._mutex:
            try:
                self._connected()
                self.claims.release(self.conn, [(job, status)], self.platforms)
            except (psycopg2.Error, RefreshError) as exc:
                self.claims.forget([job])  # its lease frees it
                self._trouble(exc)

    def close(self) -> None:
        self._done.set()
        self._thread.join(10)
        with self._mutex:
            try:
                if self.conn is not None and not self.conn.closed:
                    self.claims.let_go(self.conn)
            except psycopg2.Error:
                pass  # the leases free them
            if self.conn is not None:
                self.conn.close()

    def _renew(self) -> None:
        while not self._done.wait(RENEW_SECONDS):
            with self._mutex:
                try:
                    self._connected()
                    self.claims.renew(self.conn)
                except (psycopg2.Error, RefreshError) as exc:
                    self._trouble(exc)

    def _connected(self) -> None:
        if self.conn is None or self.conn.closed:
            self.conn = _connect(self.url, self.deadline)

    def _trouble(self, exc: BaseException) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if not self._warned:
            log.warning(
                "⚠️ Cannot reach the key claims (%s): this run may refresh a key a listener "
                "refreshes at the same moment",
                first_line(exc),
            )
            self._warned = True


def _connect(url: str, deadline):
    return db.connect(
        url,
        application_name="analytics-refresh run claims",
        deadline=deadline,
        statement_ceiling=CLAIM_SECONDS,
    )
