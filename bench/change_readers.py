"""Readers of the reference API while change-aware runs keep its short-lived copies.

The reference API (in this process, on loopback) serves the demo data with ``CACHE_TTL``
seconds of copy life; the cron entry point runs in a process of its own every ``every``
seconds with the reference change query; readers ask for every dashboard, as a browser
does (``force_refresh=false``), one read every ``read_every`` seconds across the keys. A
read answered ``"cached": false`` met a cold cache: it waited for a computation.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import bench_db
import psycopg2
import requests
from refresh_bench import SECRET, run_runner

from api_key_auth import SCOPE_READ, mint_client_token
from dashboard_api import create_app
from dashboard_api.demo import load_demo
from dashboard_api.server import start_background

ROOT = Path(__file__).resolve().parent.parent
CHANGE_FILE = str(ROOT / "dashboard_api" / "change_keys.sql")
ENDPOINT = "/api/dashboard/inventory-analytics"


@dataclass(frozen=True)
class Readers:
    """What the readers met after the first run had ended."""

    reads: int
    cold: int
    runs: int
    refreshes: int
    seconds: float
    ttl: float
    every: float


def _keys(url: str) -> list[tuple[str, str]]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT client_id::text, platform FROM client_api_credentials"
                " WHERE status = 'connected' ORDER BY 1, 2"
            )
            rows = cur.fetchall()
    finally:
        conn.close()
    clients = sorted({c for c, _ in rows})
    return rows + [(c, "all") for c in clients]


def _refreshes(url: str) -> int:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM refresh_jobs WHERE status = 'succeeded'")
            return cur.fetchone()[0]
    finally:
        conn.close()


def measure(
    workdir: Path, *, seconds: float = 120.0, ttl: int = 60, every: float = 10.0
) -> Readers:
    """Run the runner every ``every`` s for ``seconds`` while readers read; count cold reads."""
    server = bench_db.server_url(workdir)
    url = bench_db.empty_database(server, "change_readers")
    conn = psycopg2.connect(url)
    try:
        load_demo(conn, clients=4, skus=20, orders_per_day=5)
        conn.commit()
        with conn.cursor() as cur:
            cur.execute((ROOT / "analytics_refresh" / "sql" / "runner_schema.sql").read_text())
        conn.commit()
    finally:
        conn.close()
    app = create_app({"DATABASE_URL": url, "API_SECRET_KEY": SECRET, "CACHE_TTL": str(ttl)})
    api = start_background(app, host="127.0.0.1", port=0)
    env = {
        "DATABASE_URL": url,
        "ANALYTICS_API_URL": api.url,
        "REFRESH_CHANGE_SQL_FILE": CHANGE_FILE,
        "REFRESH_INTERVAL_MINUTES": "1",
    }
    keys = _keys(url)
    first_run_ended = threading.Event()
    stop = threading.Event()
    runs = []

    def runner() -> None:
        while not stop.is_set():
            tick = time.monotonic()
            runs.append(run_runner(env, workdir=workdir).exit_code)
            first_run_ended.set()
            stop.wait(max(0.0, every - (time.monotonic() - tick)))

    thread = threading.Thread(target=runner, daemon=True)
    thread.start()
    first_run_ended.wait(120)
    session = requests.Session()
    reads = cold = 0
    read_every = max(0.05, every / 20)
    until = time.monotonic() + seconds
    try:
        while time.monotonic() < until:
            client_id, platform = keys[reads % len(keys)]
            token = mint_client_token(client_id, SECRET, scope=SCOPE_READ)
            answer = session.get(
                api.url + ENDPOINT,
                params={"client_id": client_id, "platform": platform},
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            ).json()
            reads += 1
            cold += answer.get("cached") is False
            time.sleep(read_every)
    finally:
        stop.set()
        thread.join(timeout=120)
        api.stop()
        app.extensions["dashboard_api"].close()
    refreshes = _refreshes(url)
    bench_db.drop_database(server, "change_readers")
    return Readers(reads, cold, len(runs), refreshes, seconds, ttl, every)
