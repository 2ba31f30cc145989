"""The change record: every insert, update and delete bumps its key's version, once per
statement, and the reference change key moves with it and with the UTC day."""

from __future__ import annotations

import datetime as dt
import re
import select
from pathlib import Path

import psycopg2
import pytest

from dashboard_api import changes

from .conftest import ALICE, BOB, days_ago, fetch

ROOT = Path(__file__).resolve().parents[2]
CAROL = "5d0f4c3e-1b2a-4c5d-8e9f-0a1b2c3d4e5f"
BLOCK = re.compile(r"-- change record: begin.*?-- change record: end\n", re.S)


@pytest.fixture
def two_shops(shop):
    shop.connect(ALICE, "shopify", "amazon")
    shop.connect(BOB, "amazon")
    for client, platform in ((ALICE, "shopify"), (ALICE, "amazon"), (BOB, "amazon")):
        shop.item(client, platform, "S1", on_hand=5, cost="1.00", price="2.00")
        shop.order(client, platform, f"{platform}-1", days_ago(2), ("S1", 1, "2.00"))
        shop.order(client, platform, f"{platform}-2", days_ago(1), ("S1", 2, "2.00"))


def moved(before: dict, after: dict) -> set:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def versions(conn) -> dict:
    rows = fetch(conn, "SELECT client_id::text, platform, version FROM refresh_requests")
    return {(c, p): v for c, p, v in rows}


def test_both_schemas_define_the_same_change_record():
    runner = (ROOT / "analytics_refresh" / "store" / "sql" / "runner_schema.sql").read_text()
    api = (ROOT / "dashboard_api" / "schema.sql").read_text()
    assert BLOCK.findall(runner) == BLOCK.findall(api)
    assert len(BLOCK.findall(api)) == 1


def test_deleting_an_old_row_moves_the_key(db, two_shops):
    keys = changes.change_keys(db)
    with db.cursor() as cur:
        # Not the newest line: max(updated_at) would not move.
        cur.execute("DELETE FROM order_lines WHERE client_id = %s AND order_id = 'amazon-1'",
                    (ALICE,))  # fmt: skip

    assert moved(keys, changes.change_keys(db)) == {(ALICE, "amazon")}


def test_deleting_stock_and_updating_lines_move_their_keys(db, two_shops):
    keys = changes.change_keys(db)
    with db.cursor() as cur:
        cur.execute("DELETE FROM inventory_items WHERE client_id = %s", (BOB,))
    after_delete = changes.change_keys(db)
    with db.cursor() as cur:
        cur.execute("UPDATE order_lines SET quantity = 9 WHERE client_id = %s AND platform = "
                    "'shopify'", (ALICE,))  # fmt: skip

    assert moved(keys, after_delete) == {(BOB, "amazon")}
    assert moved(after_delete, changes.change_keys(db)) == {(ALICE, "shopify")}


def test_a_truncate_moves_every_key(db, two_shops):
    keys = changes.change_keys(db)
    with db.cursor() as cur:
        cur.execute("TRUNCATE inventory_items")
    assert moved(keys, changes.change_keys(db)) == set(keys)


def test_a_row_moved_to_another_key_moves_both(db, two_shops):
    keys = changes.change_keys(db)
    with db.cursor() as cur:
        cur.execute("UPDATE order_lines SET client_id = %s WHERE client_id = %s AND platform = "
                    "'amazon' AND order_id = 'amazon-1'", (BOB, ALICE))  # fmt: skip

    assert moved(keys, changes.change_keys(db)) == {(ALICE, "amazon"), (BOB, "amazon")}


def test_a_late_commit_with_an_older_stamp_moves_the_key(db, db_url, two_shops):
    late = psycopg2.connect(db_url)
    try:
        with late.cursor() as cur:
            cur.execute("SELECT now()")  # its transaction, and its stamps, start here
        # Another writer commits a newer row of the same key meanwhile.
        with db.cursor() as cur:
            cur.execute("UPDATE inventory_items SET on_hand = 7 WHERE client_id = %s", (BOB,))
        read = changes.change_keys(db)
        with late.cursor() as cur:
            cur.execute(
                "INSERT INTO order_lines (client_id, platform, order_id, sku, quantity,"
                " unit_price, ordered_at) VALUES (%s, 'amazon', 'late', 'S1', 1, 2, now())",
                (BOB,),
            )
        late.commit()
    finally:
        late.close()
    [(late_stamp, newest)] = fetch(
        db,
        "SELECT min(updated_at) FILTER (WHERE order_id = 'late'), max(updated_at) FROM ("
        " SELECT order_id, updated_at FROM order_lines WHERE client_id = %s UNION ALL"
        " SELECT sku, updated_at FROM inventory_items WHERE client_id = %s) AS t",
        BOB,
        BOB,
    )
    assert late_stamp < newest  # the stamp alone would say nothing changed since the read

    assert moved(read, changes.change_keys(db)) == {(BOB, "amazon")}


def test_equal_histories_give_equal_keys_whatever_the_commit_order(db, db_url, shop):
    # Two keys with the same changes, committed in opposite orders of their start.
    shop.connect(ALICE, "amazon")
    shop.connect(BOB, "amazon")
    first, second = psycopg2.connect(db_url), psycopg2.connect(db_url)
    try:
        for client, (early, later) in ((ALICE, (first, second)), (BOB, (second, first))):
            with early.cursor() as cur:
                cur.execute("SELECT now()")
            with later.cursor() as cur:
                cur.execute("INSERT INTO inventory_items (client_id, platform, sku) VALUES "
                            "(%s, 'amazon', 'A')", (client,))  # fmt: skip
            later.commit()
            with early.cursor() as cur:
                cur.execute("INSERT INTO inventory_items (client_id, platform, sku) VALUES "
                            "(%s, 'amazon', 'B')", (client,))  # fmt: skip
            early.commit()
    finally:
        first.close()
        second.close()

    keys = changes.change_keys(db)
    assert keys[(ALICE, "amazon")] == keys[(BOB, "amazon")]
    assert keys[(ALICE, "amazon")].startswith("v2/")


def test_one_statement_bumps_each_key_it_touched_once(db, shop):
    shop.connect(ALICE, "shopify", "amazon")
    shop.connect(BOB, "amazon")
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO order_lines (client_id, platform, order_id, sku, quantity, unit_price,"
            " ordered_at) SELECT c, p, 'O' || n, 'S', 1, 1, now()"
            " FROM unnest(%s::uuid[], %s::text[]) AS k(c, p), generate_series(1, 500) AS n",
            ([ALICE, ALICE, BOB], ["shopify", "amazon", "amazon"]),
        )
    assert versions(db) == {(ALICE, "shopify"): 1, (ALICE, "amazon"): 1, (BOB, "amazon"): 1}
    with db.cursor() as cur:
        cur.execute("DELETE FROM order_lines WHERE platform = 'amazon'")
    assert versions(db) == {(ALICE, "shopify"): 1, (ALICE, "amazon"): 2, (BOB, "amazon"): 2}


def test_a_statement_that_touches_nothing_bumps_nothing(db, two_shops):
    before = versions(db)
    with db.cursor() as cur:
        cur.execute("DELETE FROM order_lines WHERE client_id = %s", (CAROL,))
        cur.execute("UPDATE inventory_items SET on_hand = 1 WHERE sku = 'none'")
    assert versions(db) == before


def test_the_request_function_records_and_wakes(db, db_url):
    listener = psycopg2.connect(db_url)
    listener.autocommit = True
    try:
        with listener.cursor() as cur:
            cur.execute("LISTEN analytics_refresh")
        with db.cursor() as cur:
            cur.execute("SELECT analytics_refresh_request(%s, 'shopify')", (ALICE,))
            cur.execute("SELECT analytics_refresh_request(%s)", (BOB,))
            cur.execute("SELECT analytics_refresh_request(%s)", (BOB,))
        payloads = set()
        while len(payloads) < 2 and select.select([listener], [], [], 5) != ([], [], []):
            listener.poll()
            payloads |= {n.payload for n in listener.notifies}
    finally:
        listener.close()

    assert payloads == {f"{ALICE}:shopify", f"{BOB}:*"}
    assert versions(db) == {(ALICE, "shopify"): 1, (BOB, "shopify"): 2, (BOB, "amazon"): 2}
    [(pending, requested)] = fetch(
        db, "SELECT bool_and(pending_since <= requested_at), count(*) FROM refresh_requests"
    )
    assert pending
    assert requested == 3


def test_the_request_function_names_what_is_wrong(db):
    with db.cursor() as cur:
        with pytest.raises(psycopg2.errors.RaiseException, match="platform must be shopify"):
            cur.execute("SELECT analytics_refresh_request(%s, 'ebay')", (ALICE,))
        with pytest.raises(psycopg2.errors.RaiseException, match="client_id must not be NULL"):
            cur.execute("SELECT analytics_refresh_request(NULL)")


def keys_at(conn, moment: str) -> dict:
    """The change keys as the query reads them when the database's clock says ``moment``."""
    with conn.cursor() as cur:
        # A now() ahead of pg_catalog's in the search path: the query's own clock, moved.
        cur.execute("CREATE SCHEMA IF NOT EXISTS moved_clock")
        cur.execute(
            "CREATE OR REPLACE FUNCTION moved_clock.now() RETURNS timestamptz"
            f" LANGUAGE sql AS $$ SELECT '{moment}'::timestamptz $$"
        )
        cur.execute("SET search_path = moved_clock, pg_catalog, public")
        try:
            return changes.change_keys(conn)
        finally:
            cur.execute("RESET search_path")


def test_the_key_changes_at_midnight_utc_and_not_before(db, two_shops):
    evening = keys_at(db, "2026-12-02 00:00:00+00")
    late = keys_at(db, "2026-12-02 23:59:59.999+00")
    # Midnight UTC is 09:00 in Tokyo: the session's zone does not move the boundary.
    with db.cursor() as cur:
        cur.execute("SET TIME ZONE 'Asia/Tokyo'")
    tokyo_morning = keys_at(db, "2026-12-03 08:59:59+09")
    after = keys_at(db, "2026-12-03 00:00:00+00")

    assert evening == late == tokyo_morning
    assert moved(late, after) == set(late)
    assert all(key.endswith("/2026-12-03") for key in after.values())


def test_the_window_end_in_the_key_is_the_answers(db, two_shops, client, auth):
    answer = client.get(
        "/api/dashboard/inventory-analytics",
        query_string={"client_id": ALICE, "platform": "amazon"},
        headers=auth(),
    ).get_json()
    key = changes.change_keys(db)[(ALICE, "amazon")]
    assert key.endswith("/" + answer["window"]["end"])
    assert dt.date.fromisoformat(answer["window"]["end"]) == dt.datetime.now(dt.timezone.utc).date()
