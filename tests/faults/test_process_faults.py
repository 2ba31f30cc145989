"""One run at a time, abandoned runs, SIGTERM and the deadline: the runner as a process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg2

from analytics_refresh.cli import main
from tests.backend import Answer
from tests.conftest import connect_clients, log_lines

ROOT = Path(__file__).resolve().parents[2]


def many_clients(db, count: int) -> list[str]:
    ids = [str(uuid.UUID(int=i + 1)) for i in range(count)]
    connect_clients(db, {c: ("shopify",) for c in ids})
    return ids


def start_run(env: dict, *args: str) -> subprocess.Popen:
    """Start the scheduled entry point as cron would: its own process, its own cwd."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "analytics_refresh_cron.py"), *args],
        env={**os.environ, **env},
        # cwd: the session's empty directory (conftest), never the checkout and its .env
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def finish(proc: subprocess.Popen, timeout: float = 30) -> int:
    """Wait for the process and return its exit code, showing its stderr when it fails."""
    _, err = proc.communicate(timeout=timeout)
    if proc.returncode not in (0, 6):
        print(err.decode(errors="replace"))
    return proc.returncode


def wait_for(predicate, timeout: float = 20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def fetch(db, sql, *params):
    with db.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def test_second_run_exits_5_and_records_skipped(run_env, backend, db):
    many_clients(db, 3)
    backend.default = Answer(sleep=1.0)
    first = start_run({**run_env, "REFRESH_CONCURRENCY": "1", "REFRESH_PLATFORMS": "shopify"})
    try:
        wait_for(lambda: backend.refreshes())
        assert main(["run"], run_env) == 5
    finally:
        assert finish(first) == 0
    statuses = fetch(db, "SELECT status, exit_code FROM refresh_runs ORDER BY started_at")
    assert sorted(statuses) == [("skipped", 5), ("succeeded", 0)]
    assert any("Another refresh run holds the lock" in line for line in log_lines(run_env))
    # The loser planned nothing and called nothing.
    assert len(backend.refreshes()) == 3


def test_sigterm_finishes_in_flight_jobs_and_records_the_rest(run_env, backend, db):
    many_clients(db, 12)
    backend.default = Answer(sleep=0.8)
    env = {**run_env, "REFRESH_CONCURRENCY": "2", "REFRESH_PLATFORMS": "shopify"}
    proc = start_run(env)
    wait_for(lambda: len(backend.refreshes()) >= 3)
    proc.send_signal(signal.SIGTERM)
    assert finish(proc) == 6

    sent = len(backend.refreshes())
    rows = dict(fetch(db, "SELECT status, count(*) FROM refresh_jobs GROUP BY status"))
    # Every job that was sent finished and was recorded; nothing else was started.
    assert rows["succeeded"] == sent
    assert rows["not_attempted"] == 12 - sent
    assert "failed" not in rows
    run = fetch(
        db, "SELECT status, exit_code, jobs_succeeded, jobs_not_attempted, note FROM refresh_runs"
    )[0]
    assert run[:4] == ("interrupted", 6, sent, 12 - sent)
    assert "SIGTERM" in run[4]
    lines = log_lines(env)
    assert any(line.startswith("Received SIGTERM") for line in lines)
    assert any(f"{12 - sent} jobs not attempted" in line for line in lines)


def test_sigkilled_run_is_marked_abandoned_by_the_next(run_env, backend, db):
    clients = many_clients(db, 4)
    backend.default = Answer(sleep=5)
    env = {**run_env, "REFRESH_CONCURRENCY": "1", "REFRESH_PLATFORMS": "shopify"}
    proc = start_run(env)
    wait_for(lambda: backend.refreshes())
    proc.kill()
    finish(proc)
    killed = fetch(db, "SELECT run_id::text, status FROM refresh_runs")
    assert [s for _, s in killed] == ["running"]

    backend.default = Answer()
    assert main(["run"], env) == 0
    by_run = dict(fetch(db, "SELECT run_id::text, status FROM refresh_runs"))
    assert by_run[killed[0][0]] == "abandoned"
    # The killed run's record still says every job was planned; the new run did them all.
    assert fetch(db, "SELECT count(*) FROM refresh_jobs WHERE run_id = %s", killed[0][0]) == [(4,)]
    done = fetch(db, "SELECT client_id::text FROM refresh_jobs WHERE status = 'succeeded'")
    assert sorted(c for (c,) in done) == sorted(clients)


def test_deadline_stops_new_jobs_and_exits_6(run_env, backend, db):
    many_clients(db, 10)
    backend.default = Answer(sleep=0.7)
    env = {**run_env, "REFRESH_CONCURRENCY": "1", "REFRESH_PLATFORMS": "shopify"}
    started = time.monotonic()
    assert main(["run", "--deadline", "2.5"], env) == 6
    assert time.monotonic() - started < 5
    rows = dict(fetch(db, "SELECT status, count(*) FROM refresh_jobs GROUP BY status"))
    assert rows["not_attempted"] >= 6
    assert rows["succeeded"] + rows["not_attempted"] == 10
    lines = log_lines(env)
    assert any(
        "deadline of 2.5s reached" in line and "jobs not attempted" in line for line in lines
    )


def test_hung_api_times_out_and_the_run_ends_by_its_deadline(run_env, backend, db):
    many_clients(db, 1)
    backend.default = Answer(sleep=30)
    env = {**run_env, "REFRESH_PLATFORMS": "shopify", "REFRESH_TIMEOUT": "1.5"}
    started = time.monotonic()
    code = main(["run", "--deadline", "4"], env)
    assert time.monotonic() - started < 7
    assert code == 1
    status, attempts, error = fetch(db, "SELECT status, attempts, error FROM refresh_jobs")[0]
    assert status == "failed"
    assert attempts >= 2
    assert "timed out" in error


def test_lost_lock_session_stops_new_jobs(run_env, backend, db):
    many_clients(db, 8)
    backend.default = Answer(sleep=0.5)
    env = {**run_env, "REFRESH_CONCURRENCY": "1", "REFRESH_PLATFORMS": "shopify"}
    proc = start_run(env)
    wait_for(lambda: len(backend.refreshes()) >= 2)
    terminated = fetch(
        db,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'analytics-refresh lock' AND datname = current_database()",
    )
    assert terminated == [(True,)]
    assert finish(proc) == 6
    run = fetch(db, "SELECT status, exit_code, note FROM refresh_runs")[0]
    assert run[:2] == ("interrupted", 6)
    assert "exclusivity cannot be guaranteed" in run[2]
    assert len(backend.refreshes()) < 8


def test_history_survives_its_connection_being_killed(run_env, backend, db):
    many_clients(db, 6)
    backend.default = Answer(sleep=0.4)
    env = {**run_env, "REFRESH_CONCURRENCY": "1", "REFRESH_PLATFORMS": "shopify"}
    proc = start_run(env)
    wait_for(lambda: len(backend.refreshes()) >= 2)
    killed = fetch(
        db,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'analytics-refresh' AND datname = current_database() "
        "AND pid <> pg_backend_pid()",
    )
    assert (True,) in killed  # the history writer's session really was cut
    assert finish(proc) == 0
    assert fetch(db, "SELECT status, jobs_succeeded FROM refresh_runs") == [("succeeded", 6)]
    assert fetch(db, "SELECT count(*) FROM refresh_jobs WHERE status = 'succeeded'") == [(6,)]


def test_unreachable_database_exits_4(run_env, capsys):
    env = {**run_env, "DATABASE_URL": "postgresql://nobody:pw-secret@127.0.0.1:1/none"}
    assert main(["run"], env) == 4
    err = capsys.readouterr().err
    assert "cannot connect" in err
    assert "pw-secret" not in err
    assert "DATABASE_URL" in err


def test_missing_tables_exit_4_with_the_fix(run_env, empty_db_url, capsys):
    assert main(["run"], {**run_env, "DATABASE_URL": empty_db_url}) == 4
    assert "analytics-refresh db init" in capsys.readouterr().err
    assert main(["db", "init"], {**run_env, "DATABASE_URL": empty_db_url}) == 0
    assert main(["db", "init"], {**run_env, "DATABASE_URL": empty_db_url}) == 0
    conn = psycopg2.connect(empty_db_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('refresh_runs'), to_regclass('refresh_jobs')")
            assert cur.fetchone() == ("refresh_runs", "refresh_jobs")
    finally:
        conn.close()


def test_tables_of_an_older_release_exit_4_until_db_init(run_env, db, capsys):
    with db.cursor() as cur:
        cur.execute("ALTER TABLE refresh_runs DROP COLUMN note")
    assert main(["run"], run_env) == 4
    err = capsys.readouterr().err
    assert "older release" in err
    assert "analytics-refresh db init" in err
    assert main(["db", "init"], run_env) == 0
    assert main(["run"], run_env) == 0


def test_an_unexpected_database_error_exits_4_not_a_traceback(run_env, db, capsys):
    with db.cursor() as cur:
        cur.execute("REVOKE ALL ON refresh_jobs FROM PUBLIC")
        cur.execute("CREATE ROLE limited LOGIN")
        cur.execute("GRANT SELECT, INSERT, UPDATE ON refresh_runs TO limited")
        cur.execute("GRANT SELECT ON client_api_credentials TO limited")
    limited = psycopg2.extensions.make_dsn(run_env["DATABASE_URL"], user="limited")
    connect_clients(db, {str(uuid.UUID(int=1)): ("shopify",)})
    code = main(["run"], {**run_env, "DATABASE_URL": limited})
    with db.cursor() as cur:
        cur.execute("DROP OWNED BY limited")
        cur.execute("DROP ROLE limited")
    assert code == 4
    assert "permission denied" in capsys.readouterr().err


def test_sigterm_during_a_retry_backoff_is_an_interrupted_run(run_env, backend, db):
    many_clients(db, 1)
    backend.default = Answer(500, {"error": "down"})
    env = {**run_env, "REFRESH_PLATFORMS": "shopify", "REFRESH_MAX_ATTEMPTS": "10"}
    proc = start_run(env)
    wait_for(lambda: len(backend.refreshes()) >= 2)
    proc.send_signal(signal.SIGTERM)
    assert finish(proc) == 6
    run = fetch(db, "SELECT status, exit_code, jobs_failed FROM refresh_runs")[0]
    assert run == ("interrupted", 6, 1)
    ((error,),) = fetch(db, "SELECT error FROM refresh_jobs")
    assert "not retried: received SIGTERM" in error
