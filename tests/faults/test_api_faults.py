"""Faults in the API's answers: each retried or failed as the guide's table of answers says."""

from __future__ import annotations

import time

import pytest

from analytics_refresh.cli import main
from tests.backend import Answer
from tests.conftest import log_lines
from tests.runs import ALICE, BOB, CAROL, jobs, runs


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


def test_api_refusing_connections_fails_every_job_with_the_reason(run_env, clients, db):
    env = {**run_env, "ANALYTICS_API_URL": "http://127.0.0.1:9", "REFRESH_MAX_ATTEMPTS": "2"}
    assert main(["run", "--platform", "all"], env) == 1
    recorded = jobs(db)
    assert len(recorded) == 3
    for status, attempts, http_status, _pc, _skus, error in recorded.values():
        assert (status, attempts, http_status) == ("failed", 2, None)
        assert "Connection refused" in error
    assert runs(db)[0][:2] == ("failed", 1)
    failed = [line for line in log_lines(env) if line.startswith("❌ FAILED")]
    assert len(failed) == 3
    assert all("connection failed: Connection refused after 2 attempts" in f for f in failed)


def test_reset_mid_response_is_retried_and_others_are_unaffected(run_env, clients, backend, db):
    backend.script(ALICE, "all", Answer(truncate=True), Answer(truncate=True), Answer())
    assert main(["run"], run_env) == 0
    recorded = jobs(db)
    assert recorded[(ALICE, "all")][:3] == ("succeeded", 3, 200)
    assert all(r[:2] == ("succeeded", 1) for k, r in recorded.items() if k != (ALICE, "all"))


def test_500_twice_then_200_succeeds_on_attempt_3(run_env, clients, backend, db):
    backend.script(BOB, "shopify", Answer(500), Answer(500), Answer())
    assert main(["run", "--client", BOB], run_env) == 0
    assert jobs(db)[(BOB, "shopify")][:3] == ("succeeded", 3, 200)
    assert any(
        line.startswith(f"✅ SUCCESS - {BOB} (shopify): 1 platforms, 7 SKUs [")
        and "attempt 3 after HTTP 500 x2]" in line
        for line in log_lines(run_env)
    )


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(run_env, clients, backend, db, status):
    backend.script(CAROL, "amazon", Answer(status, headers={"Retry-After": "2"}), Answer())
    assert main(["run", "--client", CAROL, "--platform", "amazon"], run_env) == 0
    first, second = backend.refreshes()
    assert second.at - first.at >= 2.0
    assert jobs(db)[(CAROL, "amazon")][:2] == ("succeeded", 2)


def test_retry_after_past_the_deadline_is_not_waited_for(run_env, clients, backend, db):
    backend.script(CAROL, "amazon", Answer(503, headers={"Retry-After": "600"}), Answer())
    started = time.monotonic()
    code = main(["run", "--client", CAROL, "--platform", "amazon", "--deadline", "5"], run_env)
    assert time.monotonic() - started < 4
    assert code == 1
    status, attempts, http_status, _pc, _skus, error = jobs(db)[(CAROL, "amazon")]
    assert (status, attempts, http_status) == ("failed", 1, 503)
    assert "no time left before the deadline" in error
    assert len(backend.refreshes()) == 1


def test_an_answer_trickling_past_the_timeout_is_cut_off(run_env, clients, backend, db):
    # Each byte arrives well inside the read timeout; the whole answer never does.
    backend.script(CAROL, "amazon", Answer(trickle=0.2), Answer())
    env = {**run_env, "REFRESH_TIMEOUT": "1.5"}
    started = time.monotonic()
    assert main(["run", "--client", CAROL, "--platform", "amazon"], env) == 0
    assert time.monotonic() - started < 6
    status, attempts, *_ = jobs(db)[(CAROL, "amazon")]
    assert (status, attempts) == ("succeeded", 2)
