"""The inventory dashboard: KPIs, per-SKU status, trends and a platform comparison.

PostgreSQL does the work over the rows (``analytics.sql``, two passes over the window);
Python only combines the few per-platform totals it answers into ratios.

Definitions (the window is ``days`` whole UTC days ending today, compared with the
``days`` before it):

- cost of goods sold (COGS): units sold x the SKU's unit cost;
- turnover rate: COGS / average inventory value at cost, where the average is taken
  between the window's end (stock on hand now) and its start, estimated as stock on hand
  plus the units sold since (receipts are not recorded);
- days of inventory: ``days`` / turnover rate;
- a SKU's days of cover: stock on hand / (units sold / ``days``);
- a SKU's status, first match wins: ``out_of_stock`` (nothing on hand), ``dead_stock``
  (on hand, nothing sold in the window), ``low_stock`` (under ``LOW_STOCK_DAYS`` of
  cover), ``overstock`` (over ``OVERSTOCK_DAYS`` of cover), else ``healthy``;
- growth: change against the previous period in percent, null when that period is zero.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from .db import read_sql

DEFAULT_DAYS = 30
MAX_DAYS = 365
LOW_STOCK_DAYS = 14
OVERSTOCK_DAYS = 90
STATUSES = ("out_of_stock", "low_stock", "healthy", "overstock", "dead_stock")
DASHBOARD_SQL = read_sql("analytics.sql")
# The two passes hash and group a few hundred thousand rows: give them memory for it, and
# cost random reads like an SSD so the index's ordering (which spares a sort) is used.
TUNING = ("SET LOCAL work_mem = '64MB'", "SET LOCAL random_page_cost = 1.1")


@dataclass(frozen=True)
class Window:
    """``days`` whole UTC days ending with ``today``, and as many days before them."""

    days: int
    today: dt.date

    @classmethod
    def ending_today(cls, days: int = DEFAULT_DAYS) -> Window:
        return cls(days, dt.datetime.now(dt.timezone.utc).date())

    @property
    def first_day(self) -> dt.date:
        return self.today - dt.timedelta(days=self.days - 1)

    @property
    def previous_first_day(self) -> dt.date:
        return self.first_day - dt.timedelta(days=self.days)

    def as_json(self) -> dict:
        return {
            "days": self.days,
            "start": self.first_day.isoformat(),
            "end": self.today.isoformat(),
            "previous_start": self.previous_first_day.isoformat(),
            "previous_end": (self.first_day - dt.timedelta(days=1)).isoformat(),
        }


@dataclass(frozen=True)
class Dashboard:
    """A computed dashboard: its fields, and its SKU list as PostgreSQL wrote it in JSON."""

    fields: dict
    skus_json: str

    def to_json(self, **head) -> str:
        """Return the whole dashboard as JSON text, the ``head`` fields first."""
        # The SKU list runs to megabytes at 10k SKUs: it goes from PostgreSQL's text into
        # the answer as it is, instead of being parsed and serialised again.
        text = json.dumps({**head, **self.fields})
        return f'{text[:-1]}, "skus": {self.skus_json}}}'


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.timezone.utc)


def compute(
    conn, client_id: str, platforms: list[str], window: Window, *, compare: bool = False
) -> Dashboard:
    """Return the dashboard of ``client_id`` on ``platforms`` over ``window``.

    With ``compare``, ``platform_comparison`` holds each platform's share; else it is None.
    """
    params = {
        "client_id": client_id,
        "platforms": list(platforms),
        "previous_start": _midnight(window.previous_first_day),
        "current_start": _midnight(window.first_day),
        "end_at": _midnight(window.today + dt.timedelta(days=1)),
        "first_day": window.first_day,
        "last_day": window.today,
        "days": window.days,
        "low_stock_days": LOW_STOCK_DAYS,
        "overstock_days": OVERSTOCK_DAYS,
    }
    with conn.cursor() as cur:
        for statement in TUNING:
            cur.execute(statement)
        cur.execute(DASHBOARD_SQL, params)
        per_platform, daily, skus_json, sku_count = cur.fetchone()
    totals = _sum(per_platform)
    fields = {
        "window": window.as_json(),
        "kpis": _kpis(totals, window.days),
        "sku_count": sku_count,
        "trends": {
            "daily": daily,
            "previous": {
                "total_sales": _money(totals["previous_sales"]),
                "units_sold": totals["previous_units"],
                "orders": totals["previous_orders"],
            },
            "growth": {
                "sales_pct": _growth(totals["sales"], totals["previous_sales"]),
                "units_pct": _growth(totals["units"], totals["previous_units"]),
                "orders_pct": _growth(totals["orders"], totals["previous_orders"]),
            },
        },
        "platform_comparison": _comparison(per_platform, totals) if compare else None,
    }
    return Dashboard(fields, skus_json)


def _sum(per_platform: list[dict]) -> dict:
    numbers = [key for key in per_platform[0] if key not in ("platform", "statuses")]
    totals = {key: sum(row[key] for row in per_platform) for key in numbers}
    totals["statuses"] = {
        status: sum(row["statuses"].get(status, 0) for row in per_platform) for status in STATUSES
    }
    return totals


def _kpis(totals: dict, days: int) -> dict:
    cogs = totals["cogs"]
    average_value = totals["inventory_value"] + cogs / 2
    turnover = cogs / average_value if average_value else None
    return {
        "total_sales": _money(totals["sales"]),
        "units_sold": totals["units"],
        "orders": totals["orders"],
        "average_order_value": _money(totals["sales"] / totals["orders"])
        if totals["orders"]
        else None,
        "inventory_units": totals["inventory_units"],
        "inventory_value": _money(totals["inventory_value"]),
        "cost_of_goods_sold": _money(cogs),
        "turnover_rate": round(turnover, 4) if turnover is not None else None,
        "days_of_inventory": round(days / turnover, 1) if turnover else None,
        "sku_status": totals["statuses"],
    }


def _comparison(per_platform: list[dict], totals: dict) -> list[dict]:
    return [
        {
            "platform": row["platform"],
            "total_sales": _money(row["sales"]),
            "units_sold": row["units"],
            "orders": row["orders"],
            "inventory_units": row["inventory_units"],
            "inventory_value": _money(row["inventory_value"]),
            "sales_share_pct": _share(row["sales"], totals["sales"]),
            "units_share_pct": _share(row["units"], totals["units"]),
            "stock_share_pct": _share(row["inventory_units"], totals["inventory_units"]),
        }
        for row in per_platform
    ]


def _money(amount: float) -> float:
    return round(amount, 2)


def _share(part: float, whole: float) -> float | None:
    return round(100 * part / whole, 2) if whole else None


def _growth(current: float, previous: float) -> float | None:
    return round(100 * (current - previous) / previous, 2) if previous else None
