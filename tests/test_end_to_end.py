"""The runner against the reference API: real caches refreshed, and never lost on failure."""

from __future__ import annotations

import time

import pytest
from psycopg2 import sql

from analytics_refresh.cli import main
from dashboard_api import create_app
from dashboard_api.demo import load_demo
from dashboard_api.server import start_background
from tests.conftest import log_lines


@pytest.fixture
def api(db_url, secret):
    """The reference API on loopback over the test database."""
    app = create_app({"DATABASE_URL": db_url, "API_SECRET_KEY": secret, "TESTING": True})
    server = start_background(app, host="127.0.0.1", port=0)
    yield server
    server.stop()


@pytest.fixture
def demo_clients(db) -> list[str]:
    return load_demo(db, clients=4, skus=30, orders_per_day=20)


def cache_rows(db, client_id: str) -> dict[str, tuple]:
    table = sql.Identifier(f"{client_id}_cached_responses")
    with db.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT platform, computed_at, response->>'sku_count', md5(response::text) FROM {}"
            ).format(table)
        )
        return {row[0]: row[1:] for row in cur.fetchall()}


def test_a_run_refreshes_one_cache_row_per_job(run_env, api, demo_clients, db):
    env = {**run_env, "ANALYTICS_API_URL": api.url}
    started = time.time()
    assert main(["run"], env) == 0

    with db.cursor() as cur:
        cur.execute("SELECT client_id::text, platform, sku_count FROM refresh_jobs")
        jobs = cur.fetchall()
    assert len(jobs) == 7  # both + shopify-only + amazon-only; the disconnected has none
    assert next(line for line in log_lines(env) if line.startswith("Results:")).startswith(
        "Results: 7 successful, 0 failed out of 7 total jobs"
    )
    for client_id, platform, sku_count in jobs:
        rows = cache_rows(db, client_id)
        computed_at, cached_skus, _ = rows[platform]
        assert computed_at.timestamp() >= started - 1
        assert int(cached_skus) == sku_count


def test_a_failed_refresh_never_removes_a_good_cache(run_env, api, demo_clients, db):
    env = {**run_env, "ANALYTICS_API_URL": api.url}
    assert main(["run"], env) == 0
    before = {c: cache_rows(db, c) for c in demo_clients}
    env["REFRESH_MAX_ATTEMPTS"] = "1"

    # The API's data source breaks: every recomputation now fails inside the API.
    with db.cursor() as cur:
        cur.execute("ALTER TABLE order_lines RENAME TO order_lines_away")
    assert main(["run"], env) == 1
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM refresh_jobs WHERE status = 'failed'")
        assert cur.fetchone() == (7,)
    assert {c: cache_rows(db, c) for c in demo_clients} == before
