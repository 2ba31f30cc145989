"""`analytics-refresh status`: recent runs, cache ages stalest first, exit 0 only when fresh."""

from __future__ import annotations

import json
import uuid

import pytest

from analytics_refresh.cli import main
from analytics_refresh.store import db as runner_db
from tests.conftest import connect_clients

ALICE = "3b619a14-3cd8-49fa-9c24-d8df5e54c452"  # shopify + amazon
BOB = "5f0c3a52-7d5e-4c43-9a4e-0f2d6b1c9e11"  # shopify, never refreshed
GONE = "1d2c3b4a-5e6f-4a7b-8c9d-0e1f2a3b4c5d"  # disconnected: not expected any more


def add_run(db, hours_ago: float, jobs: dict, *, status="succeeded", code=0, trigger="cron"):
    """Record a finished run whose jobs ended ``hours_ago``: {(client, platform): status}."""
    run_id = str(uuid.uuid4())
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO refresh_runs (run_id, trigger, host, started_at, finished_at, status,"
            " exit_code, jobs_total, jobs_succeeded, jobs_failed) VALUES (%s, %s, 'web-1',"
            " now() - make_interval(secs => %s + 30), now() - make_interval(secs => %s),"
            " %s, %s, %s, %s, %s)",
            (
                run_id,
                trigger,
                hours_ago * 3600,
                hours_ago * 3600,
                status,
                code,
                len(jobs),
                sum(1 for s in jobs.values() if s == "succeeded"),
                sum(1 for s in jobs.values() if s == "failed"),
            ),
        )
        for (client, platform), job_status in jobs.items():
            cur.execute(
                "INSERT INTO refresh_jobs (run_id, client_id, platform, status, attempts, error,"
                " finished_at) VALUES (%s, %s, %s, %s, 1, %s, now() - make_interval(secs => %s))",
                (
                    run_id,
                    client,
                    platform,
                    job_status,
                    "HTTP 500 after 3 attempts" if job_status == "failed" else None,
                    hours_ago * 3600,
                ),
            )
    rebuild_state(db)
    return run_id


def rebuild_state(db) -> None:
    """Fill refresh_state from the history, as `db init` does when upgrading an install."""
    with db.cursor() as cur:
        cur.execute("DELETE FROM refresh_state")
    runner_db.init_schema(db)


@pytest.fixture
def history(db):
    connect_clients(db, {ALICE: ("shopify", "amazon"), BOB: ("shopify",)})
    connect_clients(db, {GONE: ("shopify",)}, status="disconnected")
    add_run(db, 30, {(GONE, "shopify"): "succeeded"})
    add_run(
        db,
        6,
        {
            (ALICE, "shopify"): "succeeded",
            (ALICE, "amazon"): "succeeded",
            (ALICE, "all"): "succeeded",
        },
    )
    add_run(
        db,
        1,
        {
            (ALICE, "shopify"): "succeeded",
            (ALICE, "amazon"): "failed",
            (ALICE, "all"): "succeeded",
            (BOB, "shopify"): "failed",
            (BOB, "all"): "failed",
        },
        status="partial",
        code=1,
    )


STALEST_FIRST = [
    (BOB, "shopify", True),  # never refreshed: stalest, in plan order
    (BOB, "all", True),
    (ALICE, "amazon", True),  # 6 hours
    (ALICE, "shopify", False),  # 1 hour
    (ALICE, "all", False),
]


def test_json_lists_runs_and_every_expected_cache_stalest_first(run_env, history, capsys):
    assert main(["status", "--json", "--keys"], run_env) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["healthy"] is False
    assert report["max_age_hours"] == 2.5
    assert (report["total"], report["stale_count"], report["never_refreshed_count"]) == (5, 3, 2)

    caches = [(c["client_id"], c["platform"], c["stale"]) for c in report["caches"]]
    assert caches == STALEST_FIRST
    never = report["caches"][0]
    assert never["last_success_at"] is None
    assert never["age_hours"] is None
    assert never["last_status"] == "failed"
    assert never["last_error"] == "HTTP 500 after 3 attempts"
    amazon = report["caches"][2]
    assert 5.99 < amazon["age_hours"] < 6.01
    assert amazon["last_error"] == "HTTP 500 after 3 attempts"

    runs = report["runs"]
    assert [r["status"] for r in runs] == ["partial", "succeeded", "succeeded"]
    newest = runs[0]
    assert newest["exit_code"] == 1
    assert newest["trigger"] == "cron"
    assert newest["jobs"] == {
        "total": 5,
        "succeeded": 2,
        "failed": 3,
        "not_attempted": 0,
        "skipped": 0,
        "unchanged": 0,
    }
    assert newest["duration_seconds"] == pytest.approx(30, abs=0.01)
    assert newest["started_at"].endswith("+00:00")


def test_all_fresh_exits_0(run_env, db, capsys):
    connect_clients(db, {ALICE: ("shopify",)})
    add_run(db, 0.5, {(ALICE, "shopify"): "succeeded", (ALICE, "all"): "succeeded"})
    assert main(["status"], run_env) == 0
    out = capsys.readouterr().out
    assert "✓ all 2 client × platforms are fresher than 2.5 h: exit 0" in out
    assert "\x1b" not in out


def test_max_age_decides_what_is_stale(run_env, db, capsys):
    connect_clients(db, {ALICE: ("shopify",)})
    add_run(db, 3, {(ALICE, "shopify"): "succeeded", (ALICE, "all"): "succeeded"})
    assert main(["status", "--json"], run_env) == 1
    assert main(["status", "--json", "--max-age", "4"], run_env) == 0
    first, second = capsys.readouterr().out.splitlines()  # one JSON document a line
    assert json.loads(first)["stale_count"] == 2
    assert json.loads(second)["healthy"] is True


def test_human_output_marks_stale_and_summarises(run_env, history, capsys):
    assert main(["status", "--runs", "2"], run_env) == 1
    out = capsys.readouterr().out
    assert "partial (exit 1)" in out
    assert "5: 2 ok, 3 failed" in out
    assert out.count("web-1") == 2  # --runs 2
    rows = [x for x in out.splitlines() if ALICE in x or BOB in x]
    assert [("✗ stale" in x) for x in rows] == [True, True, True, False, False]
    assert "never" in rows[0]
    assert "HTTP 500 after 3 attempts" in rows[0]
    assert "6h 00m" in rows[2] or "5h 59m" in rows[2]
    assert GONE not in out
    assert "✗ 3 of 5 client × platforms are older than 2.5 h (2 never refreshed): exit 1" in out


def test_nothing_ever_ran(run_env, db, capsys):
    connect_clients(db, {ALICE: ("amazon",)})
    assert main(["status"], run_env) == 1
    out = capsys.readouterr().out
    assert "no run recorded yet" in out
    assert "(2 never refreshed)" in out


def test_platform_settings_limit_what_is_expected(run_env, history, capsys):
    env = {**run_env, "REFRESH_PLATFORMS": "shopify,all"}
    assert main(["status", "--json", "--keys"], env) == 1
    caches = json.loads(capsys.readouterr().out)["caches"]
    assert {c["platform"] for c in caches} == {"shopify", "all"}


def test_missing_runner_tables_exit_4(run_env, empty_db_url, capsys):
    assert main(["status"], {**run_env, "DATABASE_URL": empty_db_url}) == 4
    assert "analytics-refresh db init" in capsys.readouterr().err


def test_json_summary_counts_per_platform_and_names_the_worst_keys(run_env, history, capsys):
    assert main(["status", "--json"], run_env) == 1
    report = json.loads(capsys.readouterr().out)
    assert "caches" not in report  # the per-key list only on request
    assert [(c["client_id"], c["platform"], c["stale"]) for c in report["worst"]] == STALEST_FIRST
    assert (report["failing_count"], report["failing_repeatedly_count"]) == (3, 0)
    platforms = report["platforms"]
    assert {p: v["total"] for p, v in platforms.items()} == {"shopify": 2, "amazon": 1, "all": 2}
    assert {p: v["stale_count"] for p, v in platforms.items()} == {
        "shopify": 1,
        "amazon": 1,
        "all": 1,
    }
    assert platforms["shopify"]["never_refreshed_count"] == 1
    assert 0.99 < platforms["shopify"]["oldest_age_hours"] < 1.01  # Alice's; Bob's never
    assert 5.99 < platforms["amazon"]["oldest_age_hours"] < 6.01


def test_stale_only_and_limit_narrow_the_key_list(run_env, history, capsys):
    assert main(["status", "--json", "--stale-only"], run_env) == 1
    assert main(["status", "--json", "--limit", "2"], run_env) == 1
    assert main(["status", "--json", "--stale-only", "--limit", "1"], run_env) == 1
    stale, first_two, first = (json.loads(x) for x in capsys.readouterr().out.splitlines())
    keys = [(c["client_id"], c["platform"]) for c in stale["caches"]]
    assert keys == [(c, p) for c, p, is_stale in STALEST_FIRST if is_stale]
    assert [(c["client_id"], c["platform"]) for c in first_two["caches"]] == keys[:2]
    assert [(c["client_id"], c["platform"]) for c in first["caches"]] == keys[:1]
    assert stale["total"] == 5  # the summary still counts every key


def test_text_keys_lists_every_key(run_env, history, capsys):
    assert main(["status", "--keys"], run_env) == 1
    out = capsys.readouterr().out
    rows = [x for x in out.splitlines() if ALICE in x or BOB in x]
    assert [(BOB in x, "✗ stale" in x) for x in rows] == [
        (c == BOB, stale) for c, _, stale in STALEST_FIRST
    ]
    assert "5 listed" in out


def test_the_status_command_loads_no_http_or_token_library():
    """status starts fast: requests and PyJWT load only in processes that send or mint."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import analytics_refresh.cli, analytics_refresh.ops.status, analytics_refresh.ui.console\n"
        "print(sorted(m for m in ('requests', 'jwt', 'urllib3') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
