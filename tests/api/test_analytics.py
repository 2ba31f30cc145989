"""The dashboard's numbers, against a small shop worked out by hand.

Alice sells on both platforms. In the last 30 days (current window):

    shopify  S-1  1 day ago    S1 6 x 10.00 + S2 10 x 12.50       = 185.00
             S-2  5 days ago   S2 20 x 12.50 + S3 30 x 6.00       = 430.00
             S-3  12 days ago  S4 15 x 3.00                       =  45.00
    amazon   A-1  2 days ago   A1 20 x 25.00                      = 500.00
             A-2  2 days ago   X 1 x 40.00 (X is not in stock)    =  40.00

In the 30 days before (previous window): shopify S-0 40 days ago (S5 2 x 9.00 + S3 10 x
6.00 = 78.00), amazon A-0 45 days ago (A1 4 x 25.00 = 100.00). An order 70 days ago and
Bob's orders must count nowhere.
"""

from __future__ import annotations

import datetime as dt

import pytest

from .conftest import ALICE, BOB, days_ago, today

URL = "/api/dashboard/inventory-analytics"

# (platform, sku, on hand, unit cost, unit price)
STOCK = [
    ("shopify", "S1", 0, "4.00", "10.00"),
    ("shopify", "S2", 10, "5.00", "12.50"),
    ("shopify", "S3", 50, "2.00", "6.00"),
    ("shopify", "S4", 200, "1.00", "3.00"),
    ("shopify", "S5", 7, "3.00", "9.00"),
    ("amazon", "A1", 30, "10.00", "25.00"),
]


@pytest.fixture
def alice(shop):
    shop.connect(ALICE, "shopify", "amazon")
    for platform, sku, on_hand, cost, price in STOCK:
        shop.item(ALICE, platform, sku, on_hand=on_hand, cost=cost, price=price)
    shop.order(ALICE, "shopify", "S-1", days_ago(1), ("S1", 6, "10.00"), ("S2", 10, "12.50"))
    shop.order(ALICE, "shopify", "S-2", days_ago(5), ("S2", 20, "12.50"), ("S3", 30, "6.00"))
    shop.order(ALICE, "shopify", "S-3", days_ago(12), ("S4", 15, "3.00"))
    shop.order(ALICE, "amazon", "A-1", days_ago(2, 9), ("A1", 20, "25.00"))
    shop.order(ALICE, "amazon", "A-2", days_ago(2, 17), ("X", 1, "40.00"))
    shop.order(ALICE, "shopify", "S-0", days_ago(40), ("S5", 2, "9.00"), ("S3", 10, "6.00"))
    shop.order(ALICE, "amazon", "A-0", days_ago(45), ("A1", 4, "25.00"))
    shop.order(ALICE, "shopify", "S-old", days_ago(70), ("S3", 100, "6.00"))
    # Bob sells the same SKUs; none of it is Alice's.
    shop.connect(BOB, "shopify")
    shop.item(BOB, "shopify", "S1", on_hand=999, cost="1.00", price="2.00")
    shop.order(BOB, "shopify", "S-1", days_ago(1), ("S1", 500, "2.00"))


def dashboard(client, auth, platform, **params):
    answer = client.get(
        URL,
        query_string={"client_id": ALICE, "platform": platform, "force_refresh": "true", **params},
        headers=auth(),
    )
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def test_all_platforms_kpis(client, auth, alice):
    body = dashboard(client, auth, "all")

    assert body["client_id"] == ALICE
    assert body["platform"] == "all"
    assert body["platforms"] == ["amazon", "shopify"]
    assert body["cached"] is False
    cogs = 6 * 4 + 30 * 5 + 30 * 2 + 15 * 1 + 20 * 10  # X has no known cost
    stock_value = 10 * 5 + 50 * 2 + 200 * 1 + 7 * 3 + 30 * 10
    turnover = cogs / (stock_value + cogs / 2)
    assert body["kpis"] == {
        "total_sales": 1200.0,
        "units_sold": 6 + 10 + 20 + 30 + 15 + 20 + 1,
        "orders": 5,
        "average_order_value": 240.0,
        "inventory_units": 0 + 10 + 50 + 200 + 7 + 30,
        "inventory_value": 671.0,
        "cost_of_goods_sold": 449.0,
        "turnover_rate": round(turnover, 4),
        "days_of_inventory": round(30 / turnover, 1),
        "sku_status": {
            "out_of_stock": 2,
            "low_stock": 1,
            "healthy": 2,
            "overstock": 1,
            "dead_stock": 1,
        },
    }
    assert body["kpis"]["turnover_rate"] == 0.5014
    assert body["kpis"]["days_of_inventory"] == 59.8


def test_sku_rows_and_statuses(client, auth, alice):
    body = dashboard(client, auth, "all")

    rows = {(row["platform"], row["sku"]): row for row in body["skus"]}
    assert body["sku_count"] == len(body["skus"]) == 7
    expected = {
        # (units sold, sales, on hand, stock value, days of cover, status)
        ("shopify", "S1"): (6, 60.0, 0, 0.0, 0.0, "out_of_stock"),
        ("shopify", "S2"): (30, 375.0, 10, 50.0, 10.0, "low_stock"),
        ("shopify", "S3"): (30, 180.0, 50, 100.0, 50.0, "healthy"),
        ("shopify", "S4"): (15, 45.0, 200, 200.0, 400.0, "overstock"),
        ("shopify", "S5"): (0, 0.0, 7, 21.0, None, "dead_stock"),
        ("amazon", "A1"): (20, 500.0, 30, 300.0, 45.0, "healthy"),
        ("amazon", "X"): (1, 40.0, 0, 0.0, 0.0, "out_of_stock"),
    }
    got = {
        key: (
            row["units_sold"],
            row["sales"],
            row["stock_on_hand"],
            row["stock_value"],
            row["days_of_cover"],
            row["status"],
        )
        for key, row in rows.items()
    }
    assert got == expected
    assert rows[("shopify", "S2")]["title"] == "Title of S2"
    assert rows[("amazon", "X")]["title"] == ""
    # Best sellers first.
    assert [row["sku"] for row in body["skus"]][:3] == ["A1", "S2", "S3"]


def test_trends_daily_series_and_growth(client, auth, alice):
    body = dashboard(client, auth, "all")

    daily = body["trends"]["daily"]
    assert len(daily) == 30
    assert daily[0]["date"] == str(days_ago(29).date())
    assert daily[-1]["date"] == str(today())
    busy = {r["date"]: (r["sales"], r["units"], r["orders"]) for r in daily if r["units"]}
    assert busy == {
        str(days_ago(1).date()): (185.0, 16, 1),
        str(days_ago(2).date()): (540.0, 21, 2),
        str(days_ago(5).date()): (430.0, 50, 1),
        str(days_ago(12).date()): (45.0, 15, 1),
    }
    assert body["trends"]["previous"] == {"total_sales": 178.0, "units_sold": 16, "orders": 2}
    assert body["trends"]["growth"] == {
        "sales_pct": round(100 * (1200 - 178) / 178, 2),
        "units_pct": 537.5,
        "orders_pct": 150.0,
    }
    assert body["window"] == {
        "days": 30,
        "start": str(days_ago(29).date()),
        "end": str(today()),
        "previous_start": str(days_ago(59).date()),
        "previous_end": str(days_ago(30).date()),
    }


def test_platform_comparison_shares(client, auth, alice):
    body = dashboard(client, auth, "all")

    assert body["platform_comparison"] == [
        {
            "platform": "amazon",
            "total_sales": 540.0,
            "units_sold": 21,
            "orders": 2,
            "inventory_units": 30,
            "inventory_value": 300.0,
            "sales_share_pct": 45.0,
            "units_share_pct": round(100 * 21 / 102, 2),
            "stock_share_pct": round(100 * 30 / 297, 2),
        },
        {
            "platform": "shopify",
            "total_sales": 660.0,
            "units_sold": 81,
            "orders": 3,
            "inventory_units": 267,
            "inventory_value": 371.0,
            "sales_share_pct": 55.0,
            "units_share_pct": round(100 * 81 / 102, 2),
            "stock_share_pct": round(100 * 267 / 297, 2),
        },
    ]


def test_one_platform(client, auth, alice):
    body = dashboard(client, auth, "shopify")

    assert body["platforms"] == ["shopify"]
    assert body["platform_comparison"] is None
    assert {row["platform"] for row in body["skus"]} == {"shopify"}
    assert body["sku_count"] == 5
    kpis = body["kpis"]
    assert (kpis["total_sales"], kpis["units_sold"], kpis["orders"]) == (660.0, 81, 3)
    assert (kpis["inventory_units"], kpis["inventory_value"]) == (267, 371.0)
    assert kpis["cost_of_goods_sold"] == 249.0
    assert kpis["turnover_rate"] == round(249 / (371 + 249 / 2), 4)
    assert body["trends"]["previous"] == {"total_sales": 78.0, "units_sold": 12, "orders": 1}
    assert body["trends"]["growth"]["orders_pct"] == 200.0


def test_all_with_one_connected_platform_still_compares(client, auth, alice, db):
    with db.cursor() as cur:
        cur.execute("UPDATE client_api_credentials SET status = 'disconnected'"
                    " WHERE client_id = %s AND platform = 'shopify'", (ALICE,))  # fmt: skip

    body = dashboard(client, auth, "all")

    assert body["platforms"] == ["amazon"]
    assert body["kpis"]["total_sales"] == 540.0
    [amazon] = body["platform_comparison"]
    assert amazon["platform"] == "amazon"
    shares = (amazon["sales_share_pct"], amazon["units_share_pct"], amazon["stock_share_pct"])
    assert shares == (100.0, 100.0, 100.0)


def test_window_edges_are_whole_utc_days(client, auth, shop):
    shop.connect(ALICE, "amazon")
    shop.item(ALICE, "amazon", "E", on_hand=1, cost="1.00", price="1.00")
    tick = dt.timedelta(microseconds=1)
    first, previous_first = days_ago(6, 0), days_ago(13, 0)  # a 7-day window and the one before
    shop.order(ALICE, "amazon", "first", first, ("E", 1, "1.00"))
    shop.order(ALICE, "amazon", "just-before", first - tick, ("E", 2, "1.00"))
    shop.order(ALICE, "amazon", "previous-first", previous_first, ("E", 4, "1.00"))
    shop.order(ALICE, "amazon", "too-old", previous_first - tick, ("E", 8, "1.00"))

    body = dashboard(client, auth, "amazon", days="7")

    assert body["window"]["days"] == 7
    assert len(body["trends"]["daily"]) == 7
    assert body["kpis"]["units_sold"] == 1
    assert body["trends"]["previous"]["units_sold"] == 2 + 4


def test_empty_shop_has_no_ratios(client, auth, shop):
    shop.connect(ALICE, "shopify")

    body = dashboard(client, auth, "shopify")

    assert body["skus"] == []
    assert body["sku_count"] == 0
    assert body["kpis"]["total_sales"] == 0
    assert body["kpis"]["average_order_value"] is None
    assert body["kpis"]["turnover_rate"] is None
    assert body["kpis"]["days_of_inventory"] is None
    assert body["trends"]["growth"] == {"sales_pct": None, "units_pct": None, "orders_pct": None}
    assert all(row["units"] == 0 for row in body["trends"]["daily"])
