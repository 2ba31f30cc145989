"""The listener's loop: LISTEN, read everything pending, refresh what is due, wait.

On start and after every reconnect it LISTENs first and then reads the whole durable
record, so a change committed while it was away is found; it reads again on each
notification, whenever a key comes due, and every REFRESH_POLL_SECONDS whatever the
notifications say. Every wait is bounded; a lost database means reconnecting with a
capped backoff, said once per outage. A stop (SIGTERM, SIGINT) lets the round in flight
finish its requests, records it, frees the claims and returns 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import time

import psycopg2

from .. import db
from ..client import RefreshClient
from ..concurrency import make_limit
from ..errors import DatabaseError, first_line
from ..heartbeat import Heartbeat
from ..key_claims import LEASE_SECONDS, Claims
from ..settings import Settings
from ..stop import StopRequest
from . import pending as pending_keys
from . import queries as sql
from . import rounds
from .beacon import Beacon
from .gauges import Gauges
from .guard import bounded
from .wakeup import Unavailable, Wakeup

log = logging.getLogger(__name__)

START_LINE = "Starting analytics refresh listener"
LISTEN_TABLES = ("refresh_requests", "refresh_claims", "refresh_listeners")
# The most often the record is re-read on notifications: a burst of them is one read.
MIN_READ_GAP_SECONDS = 0.25
# Each wait is cut into slices this long, so a stop is seen at once.
SLICE_SECONDS = 0.5
# An idle LISTEN connection is asked to answer this often, within PING_BOUND_SECONDS.
PING_SECONDS = 15.0
PING_BOUND_SECONDS = 5.0
# Reconnecting: 0.5 s, doubling, at most this long between tries.
BACKOFF_MAX_SECONDS = 10.0
# A client-side bound a little past the server's statement_timeout (db.STATEMENT_SECONDS).
CALL_BOUND_SECONDS = db.STATEMENT_SECONDS + 5
# Keys claimed per round, per unit of concurrency: enough to keep every slot busy, few
# enough that other listeners find work while this one is busy.
KEYS_PER_SLOT = 4


class SchemaMissing(DatabaseError):
    """The runner's or the listener's tables are missing or out of date."""


class Listener:
    """One listener process."""

    def __init__(self, settings: Settings, stop: StopRequest):
        self.settings = settings
        self.stop = stop
        self.host = socket.gethostname()
        self.id = f"listen:{self.host}:{os.getpid()}:{secrets.token_hex(3)}"
        self.url = db.database_url(settings)
        self.secret = settings.require_secret()
        self.claims = Claims(self.id)
        self.gauges = Gauges(settings, self.host)
        self.wakeup = Wakeup(self.url, self.id)
        self.conn = None
        self.mode = "notify"
        self.refreshes = 0
        self.dirty = True  # the record must be read before the next wait
        self.read_at = 0.0
        self.next_poll = 0.0
        self.wake_at: float | None = None
        self.pinged_at = 0.0
        self.down_since: float | None = None
        self.said_polling = False
        self.connected_once = False
        self.worker: rounds.Worker | None = None
        self.progress_at = time.monotonic()  # the loop's last turn
        # A round may hold the loop for its requests' retries; past this it is stuck.
        self.stuck_after = settings.timeout * settings.max_attempts + 120

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> int:
        settings = self.settings
        log.info(
            "%s %s (platforms %s; settle %gs, max delay %gs, poll every %gs)",
            START_LINE,
            self.id,
            ",".join(settings.platforms),
            settings.settle_seconds,
            settings.max_delay_seconds,
            settings.poll_seconds,
        )
        client = RefreshClient(settings)
        self.worker = rounds.Worker(
            settings,
            self.url,
            self.secret,
            client,
            make_limit(settings.concurrency, settings.adaptive),
            self.claims,
            self.stop,
        )
        heartbeat = Heartbeat(settings.healthcheck_url) if settings.healthcheck_url else None
        if heartbeat is not None:
            heartbeat.start(self.id)
        beacon = Beacon(
            self.url,
            self.id,
            self.claims,
            self.gauges,
            heartbeat,
            self._state,
            settings.alive_file,
        )
        try:
            beacon.start()
            backoff = 0.5
            while not self.stop.is_set():
                try:
                    if self.conn is None:
                        self._connect()
                    self._cycle()
                    backoff = 0.5
                except (DatabaseError, psycopg2.Error, OSError) as exc:
                    self._lost(exc)
                    self.stop.wait(backoff)
                    backoff = min(BACKOFF_MAX_SECONDS, backoff * 2)
        finally:
            self._shutdown(beacon, client, heartbeat)
        log.info(
            "Listener %s stopped after %d refreshes (%s)", self.id, self.refreshes, self.stop.reason
        )
        return 0

    def _cycle(self) -> None:
        now = time.monotonic()
        self.progress_at = now
        if now >= self.next_poll or (self.dirty and now - self.read_at >= MIN_READ_GAP_SECONDS):
            self._read_and_refresh()
            return
        wake = self.next_poll
        if self.dirty:
            wake = min(wake, self.read_at + MIN_READ_GAP_SECONDS)
        if self.wake_at is not None:
            wake = min(wake, self.wake_at)
        timeout = max(0.0, min(SLICE_SECONDS, wake - now))
        if self.mode == "notify":
            notes = self.wakeup.wait(timeout)
            if any(not n.startswith("probe:") for n in notes):
                self.dirty = True
            if time.monotonic() - self.pinged_at >= PING_SECONDS:
                self.wakeup.ping(PING_BOUND_SECONDS)
                self.pinged_at = time.monotonic()
        else:
            self.stop.wait(timeout)
        if self.wake_at is not None and time.monotonic() >= self.wake_at:
            self.dirty, self.wake_at = True, None

    def _read_and_refresh(self) -> None:
        settings = self.settings
        started = time.monotonic()
        with bounded(self.conn, CALL_BOUND_SECONDS):
            found = pending_keys.read(self.conn, settings.platforms)
        self.read_at = started
        self.next_poll = started + settings.poll_seconds
        self.dirty = False
        plan = pending_keys.plan(found, settings.settle_seconds, settings.max_delay_seconds)
        self.gauges.observe_pending(len(found), plan.oldest)
        self.wake_at = None if plan.wake_in is None else started + plan.wake_in
        if plan.due and not self.stop.is_set():
            self._refresh(plan.due)
            self.dirty = True  # whatever changed meanwhile, and the rest of a backlog

    def _refresh(self, due: list[pending_keys.Pending]) -> None:
        batch = due[: max(1, self.settings.concurrency * KEYS_PER_SLOT)]
        first_change = {k.job: k.first_change for k in batch}
        with bounded(self.conn, CALL_BOUND_SECONDS):
            taken = self.claims.take(self.conn, [k.job for k in batch])
        if not taken:
            return
        jobs = [c.job for c in taken]
        try:
            seen = {k.job: k.first_at for k in batch if k.first_at is not None}
            result = rounds.refresh(self.worker, self.conn, jobs, seen)
        except BaseException:
            self.claims.forget(jobs)  # their leases run out; another listener retries them
            raise
        with bounded(self.conn, CALL_BOUND_SECONDS):
            self.claims.release(self.conn, result.outcomes.items(), self.settings.platforms)
        ended = time.monotonic()
        for job, status in result.outcomes.items():
            if status != "not_attempted":
                self.refreshes += 1
                self.gauges.observe_refresh(status, ended - first_change[job])

    # -- connecting -----------------------------------------------------------------------
    def _connect(self) -> None:
        """Open the work connection, then LISTEN, then mark the record to be read."""
        conn = db.connect(self.url, application_name="analytics-refresh listen work")
        self.conn = conn
        with bounded(conn, CALL_BOUND_SECONDS), db.boundary(self.url):
            try:
                db.require_runner_tables(conn)
            except DatabaseError as exc:
                raise SchemaMissing(exc.message, hint=exc.hint) from exc
            missing = db.missing_tables(conn, LISTEN_TABLES)
            if missing:
                raise SchemaMissing(
                    f"the listener's tables are missing: {', '.join(missing)}",
                    hint="run `analytics-refresh db init` once against this database",
                )
            with conn.cursor() as cur:
                cur.execute(sql.REGISTER, (self.id, self.host, os.getpid(), self.mode))
                cur.execute(sql.ABANDON_ROUNDS, (LEASE_SECONDS * 2,))
            # No round is in flight between rounds: claims left by one that the lost
            # database cut short are freed now rather than when their lease ends.
            self.claims.let_go(conn)
        self._listen()
        self.connected_once = True
        self.dirty, self.next_poll = True, 0.0
        if self.down_since is not None:
            log.info(
                "✅ Listener reconnected after %.0fs; reading every pending request",
                time.monotonic() - self.down_since,
            )
            self.down_since = None

    def _listen(self) -> None:
        try:
            self.wakeup.open()
            self.wakeup.probe(self.conn)
        except Unavailable as exc:
            self.wakeup.close()
            self.mode = "poll"
            if not self.said_polling:
                log.warning(
                    "⚠️ LISTEN is unavailable (%s): polling every %gs alone; changes then "
                    "wait up to that long (a direct connection, not a pooler in transaction "
                    "mode, restores notifications)",
                    exc,
                    self.settings.poll_seconds,
                )
                self.said_polling = True
            return
        self.mode = "notify"
        self.pinged_at = time.monotonic()

    def _lost(self, exc: BaseException) -> None:
        if isinstance(exc, SchemaMissing):
            raise exc  # db init, not patience, fixes that
        if self.down_since is None:
            self.down_since = time.monotonic()
            what = "lost the database" if self.connected_once else "cannot reach the database"
            log.warning("⚠️ Listener %s (%s); reconnecting with backoff", what, first_line(exc))
        else:
            log.debug("Listener still cannot reach the database (%s)", first_line(exc))
        self._close_connections()

    def _close_connections(self) -> None:
        self.wakeup.close()
        if self.conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self.conn.close()
            self.conn = None

    def _shutdown(self, beacon: Beacon, client: RefreshClient, heartbeat) -> None:
        beacon.close()
        try:
            if self.conn is not None:
                with bounded(self.conn, CALL_BOUND_SECONDS):
                    self.claims.let_go(self.conn)
                    with self.conn.cursor() as cur:
                        cur.execute(sql.STOPPED, (self.id,))
        except Exception as exc:  # the leases free the keys anyway
            log.warning("⚠️ Listener could not free its claims at the stop (%s)", first_line(exc))
        self._close_connections()
        client.close()
        self.gauges.publish()
        if heartbeat is not None:
            heartbeat.finish(0, f"listener stopped: {self.stop.reason}", self.id)

    def _state(self) -> dict:
        return {
            "mode": self.mode,
            "refreshes": self.refreshes,
            "healthy": self.conn is not None and self.down_since is None,
            "progressing": time.monotonic() - self.progress_at < self.stuck_after,
            "summary": f"listening ({self.mode}): {self.refreshes} refreshes",
        }


def listen(settings: Settings, stop: StopRequest) -> int:
    """Run a listener until ``stop``; return its exit code (0 on a clean stop)."""
    return Listener(settings, stop).run()
