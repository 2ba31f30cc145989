"""Deterministic demo data: clients, catalogues and 90 days of orders, loaded with COPY.

Clients cycle through four profiles: both platforms, Shopify only, Amazon only, and one
whose only credential is disconnected (the runner must skip it). The same seed and sizes
always give the same rows, relative to today's date. Loading again with the same sizes on
the same day reuses what is there; other sizes, another seed or another day replace the
demo clients' rows (and drop their cached dashboards) instead of adding to them.

``add_orders`` then sells a few more items for one client now, as a shop would between two
refresh runs: its order lines and stock rows get new ``updated_at`` stamps, so the change
query (``changes.CHANGE_SQL``) gives that client's keys new values and no one else's.

    python -m dashboard_api.demo --database-url URL [--clients 4] [--skus 200] ...
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import itertools
import json
import random
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from psycopg2 import sql
from psycopg2.extras import Json

from .cache import table_name
from .config import ConfigError, from_environ
from .db import connect_for_script, init_schema

HISTORY_DAYS = 90
DEFAULT_CLIENTS = 4
DEFAULT_SKUS = 200
DEFAULT_ORDERS_PER_DAY = 40
DEFAULT_SEED = 7
# Fixed, so the demo clients have the same ids on every machine.
NAMESPACE = uuid.UUID("6f1c7d0e-5b1a-4c52-9d7e-3f0a2b8c4d61")
PROFILES = (
    (("shopify", "amazon"), "connected"),
    (("shopify",), "connected"),
    (("amazon",), "connected"),
    (("shopify",), "disconnected"),
)
# Lines per order and units per line, drawn uniformly from these.
LINES_PER_ORDER = (1, 1, 1, 2, 2, 3)
QUANTITIES = (1, 1, 1, 2, 2, 3, 4)
# Share of the catalogue by stock health: (share, lowest, highest days of cover).
COVER_MIX = ((0.06, 0, 0), (0.2, 2, 13), (0.52, 15, 85), (0.22, 100, 300))
COVER_WEIGHTS = tuple(share for share, _, _ in COVER_MIX)
NEVER_SOLD_SHARE = 0.1
ADJECTIVES = ("Classic", "Organic", "Compact", "Deluxe", "Everyday", "Travel", "Vintage", "Smart")
NOUNS = ("Mug", "Backpack", "Lamp", "Notebook", "Candle", "Bottle", "Scarf", "Speaker", "Planter")

FIND_DEMO = """
    SELECT client_id::text, platform, status, credentials -> 'demo'
    FROM client_api_credentials WHERE client_id = ANY (%s::uuid[])
"""
DELETE_ROWS = (
    "DELETE FROM order_lines WHERE client_id = %s",
    "DELETE FROM inventory_items WHERE client_id = %s",
    "DELETE FROM client_api_credentials WHERE client_id = %s",
)
DROP_CACHE = sql.SQL("DROP TABLE IF EXISTS {table}")
INSERT_CREDENTIAL = """
    INSERT INTO client_api_credentials (client_id, platform, status, credentials)
    VALUES (%s, %s, %s, %s)
"""
COPY_ITEMS = """COPY inventory_items
    (client_id, platform, sku, title, on_hand, unit_cost, unit_price) FROM STDIN"""
COPY_LINES = """COPY order_lines
    (client_id, platform, order_id, sku, quantity, unit_price, ordered_at) FROM STDIN"""
COPY_BATCH_LINES = 200_000
COUNT_LINES = "SELECT count(*) FROM order_lines WHERE client_id = ANY (%s::uuid[])"
CONNECTED = """
    SELECT platform FROM client_api_credentials
    WHERE client_id = %s AND status = 'connected' ORDER BY platform
"""
# What a new order may sell: the catalogue, in-stock SKUs first.
CATALOGUE = """
    SELECT sku, unit_price::text, on_hand FROM inventory_items
    WHERE client_id = %s AND platform = %s ORDER BY on_hand = 0, sku
"""
COUNT_LIVE_ORDERS = """
    SELECT count(DISTINCT order_id) FROM order_lines
    WHERE client_id = %s AND platform = %s AND order_id LIKE %s
"""
INSERT_LINE = """
    INSERT INTO order_lines (client_id, platform, order_id, sku, quantity, unit_price, ordered_at)
    VALUES (%s, %s, %s, %s, %s, %s, %s)
"""
TAKE_STOCK = """
    UPDATE inventory_items SET on_hand = greatest(on_hand - %s, 0)
    WHERE client_id = %s AND platform = %s AND sku = %s
"""


def client_id(index: int) -> str:
    """Return the id of demo client number ``index`` (0-based)."""
    return str(uuid.uuid5(NAMESPACE, f"demo-client-{index}"))


def load_demo(
    conn,
    *,
    clients: int = DEFAULT_CLIENTS,
    skus: int = DEFAULT_SKUS,
    orders_per_day: int = DEFAULT_ORDERS_PER_DAY,
    seed: int = DEFAULT_SEED,
    today: dt.date | None = None,
) -> list[str]:
    """Load the demo clients and their data (idempotent); return the connected client ids."""
    today = today or dt.datetime.now(dt.timezone.utc).date()
    marker = {
        "skus": skus,
        "orders_per_day": orders_per_day,
        "seed": seed,
        "last_day": today.isoformat(),
    }
    init_schema(conn)
    ids = [client_id(index) for index in range(clients)]
    present = _present_rows(conn, ids)
    changed = False
    with conn.cursor() as cur:
        for index, cid in enumerate(ids):
            platforms, status = PROFILES[index % len(PROFILES)]
            if present.get(cid) == {(platform, status, _key(marker)) for platform in platforms}:
                continue
            changed = True
            for statement in DELETE_ROWS:
                cur.execute(statement, (cid,))
            cur.execute(DROP_CACHE.format(table=sql.Identifier(table_name(cid))))
            for platform in platforms:
                cur.execute(INSERT_CREDENTIAL, (cid, platform, status, Json({"demo": marker})))
                _load_platform(cur, cid, platform, skus, orders_per_day, f"{seed}:{index}", today)
    conn.commit()
    if changed:
        _vacuum(conn)
    return [
        cid for index, cid in enumerate(ids) if PROFILES[index % len(PROFILES)][1] == "connected"
    ]


@dataclass(frozen=True)
class NewOrders:
    """What ``add_orders`` wrote for one client."""

    client_id: str
    platforms: tuple[str, ...]
    order_ids: tuple[str, ...]
    lines: int
    units: int


def add_orders(
    conn,
    client_id: str,
    count: int,
    *,
    platform: str | None = None,
    now: dt.datetime | None = None,
    seed: int = DEFAULT_SEED,
) -> NewOrders:
    """Add ``count`` orders placed ``now`` on each connected platform of ``client_id``.

    ``platform`` limits them to that one. The units sold come off the stock. The same
    database state, seed and time give the same orders. Commits; raises ValueError for a
    client or platform that is not connected, or one without a catalogue.
    """
    cid = str(uuid.UUID(client_id))
    if count < 1:
        raise ValueError("count must be at least 1")
    placed = now or dt.datetime.now(dt.timezone.utc)
    with conn.cursor() as cur:
        cur.execute(CONNECTED, (cid,))
        connected = [row[0] for row in cur.fetchall()]
        platforms = connected if platform is None else [platform]
        if not connected or not set(platforms) <= set(connected):
            raise ValueError(f"{platform or 'no platform'} is not connected for client {cid}")
        order_ids, lines, units = [], 0, 0
        for name in platforms:
            cur.execute(CATALOGUE, (cid, name))
            catalogue = cur.fetchall()
            if not catalogue:
                raise ValueError(f"client {cid} has no catalogue on {name}")
            prefix = f"{'SH' if name == 'shopify' else 'AZ'}-LIVE-"
            cur.execute(COUNT_LIVE_ORDERS, (cid, name, prefix + "%"))
            first = cur.fetchone()[0] + 1
            rng = random.Random(f"{seed}:{cid}:{name}:{first}")
            in_stock = [row for row in catalogue if row[2] > 0] or catalogue
            for number in range(first, first + count):
                order_id = f"{prefix}{number:06d}"
                picks = rng.sample(in_stock, k=min(rng.choice(LINES_PER_ORDER), len(in_stock)))
                for sku, price, _ in picks:
                    quantity = rng.choice(QUANTITIES)
                    cur.execute(INSERT_LINE, (cid, name, order_id, sku, quantity, price, placed))
                    cur.execute(TAKE_STOCK, (quantity, cid, name, sku))
                    lines += 1
                    units += quantity
                order_ids.append(order_id)
    conn.commit()
    return NewOrders(cid, tuple(platforms), tuple(order_ids), lines, units)


def _key(marker: dict | None) -> str:
    return json.dumps(marker, sort_keys=True)


def _present_rows(conn, ids: list[str]) -> dict[str, set[tuple[str, str, str]]]:
    """Return, per client, its credentials as (platform, status, demo marker) triples."""
    present: dict[str, set[tuple[str, str, str]]] = {}
    with conn.cursor() as cur:
        cur.execute(FIND_DEMO, (ids,))
        for cid, platform, status, marker in cur.fetchall():
            present.setdefault(cid, set()).add((platform, status, _key(marker)))
    return present


def _vacuum(conn) -> None:
    # Fresh statistics for the planner, and a visibility map so the analytics can read
    # the order lines from their index alone. VACUUM cannot run inside a transaction.
    autocommit = conn.autocommit
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("VACUUM (ANALYZE) order_lines")
            cur.execute("VACUUM (ANALYZE) inventory_items")
    finally:
        conn.autocommit = autocommit


def _load_platform(cur, cid, platform, skus, orders_per_day, seed, today) -> None:
    rng = random.Random(f"{seed}:{platform}")
    catalogue = _catalogue(rng, skus)
    rates = _daily_units(rng, len(catalogue), orders_per_day)
    items = io.StringIO()
    for (sku, title, cost, price), rate in zip(catalogue, rates, strict=True):
        items.write(f"{cid}\t{platform}\t{sku}\t{title}\t{_on_hand(rng, rate)}\t{cost}\t{price}\n")
    items.seek(0)
    cur.copy_expert(COPY_ITEMS, items)
    lines = _order_lines(rng, cid, platform, catalogue, rates, orders_per_day, today)
    while batch := "".join(itertools.islice(lines, COPY_BATCH_LINES)):
        cur.copy_expert(COPY_LINES, io.StringIO(batch))


def _catalogue(rng: random.Random, skus: int) -> list[tuple[str, str, str, str]]:
    rows = []
    for number in range(skus):
        price = rng.uniform(5, 120)
        title = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {number}"
        rows.append(
            (f"SKU-{number:05d}", title, f"{price * rng.uniform(0.35, 0.7):.2f}", f"{price:.2f}")
        )
    return rows


def _daily_units(rng: random.Random, skus: int, orders_per_day: int) -> list[float]:
    """Return each SKU's expected units a day: a long tail, and some never sold."""
    ranks = list(range(skus))
    rng.shuffle(ranks)
    never_sold = int(skus * NEVER_SOLD_SHARE)
    weights = [0.0 if rank >= skus - never_sold else 1 / (rank + 1) ** 1.1 for rank in ranks]
    total = sum(weights) or 1.0
    units_a_day = orders_per_day * _mean(LINES_PER_ORDER) * _mean(QUANTITIES)
    return [units_a_day * weight / total for weight in weights]


def _on_hand(rng: random.Random, units_a_day: float) -> int:
    if units_a_day == 0:
        return rng.choice((0, rng.randint(5, 200)))
    _, low, high = rng.choices(COVER_MIX, weights=COVER_WEIGHTS)[0]
    return round(units_a_day * rng.uniform(low, high))


def _order_lines(rng, cid, platform, catalogue, rates, orders_per_day, today) -> Iterator[str]:
    """Yield COPY rows: each day's orders, growing over the period, busier at weekends."""
    population = list(range(len(catalogue)))
    cumulative = list(itertools.accumulate(rates))
    if not cumulative or cumulative[-1] == 0:
        return
    prefix = "SH" if platform == "shopify" else "AZ"
    number = 0
    for age in range(HISTORY_DAYS - 1, -1, -1):
        day = today - dt.timedelta(days=age)
        trend = 0.8 + 0.4 * (HISTORY_DAYS - age) / HISTORY_DAYS
        weekend = 1.2 if day.weekday() >= 5 else 1.0
        midnight = dt.datetime.combine(day, dt.time(), dt.timezone.utc)
        for _ in range(round(orders_per_day * trend * weekend * rng.uniform(0.85, 1.15))):
            number += 1
            ordered_at = (midnight + dt.timedelta(seconds=rng.randrange(86_400))).isoformat()
            order = f"{cid}\t{platform}\t{prefix}-{number:08d}\t"
            picks = rng.choices(population, cum_weights=cumulative, k=rng.choice(LINES_PER_ORDER))
            for index in dict.fromkeys(picks):  # one line per SKU of an order
                sku, _, _, price = catalogue[index]
                yield f"{order}{sku}\t{rng.choice(QUANTITIES)}\t{price}\t{ordered_at}\n"


def _mean(values: Sequence[int]) -> float:
    return sum(values) / len(values)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Load the demo data into the database the command line names; return the exit code.

    ``--database-url`` defaults to ``DATABASE_URL`` in ``environ`` (default: the process
    environment over ``.env``, as the API reads it).
    """
    parser = argparse.ArgumentParser(
        prog="python -m dashboard_api.demo", description="Load the dashboard demo data."
    )
    try:
        default_url = from_environ(environ).get("DATABASE_URL")
    except ConfigError as exc:
        parser.error(str(exc))
    parser.add_argument(
        "--database-url", default=default_url, help="PostgreSQL URL (env DATABASE_URL)"
    )
    sizes = (
        ("--clients", DEFAULT_CLIENTS, "demo clients"),
        ("--skus", DEFAULT_SKUS, "SKUs per client and platform"),
        ("--orders-per-day", DEFAULT_ORDERS_PER_DAY, "orders a day per client and platform"),
        ("--seed", DEFAULT_SEED, "random seed"),
    )
    for flag, default, what in sizes:
        parser.add_argument(flag, type=_count, default=default, help=f"{what} (default {default})")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url (or DATABASE_URL) is required")
    started = time.perf_counter()
    conn = connect_for_script(args.database_url)
    if conn is None:
        return 1
    try:
        ids = load_demo(
            conn,
            clients=args.clients,
            skus=args.skus,
            orders_per_day=args.orders_per_day,
            seed=args.seed,
        )
        with conn.cursor() as cur:
            cur.execute(COUNT_LINES, ([client_id(index) for index in range(args.clients)],))
            lines = cur.fetchone()[0]
    finally:
        conn.close()
    elapsed = time.perf_counter() - started
    print(f"{len(ids)} connected demo clients, {lines} order lines, {elapsed:.1f} s")
    for cid in ids:
        print(cid)
    return 0


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError("expected a whole number, 0 or more")
    return int(text)


if __name__ == "__main__":
    sys.exit(main())
