"""The per-client cache: created on first use, fresh copies answered, refreshes in place."""

from __future__ import annotations

import datetime as dt
import threading
import time

import psycopg2
import pytest
import requests
from psycopg2 import sql

from dashboard_api import cache, create_app
from dashboard_api.routes import AnalyticsQuery
from dashboard_api.server import start_background

from .conftest import ALICE, days_ago

URL = "/api/dashboard/inventory-analytics"
TABLE = f"{ALICE}_cached_responses"
KEY = "inventory-analytics?platform=all&days=30"


@pytest.fixture
def alice(shop):
    shop.connect(ALICE, "shopify", "amazon")
    shop.item(ALICE, "shopify", "S1", on_hand=40, cost="2.00", price="5.00")
    shop.item(ALICE, "amazon", "A1", on_hand=10, cost="3.00", price="7.00")
    shop.order(ALICE, "shopify", "S-1", days_ago(3), ("S1", 4, "5.00"))
    shop.order(ALICE, "amazon", "A-1", days_ago(4), ("A1", 2, "7.00"))
    return shop


def read(client, auth, force=False):
    answer = client.get(
        URL,
        query_string={"client_id": ALICE, "platform": "all", "force_refresh": str(force).lower()},
        headers=auth(),
    )
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def on_table(query: str) -> sql.Composed:
    """Return ``query`` with ``{table}`` naming Alice's cache table."""
    return sql.SQL(query).format(table=sql.Identifier(TABLE))


def rows(db):
    with db.cursor() as cur:
        cur.execute(
            on_table(
                "SELECT cache_key, platform, params, response, computed_at, expires_at,"
                " compute_ms FROM {table}"
            )
        )
        return cur.fetchall()


def test_first_read_creates_the_table_and_stores_the_answer(client, auth, alice, db):
    first = read(client, auth)

    assert first["cached"] is False
    with db.cursor() as cur:
        cur.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = %s ORDER BY ordinal_position",
            (TABLE,),
        )
        assert cur.fetchall() == [
            ("cache_key", "text"),
            ("platform", "text"),
            ("params", "jsonb"),
            ("response", "jsonb"),
            ("computed_at", "timestamp with time zone"),
            ("expires_at", "timestamp with time zone"),
            ("compute_ms", "integer"),
        ]
    [(key, platform, params, response, computed_at, expires_at, compute_ms)] = rows(db)
    assert (key, platform, params) == (KEY, "all", {"platform": "all", "days": 30})
    assert "cached" not in response
    assert response == {k: v for k, v in first.items() if k != "cached"}
    assert expires_at - computed_at == dt.timedelta(hours=3)
    assert isinstance(compute_ms, int)
    assert compute_ms >= 0


def test_fresh_copy_is_answered_until_a_forced_refresh(client, auth, alice):
    first = read(client, auth)
    alice.order(ALICE, "shopify", "S-2", days_ago(1), ("S1", 10, "5.00"))

    again = read(client, auth)
    assert again["cached"] is True
    assert again["generated_at"] == first["generated_at"]
    assert again["kpis"]["units_sold"] == 6  # the new order is not in the cached copy

    forced = read(client, auth, force=True)
    assert forced["cached"] is False
    assert forced["generated_at"] > first["generated_at"]
    assert forced["kpis"]["units_sold"] == 16

    after = read(client, auth)
    assert after["cached"] is True
    assert after["generated_at"] == forced["generated_at"]
    assert {k: v for k, v in after.items() if k != "cached"} == {
        k: v for k, v in forced.items() if k != "cached"
    }


def test_stale_copy_is_recomputed_and_stored(client, auth, alice, db):
    first = read(client, auth)
    with db.cursor() as cur:
        cur.execute(on_table("UPDATE {table} SET expires_at = now() - interval '1 second'"))

    again = read(client, auth)

    assert again["cached"] is False
    assert again["generated_at"] > first["generated_at"]
    [row] = rows(db)
    assert row[5] > dt.datetime.now(dt.timezone.utc)


def test_cache_ttl_is_configurable(settings, auth, alice, db):
    app = create_app({**settings, "CACHE_TTL": "90"})
    try:
        read(app.test_client(), auth)
    finally:
        app.extensions["dashboard_api"].close()
    [row] = rows(db)
    assert row[5] - row[4] == dt.timedelta(seconds=90)


def test_forced_refresh_replaces_the_row_in_place(client, auth, alice, db):
    read(client, auth, force=True)
    [before] = rows(db)
    read(client, auth, force=True)
    [after] = rows(db)
    assert after[4] > before[4]


def test_each_platform_has_its_own_key(client, auth, alice, db):
    for platform in ("shopify", "amazon", "all"):
        answer = client.get(
            URL,
            query_string={"client_id": ALICE, "platform": platform, "force_refresh": "true"},
            headers=auth(),
        )
        assert answer.status_code == 200
    assert sorted((row[0], row[1]) for row in rows(db)) == [
        ("inventory-analytics?platform=all&days=30", "all"),
        ("inventory-analytics?platform=amazon&days=30", "amazon"),
        ("inventory-analytics?platform=shopify&days=30", "shopify"),
    ]


def test_table_names_come_from_uuids_only():
    assert cache.table_name(ALICE.upper()) == TABLE
    for bad in ('x"; DROP TABLE client_api_credentials; --', "", "1234"):
        with pytest.raises(ValueError, match="hexadecimal UUID"):
            cache.table_name(bad)


def test_memo_never_answers_a_replaced_copy(db):
    when = dt.datetime(2024, 1, 15, 8, tzinfo=dt.timezone.utc)
    memo = cache.Memo()
    db.autocommit = False
    cache.ensure_table(db, ALICE)
    cache.save_cached_response(
        db, ALICE, "k", platform="all", params={}, response={"n": 1},
        computed_at=when, ttl_seconds=60, compute_ms=5, memo=memo,
    )  # fmt: skip
    db.commit()
    assert cache.get_cached_response(db, ALICE, "k", memo=memo).body == b'{"n": 1}'
    # Another process replaces the row: the memo must not answer the old body.
    with db.cursor() as cur:
        cur.execute(
            on_table("UPDATE {table} SET response = %s::jsonb, computed_at = %s"),
            ('{"n": 2}', when + dt.timedelta(seconds=1)),
        )
    db.commit()
    stored = cache.get_cached_response(db, ALICE, "k", memo=memo)
    assert stored.body == b'{"n": 2}'
    assert stored.answer(cached=True) == b'{"cached": true, "n": 2}'
    assert cache.get_cached_response(db, ALICE, "other", memo=memo) is None
    assert cache.get_cached_response(db, "8f14e45f-ceea-467f-a0e6-1c2d3b4a5f60", "k") is None


def test_two_forced_refreshes_at_once_compute_once(api_server, token, alice, db):
    # Hold the key's lock, as a refresh in progress would, so both requests queue on it.
    query = AnalyticsQuery(ALICE, "all", True, 30)
    lock_args = (cache.LOCK_CLASS, cache.lock_name(ALICE, query.cache_key))
    with db.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", lock_args)
    answers = []

    def refresh():
        answers.append(
            requests.get(
                api_server.url + URL,
                params={"client_id": ALICE, "platform": "all", "force_refresh": "true"},
                headers={"Authorization": f"Bearer {token()}"},
                timeout=30,
            )
        )

    threads = [threading.Thread(target=refresh) for _ in range(2)]
    for thread in threads:
        thread.start()
    wait_for_lock_waiters(db, 2)
    with db.cursor() as cur:
        cur.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", lock_args)
    for thread in threads:
        thread.join()

    assert [answer.status_code for answer in answers] == [200, 200]
    bodies = [answer.json() for answer in answers]
    assert [body["cached"] for body in bodies] == [False, False]
    assert bodies[0]["generated_at"] == bodies[1]["generated_at"]
    [row] = rows(db)
    assert row[3]["generated_at"] == bodies[0]["generated_at"]


def wait_for_lock_waiters(db, count, timeout=10.0):
    deadline = time.monotonic() + timeout
    with db.cursor() as cur:
        while time.monotonic() < deadline:
            cur.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            if cur.fetchone()[0] >= count:
                return
            time.sleep(0.01)
    raise AssertionError(f"{count} requests never queued on the lock")


def test_readers_never_miss_while_200_forced_refreshes_run(settings, token, alice, db_url):
    app = create_app({**settings, "API_MAX_CONCURRENT_COMPUTES": 8})
    server = start_background(app)
    url = server.url + URL
    params = {"client_id": ALICE, "platform": "all"}
    refresh_headers = {"Authorization": f"Bearer {token()}"}
    read_headers = {"Authorization": f"Bearer {token(scope='analytics:read')}"}
    first = requests.get(
        url, params={**params, "force_refresh": "true"}, headers=refresh_headers, timeout=30
    )
    assert first.status_code == 200
    done = threading.Event()
    refreshes, reads, row_counts = [], [], []

    def refresher():
        with requests.Session() as session:
            for _ in range(50):
                answer = session.get(
                    url,
                    params={**params, "force_refresh": "true"},
                    headers=refresh_headers,
                    timeout=30,
                )
                refreshes.append((answer.status_code, answer.json()))

    def reader():
        with requests.Session() as session:
            while not done.is_set():
                answer = session.get(
                    url,
                    params={**params, "force_refresh": "false"},
                    headers=read_headers,
                    timeout=30,
                )
                reads.append((answer.status_code, answer.json().get("cached")))

    def sql_reader():
        conn = psycopg2.connect(db_url)
        conn.autocommit = True
        with conn, conn.cursor() as cur:
            while not done.is_set():
                cur.execute(on_table("SELECT count(*) FROM {table} WHERE cache_key = %s"), (KEY,))
                row_counts.append(cur.fetchone()[0])
        conn.close()

    readers = [threading.Thread(target=reader) for _ in range(3)]
    readers.append(threading.Thread(target=sql_reader))
    refreshers = [threading.Thread(target=refresher) for _ in range(4)]
    try:
        for thread in readers + refreshers:
            thread.start()
        for thread in refreshers:
            thread.join()
    finally:
        done.set()
        for thread in readers:
            thread.join()
        server.stop()
        app.extensions["dashboard_api"].close()

    assert len(refreshes) == 200
    assert {(status, body["cached"]) for status, body in refreshes} == {(200, False)}
    # Refreshes really recomputed (those that queued behind one share its copy).
    assert len({body["generated_at"] for _, body in refreshes}) >= 20
    assert len(reads) >= 50
    assert set(reads) == {(200, True)}
    assert len(row_counts) >= 50
    assert set(row_counts) == {1}
