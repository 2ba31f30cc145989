"""A database that stops answering (connections open, nothing comes back): the gate closes
without the dispatcher ever waiting on it, closing the claim is bounded, and the records
it could not write are counted, not dropped."""

from __future__ import annotations

import time

import pytest

from analytics_refresh.claim import CLOSE_SECONDS, CONFIRM_SECONDS, FINAL_SECONDS, RunClaim
from analytics_refresh.cli import main
from analytics_refresh.clock import Deadline
from analytics_refresh.gate import may_start
from analytics_refresh.outcome import JobRecord
from analytics_refresh.plan import Job
from analytics_refresh.settings import Settings
from analytics_refresh.stop import StopRequest
from tests.backend import Answer
from tests.conftest import log_lines
from tests.faults.proxy import SilentProxy
from tests.faults.test_process_faults import fetch, finish, many_clients, start_run, wait_for
from tests.runs import ALICE, BOB


@pytest.fixture
def proxy(db_url):
    proxy = SilentProxy(db_url).start()
    yield proxy
    proxy.stop()


def test_a_silent_database_closes_the_gate_and_the_claim_closes_in_bounded_time(db, db_url, proxy):
    deadline, stop = Deadline(300), StopRequest()
    claim = RunClaim(proxy.url(db_url), Settings(), deadline, stop)
    claim.claim()
    claim.keep()
    jobs = [Job(ALICE, "shopify"), Job(BOB, "shopify")]
    claim.queue_planned(jobs, [])
    claim.queue_record(JobRecord(jobs[0], "succeeded", 1, 200, 10))
    wait_for(lambda: fetch(db, "SELECT 1 FROM refresh_jobs WHERE status = 'succeeded'"))
    assert may_start(stop, deadline, claim)

    proxy.freeze()
    frozen = time.monotonic()
    claim.queue_record(JobRecord(jobs[1], "failed", 1, 500, 10, error="HTTP 500"))
    asked = 0
    while may_start(stop, deadline, claim):  # the dispatcher's question: it never waits
        started = time.monotonic()
        asked += 1
        assert time.monotonic() - started < 0.05
        assert time.monotonic() - frozen < CONFIRM_SECONDS + 3
        time.sleep(0.05)
    assert asked > 10
    assert stop.reason.startswith("the database stopped answering")
    assert "exclusivity cannot be guaranteed" in stop.reason

    closing = time.monotonic()
    unrecorded = claim.stop_keeping()
    claim.release()
    took = time.monotonic() - closing
    # The thread gets CLOSE_SECONDS, the final writes FINAL_SECONDS in all, the lock's
    # release its own check's bound: a small fixed bound, whatever the database does.
    assert took < 2 * CLOSE_SECONDS + FINAL_SECONDS + 8, took
    assert unrecorded == 1  # the failed job's record: counted, not dropped

    proxy.thaw()
    rows = dict(fetch(db, "SELECT client_id::text, status FROM refresh_jobs"))
    assert rows == {ALICE: "succeeded", BOB: "not_attempted"}


def test_a_run_whose_database_goes_silent_ends_bounded_and_the_next_runs_normally(
    run_env, backend, db, db_url, proxy
):
    many_clients(db, 60)  # 30 s of jobs: far more than the gate needs to close
    backend.default = Answer(sleep=0.5)
    env = {
        **run_env,
        "DATABASE_URL": proxy.url(db_url),
        "REFRESH_CONCURRENCY": "1",
        "REFRESH_PLATFORMS": "shopify",
    }
    run = start_run(env)
    try:
        wait_for(lambda: len(backend.refreshes()) >= 2)
        proxy.freeze()
        frozen = time.monotonic()
        code = finish(run, timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    took = time.monotonic() - frozen
    # The gate closes within CONFIRM_SECONDS; the job in flight ends; closing the claim,
    # the last lock check and the final writes are bounded; no wait is the database's.
    assert took < CONFIRM_SECONDS + 2 * CLOSE_SECONDS + FINAL_SECONDS + 15, took
    assert code == 4  # finished jobs could not be recorded: the run's record is incomplete
    assert len(backend.refreshes()) < 60
    lines = log_lines(env)
    assert any("the database stopped answering" in line for line in lines), lines[-8:]

    proxy.thaw()
    backend.default = Answer()
    assert main(["run"], env) == 0
    statuses = dict(fetch(db, "SELECT status, count(*) FROM refresh_runs GROUP BY status"))
    assert statuses == {"abandoned": 1, "succeeded": 1}
