"""The schema init and the demo data: deterministic, idempotent, and what the API serves."""

from __future__ import annotations

import datetime as dt

import pytest
from psycopg2 import sql

from dashboard_api import cache, demo
from dashboard_api.db import init_schema

from .conftest import fetch

DAY = dt.date(2024, 1, 15)
SIZES = {"skus": 12, "orders_per_day": 4, "seed": 3, "today": DAY}
FINGERPRINT = """
    SELECT md5(string_agg(concat_ws('|', client_id, platform, order_id, sku, quantity,
                                     unit_price, ordered_at), ',' ORDER BY order_id, sku)),
           count(*), min(ordered_at), max(ordered_at)
    FROM order_lines
"""


def test_init_schema_creates_every_table_twice_over(empty):
    init_schema(empty)
    init_schema(empty)

    tables = fetch(empty, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    assert sorted(name for (name,) in tables) == [
        "client_api_credentials",
        "inventory_items",
        "order_lines",
        "refresh_requests",
    ]
    [(definition,)] = fetch(
        empty, "SELECT indexdef FROM pg_indexes WHERE indexname = 'order_lines_window_idx'"
    )
    assert "(client_id, platform, ordered_at, order_id) INCLUDE (sku, quantity, unit_price)" in (
        definition
    )


def test_demo_clients_cover_every_profile(empty):
    ids = demo.load_demo(empty, clients=5, **SIZES)

    every = [demo.client_id(index) for index in range(5)]
    assert ids == [every[0], every[1], every[2], every[4]]
    credentials = fetch(
        empty,
        "SELECT client_id::text, platform, status FROM client_api_credentials"
        " ORDER BY client_id, platform",
    )
    assert sorted(credentials) == sorted(
        [
            (every[0], "amazon", "connected"),
            (every[0], "shopify", "connected"),
            (every[1], "shopify", "connected"),
            (every[2], "amazon", "connected"),
            (every[3], "shopify", "disconnected"),
            (every[4], "amazon", "connected"),
            (every[4], "shopify", "connected"),
        ]
    )
    stock = fetch(
        empty,
        "SELECT client_id::text, platform, count(*) FROM inventory_items GROUP BY 1, 2",
    )
    assert {count for _, _, count in stock} == {12}
    assert len(stock) == len(credentials)
    _, lines, first, last = fetch(empty, FINGERPRINT)[0]
    assert lines > 0
    assert first.date() >= DAY - dt.timedelta(days=demo.HISTORY_DAYS - 1)
    assert last.date() <= DAY


def test_demo_data_is_deterministic(empty, db):
    demo.load_demo(empty, clients=2, **SIZES)
    demo.load_demo(db, clients=2, **SIZES)
    assert fetch(empty, FINGERPRINT) == fetch(db, FINGERPRINT)


def test_loading_again_reuses_or_replaces_never_duplicates(empty):
    first = demo.load_demo(empty, clients=4, **SIZES)
    before = fetch(empty, FINGERPRINT)
    # A cached dashboard survives a reload with the same sizes, and only then.
    cache.ensure_table(empty, first[0])
    table = sql.Identifier(cache.table_name(first[0])).as_string(empty)

    assert demo.load_demo(empty, clients=4, **SIZES) == first
    assert fetch(empty, FINGERPRINT) == before
    assert fetch(empty, "SELECT to_regclass(%s) IS NOT NULL", table) == [(True,)]

    demo.load_demo(empty, clients=4, **{**SIZES, "orders_per_day": 8})
    after = fetch(empty, FINGERPRINT)
    assert after[0][1] > before[0][1]
    assert fetch(empty, "SELECT to_regclass(%s) IS NOT NULL", table) == [(False,)]
    assert fetch(empty, "SELECT count(*) FROM client_api_credentials") == [(5,)]
    assert fetch(empty, "SELECT count(*) FROM inventory_items") == [(12 * 5,)]


def test_api_serves_a_demo_client(client, auth, db):
    both, *_ = demo.load_demo(db, clients=1, skus=30, orders_per_day=6, seed=1)

    answer = client.get(
        "/api/dashboard/inventory-analytics",
        query_string={"client_id": both, "platform": "all", "force_refresh": "true"},
        headers=auth(both),
    )

    assert answer.status_code == 200
    body = answer.get_json()
    assert body["platforms"] == ["amazon", "shopify"]
    assert body["sku_count"] == len(body["skus"]) == 60
    assert body["kpis"]["orders"] > 0
    assert {row["status"] for row in body["skus"]} >= {"healthy", "dead_stock"}


def test_command_line_loads_and_prints_the_clients(empty_db_url, capsys):
    argv = ["--database-url", empty_db_url, "--clients", "3", "--skus", "5"]
    assert demo.main([*argv, "--orders-per-day", "2"], environ={}) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("3 connected demo clients, ")
    assert printed[1:] == [demo.client_id(index) for index in range(3)]


def test_command_line_needs_a_database(capsys):
    with pytest.raises(SystemExit) as exit_:
        demo.main(["--clients", "2"], environ={})
    assert exit_.value.code == 2
    assert "--database-url" in capsys.readouterr().err
