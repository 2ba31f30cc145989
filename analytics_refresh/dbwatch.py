"""Every database call bounded by the client: cancel it, then cut its socket.

``statement_timeout`` is kept by the server, and a server that hangs (or a proxy in front
of one that stops forwarding) keeps it no better than it answers; such a peer still
acknowledges packets, so TCP keepalives and ``tcp_user_timeout`` do not notice it either.
So each call on a connection from ``connect()`` is armed with one shared watchdog thread:
past its bound the call is cancelled (a cancel request on a connection of its own, sent
from a helper thread, since that too may hang), and if no answer came within a moment
more, the connection's socket is shut down, which ends libpq's wait at once. The call then
raises ``DatabaseSilent``, and the server is marked silent: until a call to it succeeds
again, every call and connection to it gets only a short bound, so a run's remaining
database work costs seconds, not a full bound each.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import socket
import threading
import time

import psycopg2
import psycopg2.extensions

log = logging.getLogger(__name__)

# On top of the statement's own bound: the server's answer (QueryCanceled) wins when it can.
GRACE_SECONDS = 2.0
# How long a cancelled call may take to come back before its socket is cut.
CANCEL_SECONDS = 1.0
# A server found silent gets this long per call (and libpq's shortest connect timeout)
# until it answers again.
SILENT_SECONDS = 1.0
SILENT_CONNECT_SECONDS = 2
PROBE_SECONDS = 10.0
# Dead paths (a host gone, a cable cut): the kernel gives up on the connection in about
# 30 s instead of the hours of its defaults. Values in the URL take precedence.
KEEPALIVES = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",
}


CANCEL = "SELECT pg_cancel_backend(%s)"


class DatabaseSilent(psycopg2.OperationalError):
    """The database stopped answering: the call was cancelled and its connection cut."""


# -- whether the database went silent ---------------------------------------------------------
class Silence:
    """Whether the database stopped answering, shared by the connections of one run.

    Once it has, a new connection is not even tried for ``PROBE_SECONDS`` after the last
    failure, nor at all once ``past_deadline()`` says the run is over its time, and every
    call gets only a short bound: the run's remaining database work then costs moments,
    however much of it there is. A call that succeeds clears it.
    """

    def __init__(self, past_deadline=lambda: False) -> None:
        self.past_deadline = past_deadline
        self._lock = threading.Lock()
        self.since: float | None = None
        self._last = 0.0

    @property
    def silent(self) -> bool:
        return self.since is not None

    def found(self) -> None:
        with self._lock:
            now = time.monotonic()
            self.since = self.since or now
            self._last = now

    def answered(self) -> None:
        self.since = None

    def may_try(self) -> bool:
        """Return whether a new connection is worth trying now."""
        if self.since is None:
            return True
        return not self.past_deadline() and time.monotonic() - self._last >= PROBE_SECONDS


# Servers found silent lately, by the URL connected with: a new connection to one gets
# libpq's shortest connect timeout, whichever run or deadline asks for it.
RECENT_SECONDS = 60.0
_recent: dict[str, float] = {}
_recent_lock = threading.Lock()


def _remember(server: str, silent: bool) -> None:
    with _recent_lock:
        if silent:
            _recent[server] = time.monotonic()
        else:
            _recent.pop(server, None)


def _lately_silent(server: str) -> bool:
    with _recent_lock:
        at = _recent.get(server)
    return at is not None and time.monotonic() - at < RECENT_SECONDS


# -- the watchdog -----------------------------------------------------------------------------
class _Guard:
    """One call's bound and what the watchdog did to it."""

    __slots__ = ("conn", "cut", "done", "quick", "seconds", "stage")

    def __init__(self, conn, seconds: float, quick: bool):
        self.conn = conn
        self.seconds = seconds
        self.quick = quick  # the server is known silent: cut at once, no cancel first
        self.stage = 0  # 0 armed, 1 cancel sent
        self.cut = False
        self.done = False


class Watchdog:
    """One thread that cancels, then cuts, every call past its bound."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _Guard]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, conn, seconds: float, quick: bool) -> _Guard:
        guard = _Guard(conn, seconds, quick)
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="db-watchdog", daemon=True)
                self._thread.start()
            self._push(time.monotonic() + seconds, guard)
        return guard

    def release(self, guard: _Guard) -> None:
        # Under the lock: once this returns the socket is never cut, so the connection may
        # be closed and its descriptor reused safely.
        with self._cond:
            guard.done = True

    def _push(self, when: float, guard: _Guard) -> None:
        earliest = not self._heap or when < self._heap[0][0]
        heapq.heappush(self._heap, (when, next(self._seq), guard))
        if earliest:
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                delay = self._heap[0][0] - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                guard = heapq.heappop(self._heap)[2]
                if guard.stage == 0 and not guard.quick:
                    guard.stage = 1
                    _cancel(guard.conn)
                    self._push(time.monotonic() + CANCEL_SECONDS, guard)
                else:
                    guard.cut = True
                    cut(guard.conn)


def _cancel(conn) -> None:
    # Not conn.cancel(): psycopg2 holds the GIL through PQcancel, which waits for the server
    # to close the cancel connection, so against a hung server every thread would stop.
    # pg_cancel_backend on a connection of its own, from a helper thread, is bounded like
    # any call, and a helper still stuck when the process ends dies with it.
    def send() -> None:
        with contextlib.suppress(Exception):
            helper = connect(conn.url, connect_timeout=SILENT_CONNECT_SECONDS)
            try:
                helper.quiet = True
                helper.call_seconds = CANCEL_SECONDS
                with helper.cursor() as cur:
                    cur.execute(CANCEL, (conn.pid,))
            finally:
                helper.close()

    threading.Thread(target=send, name="db-cancel", daemon=True).start()


def cut(conn) -> None:
    # Shutting down a duplicate of libpq's descriptor shuts the shared socket: libpq's wait
    # ends with "server closed the connection", and the descriptor stays libpq's to close.
    with contextlib.suppress(OSError, psycopg2.Error):
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


WATCHDOG = Watchdog()


# -- connections whose every call is watched --------------------------------------------------
class BoundedCursor(psycopg2.extensions.cursor):
    """A cursor whose every round trip to the server is bounded by its connection."""

    def execute(self, query, vars=None):
        return self.connection.bounded(super().execute, query, vars)

    def executemany(self, query, vars_list):
        return self.connection.bounded(super().executemany, query, vars_list)

    def callproc(self, procname, parameters=None):
        return self.connection.bounded(super().callproc, procname, parameters)

    def copy_expert(self, sql, file, size=8192):
        return self.connection.bounded(super().copy_expert, sql, file, size)

    # A named (server-side) cursor goes back to the server for each batch of rows.
    def fetchone(self):
        if self.name is None:
            return super().fetchone()
        return self.connection.bounded(super().fetchone)

    def fetchmany(self, size=None):
        if self.name is None:
            return super().fetchmany(self.arraysize if size is None else size)
        return self.connection.bounded(super().fetchmany, self.itersize if size is None else size)

    def fetchall(self):
        if self.name is None:
            return super().fetchall()
        return self.connection.bounded(super().fetchall)

    def __iter__(self):
        if self.name is None:
            return super().__iter__()
        return self._batches()

    def _batches(self):
        while True:
            rows = self.fetchmany(self.itersize)
            if not rows:
                return
            yield from rows


class BoundedConnection(psycopg2.extensions.connection):
    """A connection whose calls cannot outlast ``bound_seconds()`` (plus a grace)."""

    def __init__(self, dsn, *args, **kwargs):
        super().__init__(dsn, *args, **kwargs)
        self.cursor_factory = BoundedCursor
        self.url = dsn  # for the cancel's own connection; never put in a message
        self.pid = self.get_backend_pid()
        self.quiet = False
        params = self.get_dsn_parameters()
        host = params.get("host") or params.get("hostaddr")
        self.name = f"database {params.get('dbname')!r} on {host}:{params.get('port')}"
        self.silence = Silence()  # replaced by connect() with the one it shares
        self.server = dsn
        # Set by the owner: the longest a call may take (None: unbounded), usually the
        # statement timeout or what the run's deadline leaves, whichever is less.
        self.call_seconds = None

    def bounded(self, call, *args):
        """Make ``call`` within this connection's bound, cutting it off past it."""
        seconds = self.call_seconds
        quick = self.silence.silent
        if quick:
            seconds = SILENT_SECONDS if seconds is None else min(seconds, SILENT_SECONDS)
        elif seconds is not None:
            seconds += GRACE_SECONDS
        if seconds is None:
            return call(*args)
        guard = WATCHDOG.arm(self, seconds, quick)
        try:
            result = call(*args)
        except psycopg2.Error as exc:
            WATCHDOG.release(guard)
            if not guard.cut:
                raise
            if not quick and not self.quiet:
                log.error(
                    "❌ The database stopped answering: no reply within %.1fs, so the call "
                    "was cancelled and its connection closed (%s)",
                    seconds,
                    self.name,
                )
            self.found_silent()
            raise DatabaseSilent(
                f"the database stopped answering: no reply within {seconds:.1f}s (the call "
                "was cancelled and its connection closed)"
            ) from exc
        WATCHDOG.release(guard)
        if self.silence.silent:
            self.silence.answered()
            _remember(self.server, False)
        return result

    def found_silent(self) -> None:
        """Record that this connection's server stopped answering (whoever found it)."""
        self.silence.found()
        _remember(self.server, True)

    def commit(self):
        return self.bounded(super().commit)

    def rollback(self):
        return self.bounded(super().rollback)


def set_bound(conn, seconds: float | None) -> None:
    """Set the longest a call on ``conn`` may take (None: unbounded), if it is watched."""
    if isinstance(conn, BoundedConnection):
        conn.call_seconds = seconds


def connect(dsn: str, *, connect_timeout: float, silence: Silence | None = None, **kwargs):
    """Open a BoundedConnection with keepalives and ``tcp_user_timeout`` set.

    Raises DatabaseSilent at once when ``silence`` says the database stopped answering
    moments ago.
    """
    silence = silence or Silence()
    if not silence.may_try():
        raise DatabaseSilent("the database stopped answering moments ago; not connecting yet")
    params = psycopg2.extensions.parse_dsn(dsn)
    server = dsn
    if silence.silent or _lately_silent(server):
        connect_timeout = min(connect_timeout, SILENT_CONNECT_SECONDS)
    extra = {k: v for k, v in KEEPALIVES.items() if k not in params}
    try:
        conn = psycopg2.connect(
            dsn,
            connection_factory=BoundedConnection,
            connect_timeout=max(SILENT_CONNECT_SECONDS, round(connect_timeout)),
            **extra,
            **kwargs,
        )
    except psycopg2.OperationalError as exc:
        if "timeout expired" in str(exc):
            silence.found()  # it took the connection but never answered
            _remember(server, True)
        raise
    conn.silence = silence
    conn.server = server  # psycopg2 hands __init__ the URL merged with the options above
    _remember(server, False)  # it answered the startup: no longer lately silent
    return conn
