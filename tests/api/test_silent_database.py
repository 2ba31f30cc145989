"""A database that stops answering costs the API's requests seconds, not forever."""

from __future__ import annotations

import time

import psycopg2
import pytest

from dashboard_api import create_app, pgbound
from tests.silent_proxy import SilentProxy


@pytest.fixture
def proxy(db_url):
    server = SilentProxy(db_url).start()
    yield server
    server.close()


@pytest.fixture
def silent_app(settings, proxy):
    app = create_app({**settings, "DATABASE_URL": proxy.dsn()})
    yield app
    app.extensions["dashboard_api"].close()


def test_health_says_503_soon_after_the_database_stops_answering(silent_app, proxy):
    client = silent_app.test_client()
    assert client.get("/health").status_code == 200
    proxy.freeze()
    started = time.monotonic()
    answer = client.get("/health")
    elapsed = time.monotonic() - started
    assert answer.status_code == 503
    assert answer.get_json()["database"] == "unavailable"
    # the pooled connection's ping: its bound, then the cancel's moment
    bound = pgbound.PING_SECONDS + pgbound.CANCEL_SECONDS
    assert elapsed < bound + 1.0, f"{elapsed:.1f}s"
    proxy.thaw()
    assert client.get("/health").status_code == 200  # the pool heals at once


def test_every_call_on_a_pooled_connection_is_cut_off_in_bound(proxy):
    conn = psycopg2.connect(proxy.dsn(), **pgbound.connect_args(proxy.dsn(), 5))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        proxy.freeze()
        started = time.monotonic()
        with (
            conn.bound(1.0),
            conn.cursor() as cur,
            pytest.raises(psycopg2.OperationalError, match="stopped answering"),
        ):
            cur.execute("SELECT 2")
        assert 1.9 <= time.monotonic() - started < 3.5  # the bound, then the cancel's moment
        assert conn.closed
    finally:
        conn.close()


def test_pooled_connections_have_keepalives(silent_app):
    with silent_app.extensions["dashboard_api"].connection() as conn:
        params = conn.get_dsn_parameters()
    assert (params["keepalives"], params["tcp_user_timeout"]) == ("1", "30000")
