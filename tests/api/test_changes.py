"""Rows record when they were written; the change query sees exactly the keys that moved."""

from __future__ import annotations

import datetime as dt
import re

import psycopg2
import pytest

from dashboard_api import changes, demo
from dashboard_api.db import init_schema

from .conftest import ALICE, BOB, days_ago, fetch

DAY = dt.date(2024, 1, 15)
SIZES = {"skus": 12, "orders_per_day": 4, "seed": 3, "today": DAY}
# The tables as installs before the updated_at stamps had them.
OLD_SCHEMA = """
CREATE TABLE client_api_credentials (
    id bigserial PRIMARY KEY, client_id uuid NOT NULL, platform text NOT NULL,
    status text NOT NULL DEFAULT 'connected', credentials jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (client_id, platform)
);
CREATE TABLE inventory_items (
    client_id uuid NOT NULL, platform text NOT NULL, sku text NOT NULL,
    title text NOT NULL DEFAULT '', on_hand integer NOT NULL DEFAULT 0,
    unit_cost numeric(12, 2) NOT NULL DEFAULT 0, unit_price numeric(12, 2) NOT NULL DEFAULT 0,
    PRIMARY KEY (client_id, platform, sku)
);
CREATE TABLE order_lines (
    client_id uuid NOT NULL, platform text NOT NULL, order_id text NOT NULL,
    sku text NOT NULL, quantity integer NOT NULL, unit_price numeric(12, 2) NOT NULL,
    ordered_at timestamptz NOT NULL
);
"""


@pytest.fixture
def two_shops(shop):
    shop.connect(ALICE, "shopify", "amazon")
    shop.connect(BOB, "amazon")
    for client, platform in ((ALICE, "shopify"), (ALICE, "amazon"), (BOB, "amazon")):
        shop.item(client, platform, "S1", on_hand=5, cost="1.00", price="2.00")
        shop.order(client, platform, f"{platform}-1", days_ago(2), ("S1", 1, "2.00"))


def test_an_old_install_upgrades_in_place(empty):
    with empty.cursor() as cur:
        cur.execute(OLD_SCHEMA)
        cur.execute(
            "INSERT INTO order_lines VALUES (%s, 'shopify', 'O-1', 'S1', 1, 2, now())", (ALICE,)
        )
        cur.execute(
            "INSERT INTO inventory_items (client_id, platform, sku) VALUES (%s, 'shopify', 'S1')",
            (ALICE,),
        )
    empty.commit()

    init_schema(empty)
    init_schema(empty)

    for table in ("order_lines", "inventory_items"):
        [(stamped, total)] = fetch(empty, f"SELECT count(updated_at), count(*) FROM {table}")  # noqa: S608
        assert stamped == total == 1
        [(nullable, default)] = fetch(
            empty,
            "SELECT is_nullable, column_default FROM information_schema.columns"
            " WHERE table_name = %s AND column_name = 'updated_at'",
            table,
        )
        assert (nullable, default) == ("NO", "now()")
    indexes = {name for (name,) in fetch(empty, "SELECT indexname FROM pg_indexes")}
    assert {"order_lines_changed_idx", "inventory_items_changed_idx"} <= indexes
    triggers = fetch(empty, "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1")
    assert triggers == [
        (f"{table}_{name}",)
        for table in ("inventory_items", "order_lines")
        for name in ("request_refresh_delete", "request_refresh_insert", "request_refresh_truncate",
                     "request_refresh_update", "touch_updated_at")
    ]  # fmt: skip


def test_an_update_stamps_the_row_unless_it_sets_the_stamp(db, two_shops):
    before = fetch(db, "SELECT updated_at FROM inventory_items WHERE client_id = %s", BOB)[0][0]
    with db.cursor() as cur:
        cur.execute("UPDATE inventory_items SET on_hand = 4 WHERE client_id = %s", (BOB,))
    after = fetch(db, "SELECT updated_at FROM inventory_items WHERE client_id = %s", BOB)[0][0]
    assert after > before

    chosen = dt.datetime(2020, 5, 1, tzinfo=dt.timezone.utc)
    with db.cursor() as cur:
        cur.execute("UPDATE order_lines SET quantity = 2, updated_at = %s WHERE client_id = %s",
                    (chosen, BOB))  # fmt: skip
    assert fetch(db, "SELECT updated_at FROM order_lines WHERE client_id = %s", BOB) == [(chosen,)]


def test_change_keys_cover_connected_keys_and_stay_put(db, two_shops, shop):
    shop.connect("11111111-2222-4333-8444-555555555555", "shopify", status="disconnected")

    keys = changes.change_keys(db)

    assert set(keys) == {(ALICE, "shopify"), (ALICE, "amazon"), (BOB, "amazon")}
    assert all(re.fullmatch(r"v[1-9][0-9]*/[0-9]{4}-[0-9]{2}-[0-9]{2}", k) for k in keys.values())
    assert changes.change_keys(db) == keys


def test_a_new_order_moves_only_its_own_key(db, two_shops, shop):
    keys = changes.change_keys(db)
    shop.order(ALICE, "amazon", "amazon-2", days_ago(0), ("S1", 1, "2.00"))

    moved = changes.change_keys(db)

    assert {k for k in keys if keys[k] != moved[k]} == {(ALICE, "amazon")}


def test_a_stock_change_moves_only_its_own_key(db, two_shops):
    keys = changes.change_keys(db)
    with db.cursor() as cur:
        cur.execute("UPDATE inventory_items SET on_hand = 0 WHERE client_id = %s", (BOB,))

    moved = changes.change_keys(db)

    assert {k for k in keys if keys[k] != moved[k]} == {(BOB, "amazon")}


def test_the_key_does_not_depend_on_the_sessions_time_zone(db, two_shops):
    keys = changes.change_keys(db)
    with db.cursor() as cur:
        cur.execute("SET TIME ZONE 'Asia/Kathmandu'")
    assert changes.change_keys(db) == keys


def test_the_change_query_reads_the_versions_not_the_lines(db, two_shops):
    with db.cursor() as cur:
        cur.execute(f"EXPLAIN {changes.CHANGE_SQL}")
        plan = "\n".join(line for (line,) in cur.fetchall())
    assert "refresh_requests" in plan
    assert "order_lines" not in plan
    assert "inventory_items" not in plan


def test_add_orders_sells_for_one_client_now_and_moves_only_its_keys(empty):
    ids = demo.load_demo(empty, clients=3, **SIZES)
    keys = changes.change_keys(empty)
    stock_before = fetch(empty, "SELECT sum(on_hand) FROM inventory_items WHERE client_id = %s",
                         ids[0])[0][0]  # fmt: skip
    now = dt.datetime(2024, 1, 15, 12, 30, tzinfo=dt.timezone.utc)

    added = demo.add_orders(empty, ids[0], 3, now=now)

    assert added.client_id == ids[0]
    assert added.platforms == ("amazon", "shopify")
    assert len(added.order_ids) == 6
    assert added.lines >= 6
    lines = fetch(
        empty,
        "SELECT order_id, ordered_at, quantity FROM order_lines WHERE order_id = ANY (%s)",
        list(added.order_ids),
    )
    assert len(lines) == added.lines
    assert {at for _, at, _ in lines} == {now}
    assert sum(quantity for *_, quantity in lines) == added.units
    stock_after = fetch(empty, "SELECT sum(on_hand) FROM inventory_items WHERE client_id = %s",
                        ids[0])[0][0]  # fmt: skip
    assert stock_after < stock_before
    moved = changes.change_keys(empty)
    assert {k for k in keys if keys[k] != moved[k]} == {(ids[0], "amazon"), (ids[0], "shopify")}


def test_add_orders_on_one_platform_and_numbering_on(empty):
    ids = demo.load_demo(empty, clients=1, **SIZES)
    keys = changes.change_keys(empty)

    first = demo.add_orders(empty, ids[0], 2, platform="shopify")
    second = demo.add_orders(empty, ids[0], 1, platform="shopify")

    assert first.platforms == ("shopify",)
    assert first.order_ids == ("SH-LIVE-000001", "SH-LIVE-000002")
    assert second.order_ids == ("SH-LIVE-000003",)
    moved = changes.change_keys(empty)
    assert {k for k in keys if keys[k] != moved[k]} == {(ids[0], "shopify")}


def test_add_orders_is_deterministic(empty_db_url, db_url):
    rows = []
    for url in (empty_db_url, db_url):
        conn = psycopg2.connect(url)
        try:
            [cid] = demo.load_demo(conn, clients=1, **SIZES)
            demo.add_orders(conn, cid, 4, now=dt.datetime(2024, 1, 15, 9, tzinfo=dt.timezone.utc))
            rows.append(fetch(conn, "SELECT order_id, sku, quantity, unit_price FROM order_lines"
                                    " WHERE order_id LIKE '%%LIVE%%' ORDER BY 1, 2"))  # fmt: skip
        finally:
            conn.close()
    assert rows[0] == rows[1]
    assert rows[0]


def test_the_demo_reuses_its_data_with_the_added_orders(empty):
    ids = demo.load_demo(empty, clients=2, **SIZES)
    added = demo.add_orders(empty, ids[1], 2)
    keys = changes.change_keys(empty)

    assert demo.load_demo(empty, clients=2, **SIZES) == ids

    assert changes.change_keys(empty) == keys  # nothing rewritten
    [(count,)] = fetch(empty, "SELECT count(DISTINCT order_id) FROM order_lines"
                              " WHERE order_id = ANY (%s)", list(added.order_ids))  # fmt: skip
    assert count == 2


@pytest.mark.parametrize(
    ("client", "platform", "message"),
    [(3, None, "not connected"), (1, "amazon", "amazon is not connected"),
     (0, "ebay", "ebay is not connected")],
)  # fmt: skip
def test_add_orders_refuses_what_is_not_connected(empty, client, platform, message):
    demo.load_demo(empty, clients=4, **SIZES)
    with pytest.raises(ValueError, match=message):
        demo.add_orders(empty, demo.client_id(client), 1, platform=platform)


def test_new_orders_show_in_the_next_forced_refresh(client, auth, db):
    [cid, *_] = demo.load_demo(db, clients=1, skus=12, orders_per_day=4, seed=3)
    query = {"client_id": cid, "platform": "shopify", "force_refresh": "true", "days": "1"}

    before = client.get("/api/dashboard/inventory-analytics", query_string=query,
                        headers=auth(cid)).get_json()  # fmt: skip
    added = demo.add_orders(db, cid, 5, platform="shopify")
    after = client.get("/api/dashboard/inventory-analytics", query_string=query,
                       headers=auth(cid)).get_json()  # fmt: skip

    assert after["kpis"]["orders"] == before["kpis"]["orders"] + 5
    assert after["kpis"]["units_sold"] == before["kpis"]["units_sold"] + added.units


def test_the_command_prints_the_keys_and_the_plan(db_url, db, two_shops, capsys):
    assert changes.main(["--database-url", db_url], environ={}) == 0
    out = capsys.readouterr().out
    assert f"{BOB}  amazon" in out
    assert "Execution Time" in out
