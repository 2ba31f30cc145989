"""The deadline counts from the process start and bounds every phase: planning, every
database wait, the requests."""

from __future__ import annotations

import time

import psycopg2
import pytest

from tests.backend import Answer
from tests.faults.test_process_faults import fetch, finish, many_clients, start_run


@pytest.fixture
def locker(db_url):
    """A second session that can hold a table lock while a run waits on it."""
    conn = psycopg2.connect(db_url)
    yield conn
    conn.rollback()
    conn.close()


@pytest.mark.parametrize(
    ("table", "mode"),
    [
        ("client_api_credentials", "ACCESS EXCLUSIVE"),  # the plan cannot be read
        ("refresh_state", "ACCESS EXCLUSIVE"),  # the per-key state cannot be read
        ("refresh_jobs", "EXCLUSIVE"),  # the planned jobs cannot be written
    ],
)
def test_a_table_lock_held_elsewhere_cannot_hold_a_run_past_its_deadline(
    run_env, backend, db, locker, table, mode
):
    many_clients(db, 3)
    with locker.cursor() as cur:
        cur.execute(f"LOCK TABLE {table} IN {mode} MODE")  # held until the fixture ends
    env = {**run_env, "REFRESH_DEADLINE": "4"}
    started = time.monotonic()
    proc = start_run(env)
    code = finish(proc, timeout=60)
    elapsed = time.monotonic() - started
    locker.rollback()
    assert elapsed < 7.5, f"the run took {elapsed:.1f}s with a 4 s deadline"
    assert code == 6  # the deadline, reached while waiting for the database
    assert backend.refreshes() == []
    (status, exit_code, note) = fetch(db, "SELECT status, exit_code, note FROM refresh_runs")[0]
    assert (status, exit_code) == ("interrupted", 6)
    assert "deadline of 4s reached" in note


def test_the_deadline_counts_from_the_process_start(run_env, backend, db, locker):
    """Time spent waiting before the first request counts: 3 s of a 5 s deadline lost to a
    lock leaves 2 s for the jobs."""
    many_clients(db, 20)
    backend.default = Answer(sleep=0.5)
    with locker.cursor() as cur:
        cur.execute("LOCK TABLE client_api_credentials IN ACCESS EXCLUSIVE MODE")
    env = {**run_env, "REFRESH_DEADLINE": "5", "REFRESH_CONCURRENCY": "1"}
    started = time.monotonic()
    proc = start_run(env, "--platform", "shopify")
    time.sleep(3)
    locker.rollback()  # the plan can be read now, 3 s into the run
    assert finish(proc, timeout=60) == 6
    assert time.monotonic() - started < 7.5
    sent = len(backend.refreshes())
    assert 1 <= sent <= 5  # about 2 s of 0.5 s jobs, not 5 s of them
    assert fetch(db, "SELECT status FROM refresh_runs") == [("interrupted",)]
