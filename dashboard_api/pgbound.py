"""Connections whose every call the API bounds itself, for a server that stops answering.

A hung PostgreSQL (or a dead path in front of one) keeps its connections open and still
acknowledges packets: ``statement_timeout`` is the server's to keep, and TCP keepalives see
nothing wrong. So each call gets a timer: past its bound the statement is cancelled
(``pg_cancel_backend`` on a connection of its own, from a helper thread: psycopg2's own
``cancel()`` holds the interpreter's lock while the server fails to answer), and a moment
later the socket is shut down, which ends libpq's wait at once. The call then raises
``OperationalError``, which the pool treats as a server gone (503, connection discarded).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading

import psycopg2
import psycopg2.extensions

# A computation may take as long as the runner waits for one (REFRESH_TIMEOUT, 300 s).
CALL_SECONDS = 300.0
# The ping before lending a connection, and /health: instant on a server that answers.
PING_SECONDS = 3.0
CANCEL_SECONDS = 1.0
CANCEL = "SELECT pg_cancel_backend(%s)"
# Dead paths: the kernel gives up on a connection in about 30 s, not hours.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30000,
}


class Silent(psycopg2.OperationalError):
    """The database stopped answering: the call was cancelled and its connection cut."""


class _Cutoff:
    """Cancels, then cuts, one call that outlives its bound."""

    def __init__(self, conn, seconds: float):
        self.conn = conn
        self.cut = False
        self._done = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._cancel)
        self._timer.daemon = True
        self._timer.start()

    def _cancel(self) -> None:
        threading.Thread(target=_cancel_backend, args=(self.conn,), daemon=True).start()
        self._timer = threading.Timer(CANCEL_SECONDS, self._cut)
        self._timer.daemon = True
        with self._lock:
            if not self._done:
                self._timer.start()

    def _cut(self) -> None:
        with self._lock:  # never after release(): the descriptor may belong to another then
            if self._done:
                return
            self.cut = True
            with contextlib.suppress(OSError, psycopg2.Error):
                sock = socket.socket(fileno=os.dup(self.conn.fileno()))
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                finally:
                    sock.close()

    def release(self) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()


def _cancel_backend(conn) -> None:
    with contextlib.suppress(Exception):
        helper = psycopg2.connect(conn.url, **connect_args(conn.url, 2))
        try:
            helper.call_seconds = CANCEL_SECONDS
            with helper.cursor() as cur:
                cur.execute(CANCEL, (conn.pid,))
        finally:
            helper.close()


class BoundedCursor(psycopg2.extensions.cursor):
    """A cursor whose statements are bounded by its connection."""

    def execute(self, query, vars=None):
        return self.connection.bounded(super().execute, query, vars)

    def executemany(self, query, vars_list):
        return self.connection.bounded(super().executemany, query, vars_list)


class BoundedConnection(psycopg2.extensions.connection):
    """A connection whose calls cannot outlast ``call_seconds`` (plus a cancel's moment)."""

    def __init__(self, dsn, *args, **kwargs):
        super().__init__(dsn, *args, **kwargs)
        self.cursor_factory = BoundedCursor
        self.url = dsn  # for the cancel's own connection; never put in a message
        self.pid = self.get_backend_pid()
        self.call_seconds = CALL_SECONDS

    def bounded(self, call, *args):
        """Make ``call``; past the bound, cancel it and then cut the connection."""
        cutoff = _Cutoff(self, self.call_seconds)
        try:
            return call(*args)
        except psycopg2.Error as exc:
            if cutoff.cut:
                raise Silent(
                    f"the database stopped answering (no reply within {self.call_seconds:g}s)"
                ) from exc
            raise
        finally:
            cutoff.release()

    @contextlib.contextmanager
    def bound(self, seconds: float):
        """Bound the calls inside to ``seconds``."""
        previous, self.call_seconds = self.call_seconds, seconds
        try:
            yield self
        finally:
            self.call_seconds = previous

    def commit(self):
        return self.bounded(super().commit)

    def rollback(self):
        return self.bounded(super().rollback)


def connect_args(url: str, connect_timeout: int) -> dict:
    """Return psycopg2.connect() keyword arguments for a bounded connection to ``url``
    (keepalive settings the URL gives itself are kept)."""
    given = psycopg2.extensions.parse_dsn(url)
    return {
        "connection_factory": BoundedConnection,
        "connect_timeout": connect_timeout,
        **{k: v for k, v in KEEPALIVES.items() if k not in given},
    }
