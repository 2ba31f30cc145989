"""A session left holding the run lock by a run that vanished (a frozen process here: its
session stays open, its lease ages) does not lock everyone out: once its own lease has
expired, the next run ends that session and takes over, or says why it cannot and what to
set."""

from __future__ import annotations

import signal
import uuid

import psycopg2
import psycopg2.extensions
import pytest

from analytics_refresh.cli import main
from tests.backend import Answer
from tests.conftest import log_lines
from tests.faults.test_process_faults import fetch, finish, many_clients, start_run, wait_for


@pytest.fixture
def make_role(db, db_url):
    """Create login roles that may do what the runner does; return a URL for each."""
    made: list[str] = []

    def make() -> tuple[str, str]:
        name = f"ar_role_{uuid.uuid4().hex[:8]}"
        password = f"pw-{uuid.uuid4().hex}"
        with db.cursor() as cur:
            cur.execute(f'CREATE ROLE "{name}" LOGIN PASSWORD %s', (password,))
            cur.execute(f'GRANT USAGE ON SCHEMA public TO "{name}"')
            cur.execute(f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{name}"')
        made.append(name)
        return name, psycopg2.extensions.make_dsn(db_url, user=name, password=password)

    yield make
    admin = psycopg2.connect(psycopg2.extensions.make_dsn(db_url, dbname="postgres"))
    admin.autocommit = True
    for name in made:
        with db.cursor() as cur:
            cur.execute(f'DROP OWNED BY "{name}"')
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (name,),
            )
            cur.execute(f'DROP ROLE IF EXISTS "{name}"')
    admin.close()


def freeze_a_run(env: dict, backend, db):
    """Start a run, wait until it holds the lock and sends, then freeze it (SIGSTOP)."""
    old = start_run(env)
    wait_for(lambda: backend.refreshes())
    wait_for(lambda: fetch(db, "SELECT lock_pid FROM refresh_runs WHERE status = 'running'"))
    old.send_signal(signal.SIGSTOP)
    return old


def expire_its_lease(db) -> None:
    """As if the frozen run's promise had run out: it said 1 s, its last renewal was 10 s ago."""
    with db.cursor() as cur:
        cur.execute(
            "UPDATE refresh_runs SET lease_seconds = 1, "
            "heartbeat_at = now() - interval '10 seconds' WHERE status = 'running'"
        )


def by_status(db) -> dict:
    return dict(fetch(db, "SELECT status, count(*) FROM refresh_runs GROUP BY status"))


def test_a_stale_session_of_the_same_role_is_ended_and_the_next_run_takes_over(
    run_env, backend, db
):
    many_clients(db, 3)
    backend.default = Answer(sleep=3)
    env = {**run_env, "REFRESH_CONCURRENCY": "1", "REFRESH_PLATFORMS": "shopify"}
    old = freeze_a_run(env, backend, db)
    try:
        (lock_pid,) = fetch(db, "SELECT lock_pid FROM refresh_runs WHERE status = 'running'")[0]
        # Its lease is fresh: it may still be sending, so the next run does nothing.
        assert main(["run"], env) == 5
        assert len(backend.refreshes()) == 1
        assert fetch(db, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", lock_pid) == [(1,)]

        expire_its_lease(db)
        backend.default = Answer()
        assert main(["run"], env) == 0
        ended = [line for line in log_lines(env) if "Ended the database session" in line]
        assert ended, log_lines(env)[-5:]
        assert f"(server pid {lock_pid})" in ended[-1]
        assert "this run takes over" in ended[-1]
        assert by_status(db) == {"abandoned": 1, "skipped": 1, "succeeded": 1}
        assert fetch(db, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", lock_pid) == [(0,)]
    finally:
        old.send_signal(signal.SIGCONT)
    # Woken, the old run finds its lock gone and stops; its row stays abandoned.
    assert finish(old) == 6
    assert by_status(db) == {"abandoned": 1, "skipped": 1, "succeeded": 1}


def test_a_role_that_may_not_end_the_session_says_why_and_what_to_grant(
    run_env, backend, db, make_role, capsys
):
    many_clients(db, 2)
    backend.default = Answer(sleep=3)
    holder, holder_url = make_role()
    runner, runner_url = make_role()
    base = {**run_env, "REFRESH_CONCURRENCY": "1", "REFRESH_PLATFORMS": "shopify"}
    old = freeze_a_run({**base, "DATABASE_URL": holder_url}, backend, db)
    env = {**base, "DATABASE_URL": runner_url}
    try:
        (lock_pid,) = fetch(db, "SELECT lock_pid FROM refresh_runs WHERE status = 'running'")[0]
        expire_its_lease(db)
        assert main(["run"], env) == 5
        err = capsys.readouterr().err
        line = [x for x in log_lines(env) if "holds the lock" in x][-1]
        for text in (err, line):
            assert f"server pid {lock_pid}" in text
            assert f"role {runner} may not end a session of role {holder}" in text
            assert f"GRANT pg_signal_backend TO {runner}" in text
            assert "this run does nothing" in text
        (note,) = fetch(db, "SELECT note FROM refresh_runs WHERE status = 'skipped'")[0]
        assert f"GRANT pg_signal_backend TO {runner}" in note
        assert len(backend.refreshes()) == 1

        # What the message said to set: the next run takes over.
        with db.cursor() as cur:
            cur.execute(f'GRANT pg_signal_backend TO "{runner}"')
        backend.default = Answer()
        assert main(["run"], env) == 0
        assert by_status(db) == {"abandoned": 1, "skipped": 1, "succeeded": 1}
    finally:
        old.send_signal(signal.SIGCONT)
    assert finish(old) == 6
