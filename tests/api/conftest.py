"""Fixtures for the reference API: the app on a fresh database, its clients, and shop data.

Every test gets its own database (``db_url`` from tests/conftest.py). ``shop`` writes the
rows a test's analytics are computed from; dates are given in days before today (UTC),
the way the dashboard's window is defined.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Iterator

import psycopg2
import psycopg2.extensions
import pytest

from api_key_auth import SCOPE_REFRESH, mint_client_token
from dashboard_api import create_app
from dashboard_api.server import start_background

ALICE = "3b619a14-3cd8-49fa-9c24-d8df5e54c452"
BOB = "8f14e45f-ceea-467f-a0e6-1c2d3b4a5f60"


@contextlib.contextmanager
def cloned_database(server_url: str, template: str) -> Iterator[str]:
    """Yield the URL of a new database cloned from ``template``, for a module's tests."""
    name = f"ar_module_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        yield psycopg2.extensions.make_dsn(server_url, dbname=name)
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


def today() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()


def days_ago(days: int, hour: int = 10, minute: int = 0) -> dt.datetime:
    """Return ``hour:minute`` UTC on the day ``days`` before today."""
    day = today() - dt.timedelta(days=days)
    return dt.datetime.combine(day, dt.time(hour, minute), dt.timezone.utc)


class Shop:
    """Writes credentials, stock and order lines for tests."""

    def __init__(self, conn):
        self.conn = conn

    def connect(self, client_id: str, *platforms: str, status: str = "connected") -> None:
        with self.conn.cursor() as cur:
            for platform in platforms:
                cur.execute(
                    "INSERT INTO client_api_credentials (client_id, platform, status)"
                    " VALUES (%s, %s, %s)",
                    (client_id, platform, status),
                )

    def item(self, client_id, platform, sku, *, on_hand, cost, price, title=None) -> None:
        with self.conn.cursor() as cur:
            cur.execute(
                "INSERT INTO inventory_items"
                " (client_id, platform, sku, title, on_hand, unit_cost, unit_price)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (client_id, platform, sku, title or f"Title of {sku}", on_hand, cost, price),
            )

    def order(self, client_id, platform, order_id, ordered_at, *lines) -> None:
        """Add an order; each line is (sku, quantity, unit price)."""
        with self.conn.cursor() as cur:
            for sku, quantity, price in lines:
                cur.execute(
                    "INSERT INTO order_lines"
                    " (client_id, platform, order_id, sku, quantity, unit_price, ordered_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (client_id, platform, order_id, sku, quantity, price, ordered_at),
                )


@pytest.fixture
def shop(db) -> Shop:
    return Shop(db)


@pytest.fixture
def settings(db_url, secret) -> dict:
    """The settings ``app`` is built from; a test may change them before using ``app``."""
    return {
        "DATABASE_URL": db_url,
        "API_SECRET_KEY": secret,
        "TESTING": True,
        "API_MAX_CONCURRENT_COMPUTES": 4,
    }


@pytest.fixture
def app(settings):
    app = create_app(settings)
    yield app
    app.extensions["dashboard_api"].close()


@pytest.fixture
def client(app):
    """Flask's test client for ``app``."""
    return app.test_client()


@pytest.fixture
def api_server(app):
    """``app`` served by a real threaded HTTP server on loopback."""
    server = start_background(app)
    yield server
    server.stop()


@pytest.fixture
def token(secret):
    """Mint a token: ``token(client_id, scope=..., ttl_seconds=...)``."""

    def mint(client_id: str = ALICE, **kwargs) -> str:
        kwargs.setdefault("scope", SCOPE_REFRESH)
        return mint_client_token(client_id, secret, **kwargs)

    return mint


@pytest.fixture
def auth(token):
    """Headers with a refresh token: ``auth(client_id=ALICE, **token_kwargs)``."""

    def headers(client_id: str = ALICE, **kwargs) -> dict:
        return {"Authorization": f"Bearer {token(client_id, **kwargs)}"}

    return headers


@pytest.fixture
def random_client() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def empty(empty_db_url):
    """A connection to a database with no tables at all."""
    conn = psycopg2.connect(empty_db_url)
    yield conn
    conn.close()


def fetch(conn, query, *params):
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall()
