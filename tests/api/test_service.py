"""Load shedding, /health, a database that is down or restarts, settings and the server."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import time

import psycopg2
import pytest
import requests

from dashboard_api import cache, create_app, limits
from dashboard_api.config import ConfigError
from dashboard_api.server import start_background

from .conftest import ALICE, days_ago

URL = "/api/dashboard/inventory-analytics"
KEY_SHOPIFY_30_DAYS = "inventory-analytics?platform=shopify&days=30"
# Nothing listens on port 9 (discard) here: connections are refused at once.
DOWN_URL = "postgresql://postgres@127.0.0.1:9/nothing?connect_timeout=2"


@pytest.fixture
def alice(shop):
    shop.connect(ALICE, "shopify")
    shop.item(ALICE, "shopify", "S1", on_hand=5, cost="1.00", price="2.00")
    shop.order(ALICE, "shopify", "S-1", days_ago(1), ("S1", 1, "2.00"))


def get(client, auth, force="true"):
    return client.get(
        URL,
        query_string={"client_id": ALICE, "platform": "shopify", "force_refresh": force},
        headers=auth(),
    )


def hold_slots(conn, count):
    with conn.cursor() as cur:
        for slot in range(1, count + 1):
            cur.execute("SELECT pg_advisory_lock(%s, %s)", (limits.SLOT_CLASS, slot))


def test_sheds_load_past_the_computation_limit(client, auth, alice, db_url):
    assert get(client, auth).status_code == 200
    # Another process computing holds slots; the app's limit is 4 (see the settings fixture).
    other = psycopg2.connect(db_url)
    try:
        hold_slots(other, 3)
        assert get(client, auth).status_code == 200  # one slot left
        hold_slots(other, 4)

        shed = get(client, auth)
        assert shed.status_code == 503
        assert shed.headers["Retry-After"] == "2"
        assert "computations" in shed.get_json()["error"]
        # A fresh cached copy needs no computation.
        cached = get(client, auth, force="false")
        assert cached.status_code == 200
        assert cached.get_json()["cached"] is True
    finally:
        # Unlock before closing: a closed connection's backend may still hold its locks
        # for a moment after close() returns.
        with other.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock_all()")
        other.close()
    assert get(client, auth).status_code == 200


def test_health_ok(client):
    answer = client.get("/health")
    assert answer.status_code == 200
    assert answer.get_json() == {"status": "ok", "database": "ok"}


def test_database_down_is_503_not_500(settings, auth):
    app = create_app({**settings, "DATABASE_URL": DOWN_URL, "TESTING": False})
    client = app.test_client()

    health = client.get("/health")
    assert health.status_code == 503
    assert health.get_json()["database"] == "unavailable"
    assert "Retry-After" in health.headers
    answer = get(client, auth)
    assert answer.status_code == 503
    assert answer.get_json() == {"error": "The database is unavailable; retry shortly."}
    assert answer.headers["Retry-After"] == "2"


def test_pool_heals_when_the_database_drops_its_connections(client, auth, alice, db, db_url):
    assert get(client, auth).status_code == 200
    dbname = psycopg2.extensions.parse_dsn(db_url)["dbname"]
    with db.cursor() as cur:
        cur.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND application_name = 'dashboard-api'",
            (dbname,),
        )
        assert cur.fetchone()[0] >= 1

    # Every pooled connection is dead now; the next request still gets a live one.
    assert get(client, auth).status_code == 200
    assert client.get("/health").status_code == 200


def test_settings_errors_name_the_variable(secret):
    with pytest.raises(ConfigError, match="DATABASE_URL is required") as missing:
        create_app({"API_SECRET_KEY": secret})
    assert secret not in str(missing.value)

    with pytest.raises(ConfigError) as bad:
        create_app(
            {
                "DATABASE_URL": DOWN_URL,
                "API_SECRET_KEY": "short-secret",
                "CACHE_TTL": "soon",
                "API_MAX_CONCURRENT_COMPUTES": "0",
            }
        )
    message = str(bad.value)
    for name in ("API_SECRET_KEY", "CACHE_TTL", "API_MAX_CONCURRENT_COMPUTES"):
        assert name in message
    assert "short-secret" not in message
    assert "DATABASE_URL" not in message


def test_background_server_serves_until_stopped(app):
    server = start_background(app)
    assert server.url.startswith("http://127.0.0.1:")
    assert requests.get(server.url + "/health", timeout=10).json()["status"] == "ok"
    server.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/health", timeout=10)


def test_oversized_request_line_is_json(api_server, token):
    answer = requests.get(
        api_server.url + URL,
        params={"client_id": ALICE, "platform": "x" * 70_000},
        headers={"Authorization": f"Bearer {token()}"},
        timeout=10,
    )
    assert answer.status_code == 414
    assert "error" in answer.json()


def test_the_api_never_imports_the_runner():
    code = (
        "import sys, dashboard_api, dashboard_api.demo, dashboard_api.server;"
        "sys.exit(any(name.startswith('analytics_refresh') for name in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_a_request_waiting_on_its_key_takes_no_compute_slot(settings, shop, auth, db_url):
    # One slot. Client A's refresh waits on A's key lock (held below as if another
    # refresh of A were computing); meanwhile client B must still get its slot.
    bob = "8f14e45f-ceea-467f-a0e6-1c2d3b4a5f60"
    for client in (ALICE, bob):
        shop.connect(client, "shopify")
        shop.item(client, "shopify", "S1", on_hand=5, cost="1.00", price="2.00")
    app = create_app({**settings, "API_MAX_CONCURRENT_COMPUTES": 1})
    holder = psycopg2.connect(db_url)
    holder.autocommit = True
    server = start_background(app, host="127.0.0.1", port=0)
    url = server.url + URL
    try:
        with holder.cursor() as cur:
            cur.execute(
                "SELECT pg_advisory_lock(%s, hashtext(%s))",
                (cache.LOCK_CLASS, cache.lock_name(ALICE, KEY_SHOPIFY_30_DAYS)),
            )
        waiting = concurrent.futures.ThreadPoolExecutor(1).submit(
            requests.get,
            url,
            params={"client_id": ALICE, "platform": "shopify", "force_refresh": "true"},
            headers=auth(ALICE),
            timeout=30,
        )
        time.sleep(0.5)  # A is now blocked on its key
        other = requests.get(
            url,
            params={"client_id": bob, "platform": "shopify", "force_refresh": "true"},
            headers=auth(bob),
            timeout=30,
        )
        assert other.status_code == 200, other.text
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock_all()")
        assert waiting.result(timeout=30).status_code == 200
    finally:
        holder.close()
        server.stop()
