"""PostgreSQL for the API: the schema, and a pool of connections shared by request threads.

A connection is lent for one request and comes back rolled back; a few stay open between
requests. A driver error that means the server is gone becomes ``DatabaseUnavailable``
(503, which the runner retries) and the broken connection is thrown away; connections are
pinged before they are lent, so the pool heals as soon as the server is back. Every call
is bounded by the API itself (``pgbound``), so a server that stops answering costs a
request seconds, not forever.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from importlib import resources

import psycopg2
import psycopg2.errors
import psycopg2.pool

from . import pgbound
from .errors import DatabaseUnavailable, SchemaMissing

CONNECT_TIMEOUT_SECONDS = 5
# How long a request waits for a free connection before the API sheds it (503).
POOL_WAIT_SECONDS = 10
APPLICATION_NAME = "dashboard-api"
# Connections kept open between requests, and the most open at once, on top of one per
# computation slot.
IDLE_CONNECTIONS = 2
READER_CONNECTIONS = 8
INIT_LOCK = "SELECT pg_advisory_lock(hashtext('dashboard_api schema'))"
INIT_UNLOCK = "SELECT pg_advisory_unlock(hashtext('dashboard_api schema'))"
PING = "SELECT 1"


def read_sql(name: str) -> str:
    """Return the text of the SQL file ``name`` shipped with the package."""
    return resources.files("dashboard_api").joinpath(name).read_text(encoding="utf-8")


def init_schema(conn) -> None:
    """Create the reference API's tables and indexes (idempotent)."""
    with conn.cursor() as cur:
        # Serialise concurrent inits: CREATE ... IF NOT EXISTS can race otherwise.
        cur.execute(INIT_LOCK)
        try:
            cur.execute(read_sql("schema.sql"))
        finally:
            cur.execute(INIT_UNLOCK)
    if not conn.autocommit:
        conn.commit()


class Database:
    """A bounded pool of connections to ``url``, opened on first use."""

    def __init__(self, url: str, *, max_connections: int, idle_connections: int):
        self._url = url
        self._max = max_connections
        # ThreadedConnectionPool keeps at most ``minconn`` connections between requests
        # (it closes the rest as they come back) and opens that many as it is built.
        self._idle = min(idle_connections, max_connections)
        self._pool: psycopg2.pool.ThreadedConnectionPool | None = None
        self._pool_lock = threading.Lock()
        # The pool fails at once when every connection is lent; this makes callers wait.
        self._free = threading.BoundedSemaphore(max_connections)

    @contextlib.contextmanager
    def connection(self) -> Iterator:
        """Lend a connection for one unit of work; map a lost server to DatabaseUnavailable."""
        if not self._free.acquire(timeout=POOL_WAIT_SECONDS):
            raise DatabaseUnavailable("all database connections are busy; retry shortly")
        try:
            pool = self._get_pool()
            conn = self._checkout(pool)
            broken = False
            try:
                yield conn
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                broken = True
                raise DatabaseUnavailable() from exc
            except psycopg2.errors.UndefinedTable as exc:
                raise SchemaMissing() from exc
            finally:
                broken = broken or bool(conn.closed)
                if not broken:
                    try:
                        conn.rollback()
                    except psycopg2.Error:
                        broken = True
                pool.putconn(conn, close=broken)
        finally:
            self._free.release()

    def _get_pool(self) -> psycopg2.pool.ThreadedConnectionPool:
        # Built on first use, not at import: gunicorn forks its workers first, and a
        # database that is down at start makes /health say so instead of crashing the app.
        with self._pool_lock:
            if self._pool is None:
                try:
                    self._pool = psycopg2.pool.ThreadedConnectionPool(
                        self._idle,
                        self._max,
                        self._url,
                        application_name=APPLICATION_NAME,
                        **pgbound.connect_args(self._url, CONNECT_TIMEOUT_SECONDS),
                    )
                except psycopg2.Error as exc:
                    raise DatabaseUnavailable() from exc
            return self._pool

    def _checkout(self, pool):
        # Ping before lending: after a database restart every pooled connection is dead,
        # and discarding them here (not in a failed request each) heals the pool at once.
        for _ in range(self._max + 1):
            try:
                conn = pool.getconn()
            except psycopg2.Error as exc:
                raise DatabaseUnavailable() from exc
            try:
                with conn.bound(pgbound.PING_SECONDS), conn.cursor() as cur:
                    cur.execute(PING)
                return conn
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                pool.putconn(conn, close=True)
                if isinstance(exc, pgbound.Silent):
                    # A server that stopped answering would cost each pooled one as long.
                    raise DatabaseUnavailable() from exc
        raise DatabaseUnavailable()

    def ping(self) -> None:
        """Run a trivial query, or raise DatabaseUnavailable."""
        with self.connection() as conn, conn.bound(pgbound.PING_SECONDS), conn.cursor() as cur:
            cur.execute(PING)

    def close(self) -> None:
        """Close every pooled connection."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.closeall()
                self._pool = None


def connect_for_script(url: str):
    """Connect for a command-line script, or print why not and return None.

    libpq's own words may quote pieces of a mis-encoded password: say only what failed.
    """
    try:
        return psycopg2.connect(url)
    except psycopg2.Error as exc:
        print(
            f"cannot connect to the database ({type(exc).__name__}); check DATABASE_URL and "
            "percent-encode any special character of its password",
            file=sys.stderr,
        )
        return None
