"""The refresh run end to end: real PostgreSQL, a real HTTP backend, the CLI's main()."""

from __future__ import annotations

import re
from pathlib import Path

import api_key_auth
from analytics_refresh.cli import main
from tests.backend import Answer
from tests.conftest import log_lines
from tests.runs import ALICE, BOB, CAROL, jobs, runs


def test_run_refreshes_every_connected_platform_once(run_env, clients, backend, db, secret):
    assert main(["run"], run_env) == 0

    sent = sorted((r.query["client_id"], r.query["platform"]) for r in backend.refreshes())
    assert sent == sorted(
        [
            (ALICE, "shopify"),
            (ALICE, "amazon"),
            (ALICE, "all"),
            (BOB, "shopify"),
            (BOB, "all"),
            (CAROL, "amazon"),
            (CAROL, "all"),
        ]
    )
    for request in backend.refreshes():
        assert request.query["force_refresh"] == "true"
        assert request.headers["Cache-Control"] == "no-cache"
        assert request.headers["User-Agent"].startswith("analytics-refresh/")
        token = request.headers["Authorization"].removeprefix("Bearer ")
        claims = api_key_auth.verify_client_token(
            token,
            secret,
            client_id=request.query["client_id"],
            scope=api_key_auth.SCOPE_REFRESH,
        )
        assert claims["exp"] - claims["iat"] <= 15 * 60

    assert runs(db) == [("succeeded", 0, 7, 7, 0, 0, "cron")]
    recorded = jobs(db)
    assert len(recorded) == 7
    assert recorded[(ALICE, "all")] == ("succeeded", 1, 200, 2, 7, None)
    assert recorded[(BOB, "shopify")] == ("succeeded", 1, 200, 1, 7, None)


def test_log_matches_the_contract_line_for_line(run_env, clients, backend):
    backend.script(CAROL, "amazon", Answer(500, {"error": "boom"}))
    env = {**run_env, "REFRESH_CONCURRENCY": "1"}
    assert main(["run"], env) == 1

    lines = log_lines(env)
    assert lines[0].startswith("Starting analytics refresh cron job - AUTOMATED CACHE REFRESH")
    assert "Found 3 active clients for analytics refresh" in lines
    assert "Processing 3 clients × 3 platforms = 7 refresh jobs" in lines
    success = [line for line in lines if line.startswith("✅ SUCCESS")]
    assert len(success) == 6
    assert any(
        line.startswith(f"✅ SUCCESS - {ALICE} (all): 2 platforms, 7 SKUs") for line in success
    )
    assert any(
        line.startswith(f"✅ SUCCESS - {BOB} (shopify): 1 platforms, 7 SKUs") for line in success
    )
    failed = [line for line in lines if line.startswith("❌ FAILED")]
    assert len(failed) == 1
    assert failed[0].startswith(f"❌ FAILED - {CAROL} (amazon): HTTP 500 after 3 attempts")
    assert "boom" in failed[0]
    assert lines[-1].startswith("Results: 6 successful, 1 failed out of 7 total jobs")
    # Every line carries the contract's timestamp.
    raw = Path(run_env["LOG_DIR"]) / "analytics_refresh_cron.log"
    for line in raw.read_text(encoding="utf-8").splitlines():
        assert re.match(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} - ", line)


def test_no_active_clients_warns_and_exits_0(run_env, db):
    assert main(["run"], run_env) == 0
    lines = log_lines(run_env)
    assert "Found 0 active clients for analytics refresh" in lines
    assert any("No active clients found" in line for line in lines)
    assert runs(db)[0][:3] == ("succeeded", 0, 0)


def test_dry_run_plans_and_calls_nothing(run_env, clients, backend, db):
    assert main(["run", "--dry-run", "--platform", "all"], run_env) == 0
    assert backend.refreshes() == []
    lines = log_lines(run_env)
    assert "Processing 3 clients × 1 platforms = 3 refresh jobs" in lines
    assert sum(1 for line in lines if line.startswith("DRY RUN - would refresh")) == 3
    assert runs(db) == []


def test_client_and_platform_filters(run_env, clients, backend):
    assert (
        main(["run", "--client", ALICE, "--platform", "amazon", "--platform", "all"], run_env) == 0
    )
    sent = sorted((r.query["client_id"], r.query["platform"]) for r in backend.refreshes())
    assert sent == [(ALICE, "all"), (ALICE, "amazon")]
