"""Shared names and queries for the runner's tests."""

from __future__ import annotations

ALICE = "3b619a14-3cd8-49fa-9c24-d8df5e54c452"  # shopify + amazon
BOB = "5f0c3a52-7d5e-4c43-9a4e-0f2d6b1c9e11"  # shopify only
CAROL = "9a7e1c2d-4b3f-4e5a-8c6d-7e8f9a0b1c2d"  # amazon only
DAVE = "1d2c3b4a-5e6f-4a7b-8c9d-0e1f2a3b4c5d"  # disconnected


def jobs(db, run_id=None):
    with db.cursor() as cur:
        cur.execute(
            "SELECT client_id::text, platform, status, attempts, http_status, platform_count,"
            " sku_count, error FROM refresh_jobs WHERE run_id = COALESCE(%s::uuid, "
            "(SELECT run_id FROM refresh_runs ORDER BY started_at DESC LIMIT 1))"
            " ORDER BY client_id, platform",
            (run_id,),
        )
        return {(r[0], r[1]): r[2:] for r in cur.fetchall()}


def runs(db):
    with db.cursor() as cur:
        cur.execute(
            "SELECT status, exit_code, jobs_total, jobs_succeeded, jobs_failed,"
            " jobs_not_attempted, trigger FROM refresh_runs ORDER BY started_at"
        )
        return cur.fetchall()
