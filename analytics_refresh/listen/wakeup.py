"""The wake-up: a connection of its own that LISTENs, every wait on it bounded.

An asynchronous psycopg2 connection, so that connecting, LISTEN and each liveness probe
wait through ``select`` with a timeout kept here: a database that stops answering while
its connections stay open (a hung server, a proxy) is noticed within that bound, where a
blocking call could wait forever. Notifications are only hints; the caller re-reads the
durable record after each (re)connect and polls as the net.
"""

from __future__ import annotations

import contextlib
import select
import time

import psycopg2
import psycopg2.extensions

from ..errors import DatabaseError, first_line
from ..logs import redact
from ..urls import database_password
from . import queries as sql

CONNECT_SECONDS = 10.0
# A probe notification sent to ourselves must come back within this long, or LISTEN is
# taken to be unavailable (a pooler in transaction mode passes LISTEN but no notification).
PROBE_SECONDS = 3.0


class Unavailable(Exception):
    """LISTEN cannot be used on this connection (why is the message)."""


class Wakeup:
    """One LISTEN connection; ``wait()`` returns the notifications that arrived."""

    def __init__(self, url: str, name: str):
        self.url = url
        self.name = name  # this listener's id: its probe's payload
        self.conn = None

    def open(self, seconds: float = CONNECT_SECONDS) -> None:
        """Connect and LISTEN; raise DatabaseError when the database cannot be reached."""
        self.close()
        try:
            self.conn = psycopg2.connect(
                self.url, async_=True, application_name="analytics-refresh listen"
            )
            self._settle(seconds)
        except psycopg2.Error as exc:
            self.close()
            raise self._error(exc) from exc
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql.LISTEN)
                self._settle(seconds)
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            self.close()
            raise self._error(exc) from exc
        except psycopg2.Error as exc:  # refused (a standby), not lost: poll instead
            self.close()
            raise Unavailable(f"LISTEN was refused: {first_line(exc)}") from exc

    def probe(self, conn, seconds: float = PROBE_SECONDS) -> None:
        """Send a notification to ourselves on ``conn``; raise Unavailable unless it comes
        back on the LISTEN connection within ``seconds``."""
        payload = f"probe:{self.name}:{time.monotonic_ns()}"
        with conn.cursor() as cur:
            cur.execute(sql.PROBE, (payload,))
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if payload in self.wait(end - time.monotonic()):
                return
        raise Unavailable(f"a test notification did not arrive within {seconds:g}s")

    def wait(self, seconds: float) -> list[str]:
        """Wait up to ``seconds`` for notifications; return their payloads (maybe none).

        Raises DatabaseError when the connection is lost.
        """
        if self.conn is None:
            raise DatabaseError("the LISTEN connection is closed")
        try:
            ready, _, _ = select.select([self.conn], [], [], max(0.0, seconds))
            if ready:
                self.conn.poll()
            found = [n.payload for n in self.conn.notifies]
            self.conn.notifies.clear()
            return found
        except (psycopg2.Error, OSError, ValueError) as exc:
            self.close()
            raise self._error(exc) from exc

    def ping(self, seconds: float) -> None:
        """Ask the server to answer within ``seconds``; raise DatabaseError when it does not."""
        if self.conn is None:
            raise DatabaseError("the LISTEN connection is closed")
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql.PING)
                self._settle(seconds)
        except psycopg2.Error as exc:
            self.close()
            raise self._error(exc) from exc

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self.conn.close()
            self.conn = None

    def _settle(self, seconds: float) -> None:
        """Drive the asynchronous connection until its current step is done, or time out."""
        end = time.monotonic() + seconds
        while True:
            state = self.conn.poll()
            if state == psycopg2.extensions.POLL_OK:
                return
            left = end - time.monotonic()
            if left <= 0:
                raise psycopg2.OperationalError(f"no answer from the database within {seconds:g}s")
            if state == psycopg2.extensions.POLL_READ:
                select.select([self.conn], [], [], left)
            elif state == psycopg2.extensions.POLL_WRITE:
                select.select([], [self.conn], [], left)

    def _error(self, exc: BaseException) -> DatabaseError:
        secrets = tuple(p for p in (database_password(self.url),) if p)
        return DatabaseError(f"LISTEN connection: {redact(first_line(exc), secrets)}")
