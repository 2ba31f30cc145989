"""The manual run: preflight, a real run (trigger manual), cache verification, the summary."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from analytics_refresh.manual import main
from tests.backend import Answer
from tests.conftest import ROOT, connect_clients
from tests.ops_helpers import CachingBackend, PingRecorder, create_cache_table

ALICE = "3b619a14-3cd8-49fa-9c24-d8df5e54c452"  # shopify + amazon, has a cache table
BOB = "5f0c3a52-7d5e-4c43-9a4e-0f2d6b1c9e11"  # shopify, no cache table


@pytest.fixture
def api(db_url):
    server = CachingBackend(db_url).start()
    yield server
    server.stop()


@pytest.fixture
def env(run_env, api, db):
    connect_clients(db, {ALICE: ("shopify", "amazon"), BOB: ("shopify",)})
    create_cache_table(db, ALICE)
    return {**run_env, "ANALYTICS_API_URL": api.url}


def runs(db):
    with db.cursor() as cur:
        cur.execute("SELECT trigger, status, exit_code, jobs_total FROM refresh_runs")
        return cur.fetchall()


def row_of(out: str, client: str, platform: str) -> list[str]:
    """The summary table's cells for one job: job, status, attempts, duration, SKUs, cache."""
    line = next(x for x in out.splitlines() if f"{client} ({platform})" in x and "│" in x)
    return [cell.strip() for cell in line.split("│")[1:-1]]


def test_manual_run_refreshes_and_verifies_every_cache(env, api, db, capsys):
    assert main([], env) == 0
    out = capsys.readouterr().out
    assert "✓ all 8 checks passed" in out
    assert runs(db) == [("manual", "succeeded", 0, 5)]
    refreshes = [r for r in api.refreshes() if r.query["force_refresh"] == "true"]
    assert len(refreshes) == 5

    # The log's own lines, plain, as the run goes.
    assert "Processing 2 clients × 3 platforms = 5 refresh jobs" in out
    assert out.count("✅ SUCCESS") == 5
    for platform in ("shopify", "amazon", "all"):
        _, status, attempts, duration, skus, cache = row_of(out, ALICE, platform)
        assert (status, attempts, skus) == ("succeeded", "1", "7")
        assert duration.endswith("s")
        assert cache.startswith("✓ ")
    assert row_of(out, BOB, "shopify")[5] == "no cache table"
    for header in ("job", "status", "attempts", "duration", "SKUs", "cache verified"):
        assert header in out
    assert "3 of 5 caches verified, 2 without a cache table; exit 0" in out
    assert "\x1b" not in out


def test_success_without_a_fresh_cache_row_exits_1(env, api, capsys):
    api.broken_cache.add((ALICE, "amazon"))
    assert main(["--client", ALICE], env) == 1
    out = capsys.readouterr().out
    assert row_of(out, ALICE, "amazon")[5] == "✗ no amazon row"
    assert row_of(out, ALICE, "shopify")[5].startswith("✓ ")
    assert "jobs succeeded but their cache row is older than the run" in out


def test_client_and_platform_are_respected(env, api, db, capsys):
    assert main(["--client", BOB, "--platform", "all"], env) == 0
    sent = {
        (r.query["client_id"], r.query["platform"], r.query["force_refresh"])
        for r in api.refreshes()
    }
    # The preflight read (not forced) and the run's one refresh.
    assert sent == {(BOB, "all", "false"), (BOB, "all", "true")}
    assert runs(db) == [("manual", "succeeded", 0, 1)]


def test_failed_job_shows_in_the_summary_and_exits_1(env, api, capsys):
    api.script(BOB, "shopify", Answer(500, {"error": "cache operation failed"}))
    assert main(["--client", BOB], {**env, "REFRESH_MAX_ATTEMPTS": "2"}) == 1
    out = capsys.readouterr().out
    _, status, attempts, _, skus, cache = row_of(out, BOB, "shopify")
    assert (status, attempts, skus, cache) == ("failed", "2", "-", "-")
    assert "❌ FAILED" in out
    assert "cache operation failed" in out


def test_preflight_only_refreshes_nothing(env, api, db, capsys):
    assert main(["--preflight-only"], env) == 0
    assert runs(db) == []
    assert all(r.query["force_refresh"] == "false" for r in api.refreshes())
    assert "Summary" not in capsys.readouterr().out


def test_failed_preflight_stops_before_the_run(env, db, capsys):
    assert main([], {**env, "ANALYTICS_API_URL": "http://127.0.0.1:9"}) == 1
    out = capsys.readouterr().out
    assert "✗ API /health answers" in out
    assert "Nothing was refreshed" in out
    assert runs(db) == []


def test_invalid_settings_show_as_the_first_check(env, capsys):
    assert main([], {**env, "API_SECRET_KEY": "short-secret-value"}) == 3
    out = capsys.readouterr().out
    assert "✗ Settings valid: API_SECRET_KEY is too short" in out
    assert "short-secret-value" not in out


def test_usage_error_exits_2(env):
    assert main(["--platform", "ebay"], env) == 2


def test_script_piped_to_a_file_prints_plain_lines_and_pings(env, db, tmp_path):
    monitor = PingRecorder()
    output = tmp_path / "out.txt"
    try:
        with output.open("w") as out:
            proc = subprocess.run(
                [sys.executable, str(ROOT / "test_analytics_refresh_now.py"), "-q"],
                env={**os.environ, **env, "HEALTHCHECK_URL": monitor.url, "TERM": "xterm"},
                cwd=tmp_path,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=60,
                check=False,
            )
    finally:
        monitor.stop()
    text = output.read_text(encoding="utf-8")
    assert proc.returncode == 0, text
    assert "\x1b" not in text
    assert "\r" not in text
    assert "Summary" in text
    assert "3 of 5 caches verified" in text
    assert monitor.paths() == ["/start", "/0"]  # the same monitored path as cron
    assert runs(db) == [("manual", "succeeded", 0, 5)]


def test_a_held_lock_is_said_once(env, db, capsys):
    from analytics_refresh.lock import lock_key

    with db.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (lock_key(None),))
    try:
        assert main([], env) == 5
    finally:
        with db.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (lock_key(None),))
    captured = capsys.readouterr()
    said = (captured.out + captured.err).lower().count("holds the lock")
    assert said == 1, captured
