"""Exclusivity when the lock is lost at any moment, and through a database restart: a run
that loses its lock stops sending at once and exits 6; a new run never sends while an older
run is alive, and says whether the older one was alive or dead."""

from __future__ import annotations

import socket
import time
import uuid

from analytics_refresh.cli import main
from tests.backend import Answer
from tests.conftest import log_lines
from tests.faults.test_process_faults import fetch, finish, many_clients, start_run, wait_for

KILL_LOCK = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE application_name = 'analytics-refresh lock' AND datname = current_database()"
)
# What a restart or a failover does to the runner: every session of the database is cut.
KILL_ALL = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
    "AND backend_type = 'client backend'"
)


def test_lock_lost_after_the_last_job_started_is_noticed(run_env, backend, db):
    many_clients(db, 2)
    backend.default = Answer(sleep=2.5)
    env = {**run_env, "REFRESH_CONCURRENCY": "2", "REFRESH_PLATFORMS": "shopify"}
    proc = start_run(env)
    wait_for(lambda: len(backend.refreshes()) >= 2)  # every job has started
    assert fetch(db, KILL_LOCK) == [(True,)]
    assert finish(proc) == 6
    status, code, note = fetch(db, "SELECT status, exit_code, note FROM refresh_runs")[0]
    assert (status, code) == ("interrupted", 6)
    assert "exclusivity cannot be guaranteed" in note
    assert len(backend.refreshes()) == 2


def test_lock_lost_during_a_retry_backoff_stops_the_retry(run_env, backend, db):
    (client,) = many_clients(db, 1)
    backend.script(client, "shopify", Answer(503, {"error": "busy"}, headers={"Retry-After": "4"}))
    env = {**run_env, "REFRESH_PLATFORMS": "shopify", "REFRESH_MAX_ATTEMPTS": "5"}
    proc = start_run(env)
    wait_for(lambda: backend.refreshes())
    time.sleep(0.3)
    assert fetch(db, KILL_LOCK) == [(True,)]
    started = time.monotonic()
    assert finish(proc) == 6
    assert time.monotonic() - started < 3.5  # not after the 4 s backoff and a new attempt
    assert len(backend.refreshes()) == 1  # no retry was sent after the loss
    (error,) = fetch(db, "SELECT error FROM refresh_jobs")[0]
    assert "not retried: the database session holding the run lock was lost" in error


def test_after_a_database_restart_a_new_run_waits_for_the_live_one(run_env, backend, db, capsys):
    many_clients(db, 3)
    backend.default = Answer(sleep=3)
    env = {**run_env, "REFRESH_CONCURRENCY": "1", "REFRESH_PLATFORMS": "shopify"}
    old = start_run(env)
    wait_for(lambda: backend.refreshes())
    assert (True,) in fetch(db, KILL_ALL)  # the old run's lock is gone with its session

    # The lock is free now, but the old run is alive with a request in flight.
    assert main(["run"], env) == 5
    lines = log_lines(env)
    alive = [line for line in lines if "is still alive" in line]
    assert alive, lines[-5:]
    assert "this run does nothing" in alive[-1]
    assert len(backend.refreshes()) == 1  # the new run sent nothing

    assert finish(old) == 6  # the old run noticed the loss and stopped sending
    rows = dict(fetch(db, "SELECT status, count(*) FROM refresh_runs GROUP BY status"))
    assert rows == {"interrupted": 1, "skipped": 1}
    assert len(backend.refreshes()) == 1

    # Once it has ended, the next run goes ahead.
    backend.default = Answer()
    assert main(["run"], env) == 0


def test_a_dead_run_is_told_from_a_live_one(run_env, backend, db):
    many_clients(db, 2)
    backend.default = Answer(sleep=5)
    env = {**run_env, "REFRESH_CONCURRENCY": "1", "REFRESH_PLATFORMS": "shopify"}
    old = start_run(env)
    wait_for(lambda: backend.refreshes())
    old.kill()
    finish(old)
    backend.default = Answer()
    assert main(["run"], env) == 0
    gone = [line for line in log_lines(env) if "marked abandoned" in line]
    assert gone
    assert "it is gone" in gone[-1]
    assert f"(pid {old.pid})" in gone[-1]


def running_row(db, *, host: str, seconds_ago: float, machine: str | None = None) -> str:
    """A row left 'running' by a run elsewhere whose lease was last renewed that long ago."""
    run_id = str(uuid.uuid4())
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO refresh_runs (run_id, trigger, host, pid, machine, status, started_at,"
            " heartbeat_at) VALUES (%s, 'cron', %s, 4242, %s, 'running',"
            " now() - interval '1 hour', now() - make_interval(secs => %s))",
            (run_id, host, machine, seconds_ago),
        )
    return run_id


def test_a_lease_renewed_elsewhere_keeps_a_new_run_out(run_env, backend, db):
    many_clients(db, 1)
    other = running_row(db, host="elsewhere", seconds_ago=10)
    env = {**run_env, "REFRESH_TIMEOUT": "5"}
    assert main(["run"], env) == 5
    assert backend.refreshes() == []
    assert fetch(db, "SELECT status FROM refresh_runs WHERE run_id = %s", other) == [("running",)]
    line = [x for x in log_lines(env) if "is still alive" in x][-1]
    assert f"run {other} on elsewhere (pid 4242)" in line


def test_a_lease_older_than_the_timeout_is_a_dead_run(run_env, backend, db):
    many_clients(db, 1)
    # A row of a release that did not store its lease (lease_seconds NULL) is judged by
    # the new run's own: REFRESH_TIMEOUT + 30 s (tests/test_claim.py: a stored one wins).
    alive = running_row(db, host="elsewhere", seconds_ago=40)
    env = {**run_env, "REFRESH_TIMEOUT": "20"}
    assert main(["run"], env) == 5  # 40 s < 20 + 30 s: it may still be sending
    with db.cursor() as cur:
        cur.execute("DELETE FROM refresh_runs WHERE status = 'skipped'")
    env = {**run_env, "REFRESH_TIMEOUT": "5"}
    assert main(["run"], env) == 0  # 40 s > 5 + 30 s: gone
    assert fetch(db, "SELECT status FROM refresh_runs WHERE run_id = %s", alive) == [("abandoned",)]
    assert fetch(
        db, "SELECT status, jobs_succeeded FROM refresh_runs WHERE status <> 'abandoned'"
    ) == [("succeeded", 2)]


def test_the_same_host_name_in_another_pid_namespace_is_judged_by_its_lease(run_env, backend, db):
    """A container or machine of the same name: its pid says nothing here."""
    many_clients(db, 1)
    other = running_row(db, host=socket.gethostname(), seconds_ago=1, machine="another-boot/1")
    assert main(["run"], run_env) == 5  # pid 4242 is not ours to check: the fresh lease wins
    assert fetch(db, "SELECT status FROM refresh_runs WHERE run_id = %s", other) == [("running",)]
