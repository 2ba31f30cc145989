"""The refresh run end to end: real PostgreSQL, a real HTTP backend, the CLI's main()."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import api_key_auth
from analytics_refresh.cli import main
from tests.backend import Answer
from tests.conftest import connect_clients, log_lines

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


@pytest.fixture
def clients(db):
    connect_clients(db, {ALICE: ("shopify", "amazon"), BOB: ("shopify",), CAROL: ("amazon",)})
    connect_clients(db, {DAVE: ("shopify",)}, status="disconnected")


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


def test_failing_client_fails_after_max_attempts_while_others_succeed(
    run_env, clients, backend, db
):
    backend.script(ALICE, "amazon", Answer(500, {"error": "database exploded"}))
    env = {**run_env, "REFRESH_MAX_ATTEMPTS": "2"}
    assert main(["run"], env) == 1

    recorded = jobs(db)
    assert recorded[(ALICE, "amazon")][:3] == ("failed", 2, 500)
    assert "database exploded" in recorded[(ALICE, "amazon")][5]
    assert sum(1 for r in recorded.values() if r[0] == "succeeded") == 6
    tries = [
        r
        for r in backend.refreshes()
        if (r.query["client_id"], r.query["platform"]) == (ALICE, "amazon")
    ]
    assert len(tries) == 2
    assert runs(db)[0][:6] == ("partial", 1, 7, 6, 1, 0)


def test_transient_errors_succeed_on_a_later_attempt(run_env, clients, backend, db):
    backend.script(BOB, "all", Answer(503, headers={"Retry-After": "0"}), Answer(502), OK200)
    assert main(["run", "--client", BOB], run_env) == 0
    assert jobs(db)[(BOB, "all")][:3] == ("succeeded", 3, 200)


OK200 = Answer(200)


def test_dropped_connection_and_timeout_are_retried(run_env, clients, backend, db):
    backend.script(BOB, "shopify", Answer(drop=True), OK200)
    backend.script(BOB, "all", Answer(sleep=2.5), OK200)
    env = {**run_env, "REFRESH_TIMEOUT": "1"}
    assert main(["run", "--client", BOB], env) == 0
    recorded = jobs(db)
    assert recorded[(BOB, "shopify")][:2] == ("succeeded", 2)
    assert recorded[(BOB, "all")][:2] == ("succeeded", 2)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (Answer(200, "<html>maintenance</html>"), "invalid response"),
        (Answer(200, '{"platforms": ['), "invalid response"),
        (Answer(200, [1, 2]), "invalid response"),
        (Answer(403, {"error": "token for another client"}), "token for another client"),
        (Answer(404, {"error": "platform not connected"}), "platform not connected"),
        (Answer(400, {"error": "bad platform"}), "bad platform"),
    ],
)
def test_permanent_failures_are_not_retried(run_env, clients, backend, db, answer, error):
    backend.script(CAROL, "amazon", answer)
    assert main(["run", "--client", CAROL, "--platform", "amazon"], run_env) == 1
    status, attempts, _http, _pc, _skus, text = jobs(db)[(CAROL, "amazon")]
    assert (status, attempts) == ("failed", 1)
    assert error in text
    assert len(backend.refreshes()) == 1


def test_401_mints_a_new_token_once(run_env, clients, backend, db):
    backend.script(CAROL, "all", Answer(401, {"error": "token expired"}), OK200)
    assert main(["run", "--client", CAROL, "--platform", "all"], run_env) == 0
    assert jobs(db)[(CAROL, "all")][:2] == ("succeeded", 2)
    first, second = (r.headers["Authorization"] for r in backend.refreshes())
    assert first != second


def test_repeated_401_fails_after_one_remint(run_env, clients, backend, db):
    backend.script(CAROL, "all", Answer(401, {"error": "bad signature"}))
    assert main(["run", "--client", CAROL, "--platform", "all"], run_env) == 1
    assert jobs(db)[(CAROL, "all")][:3] == ("failed", 2, 401)


def test_no_token_reaches_the_log_or_the_tables(run_env, clients, backend, db):
    # A broken backend that echoes the request headers back in its error.
    backend.script(ALICE, "shopify", Answer(500, {"error": "ECHO"}))
    original = backend.next_answer

    def echoing(client_id, platform):
        answer = original(client_id, platform)
        if answer.body == {"error": "ECHO"}:
            request = backend.requests[-1]
            return Answer(500, {"error": f"headers were {request.headers}"})
        return answer

    backend.next_answer = echoing
    env = {**run_env, "REFRESH_MAX_ATTEMPTS": "2"}
    assert main(["run"], env) == 1

    tokens = {r.headers["Authorization"].removeprefix("Bearer ") for r in backend.refreshes()}
    log_text = "\n".join(log_lines(env))
    with db.cursor() as cur:
        cur.execute("SELECT coalesce(string_agg(error, ' '), '') FROM refresh_jobs")
        table_text = cur.fetchone()[0]
    assert "headers were" in table_text  # the echo was recorded, masked
    for token in tokens:
        for part in token.split("."):
            assert part not in log_text
            assert part not in table_text
    assert env["API_SECRET_KEY"] not in log_text


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


def test_untrustworthy_credential_rows_are_skipped(run_env, backend, db, tmp_path):
    # A user's own table may hold text ids and other platforms; the runner must not trust it.
    with db.cursor() as cur:
        cur.execute("DROP TABLE client_api_credentials")
        cur.execute(
            "CREATE TABLE client_api_credentials (client_id text, platform text, status text)"
        )
        cur.executemany(
            "INSERT INTO client_api_credentials VALUES (%s, %s, 'connected')",
            [
                ("x'; DROP TABLE refresh_runs; --", "shopify"),
                (BOB, "ebay"),
                (BOB, "shopify"),
                (BOB, "shopify"),
            ],
        )
    assert main(["run"], run_env) == 0
    lines = log_lines(run_env)
    assert any("is not a UUID" in line for line in lines)
    assert any("unknown platform 'ebay'" in line for line in lines)
    assert any("duplicate credential row" in line for line in lines)
    sent = sorted((r.query["client_id"], r.query["platform"]) for r in backend.refreshes())
    assert sent == [(BOB, "all"), (BOB, "shopify")]
    assert runs(db)[0][:2] == ("succeeded", 0)
