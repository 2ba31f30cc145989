"""The process in hostile surroundings: passwords in odd URLs, closed output streams,
SIGHUP, a log folder removed mid-run, a role without privileges, a table locked mid-run.

Each fault is driven from outside, against a real PostgreSQL and a real HTTP backend on
loopback, and the test reads what an operator reads: the exit code, stderr, the log file,
the heartbeat body and the run's rows.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from urllib.parse import quote

import psycopg2
import psycopg2.extensions
import pytest

from analytics_refresh.cli import main
from tests.backend import Answer
from tests.conftest import ROOT, connect_clients, log_lines
from tests.faults.test_process_faults import fetch, wait_for
from tests.ops_helpers import PingRecorder

CRON_SCRIPT = ROOT / "analytics_refresh_cron.py"
LOG_LINE = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} - "


@pytest.fixture
def monitor():
    recorder = PingRecorder()
    yield recorder
    recorder.stop()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def many_clients(db, count: int) -> list[str]:
    ids = [str(uuid.UUID(int=0xA000 + i)) for i in range(count)]
    connect_clients(db, {c: ("shopify",) for c in ids})
    return ids


def child_environ(env: dict) -> dict:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH")
    return {**{k: os.environ[k] for k in keep if k in os.environ}, **env}


def start_run(env: dict, *args: str, close: tuple[int, ...] = ()) -> subprocess.Popen:
    """Start the cron entry point as its own process, with the descriptors ``close`` closed
    (as a shell's ``2>&-`` does) and stderr piped otherwise."""
    argv = [sys.executable, str(CRON_SCRIPT), *args]
    if close:
        # Close them in a wrapper, then exec: the runner starts without those descriptors.
        code = (
            f"import os, sys\nfor fd in {close!r}: os.close(fd)\n"
            "os.execv(sys.argv[1], sys.argv[1:])"
        )
        argv = [sys.executable, "-c", code, *argv]
    return subprocess.Popen(
        argv,
        env=child_environ(env),
        # cwd: the session's empty directory (conftest), never the checkout and its .env
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL if 2 in close else subprocess.PIPE,
    )


def log_text(env: dict) -> str:
    return (Path(env["LOG_DIR"]) / "analytics_refresh_cron.log").read_text(encoding="utf-8")


def fragments(secret: str, shortest: int = 3) -> set[str]:
    """Every piece of ``secret`` at least ``shortest`` characters long."""
    return {secret[i:j] for i in range(len(secret)) for j in range(i + shortest, len(secret) + 1)}


# -- issue 11.5: secrets are safe in every spelling of a URL -----------------------------------
PASSWORDS = [
    "p@ss/w?rd#x",
    "Kx7@Wq9",
    "Jv/Lm3Q",
    "Rt:Yu@Pz",
    "Hb?Nc8Vd",
    "Gf#Ws2Ek",
    "@Zq5Xw",
    "Mk4Tj@",
    "Qw//Er@@Ty",
    "Bn:/?#@Vc",
    "Dx%Fg/Hj",
    "Wz@Kl:Mn/Op?Qr#St",
    "Pa%Zs9@Lk",
    "Pq[1]@Lm",
    "Sx Yz@Wv",
]
SHAPES = [
    "postgresql://runner:{pw}@db.example.com:5432/analytics",
    "postgres://runner:{pw}@10.1.2.3/analytics?sslmode=require",
    "postgresql://runner:{pw}@db1.example.com,db2.example.com/analytics",
    "postgresql://runner:{pw}@[::1]:5432/analytics",
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("password", PASSWORDS)
def test_an_unencoded_password_is_refused_without_a_fragment_of_it(
    tmp_path, monitor, capsys, secret, shape, password
):
    env = {
        "DATABASE_URL": shape.format(pw=password),
        "API_SECRET_KEY": secret,
        "LOG_DIR": str(tmp_path / "logs"),
        "HEALTHCHECK_URL": monitor.url,
    }
    assert main(["run"], env) == 3
    err = capsys.readouterr().err
    assert "DATABASE_URL is invalid: the URL cannot be parsed" in err
    assert "percent-encode the special characters of a password" in err
    log = log_text(env)
    assert "DATABASE_URL is invalid: the URL cannot be parsed" in log
    assert monitor.paths() == ["/3"]
    body = monitor.pings[0].body
    assert "DATABASE_URL is invalid" in body
    for text in (err, log, body):
        leaked = {piece for piece in fragments(password) if piece in text}
        assert not leaked, leaked


@pytest.mark.parametrize(
    "dsn",
    [
        "host=db.example.com user=runner password='Kx7@Wq9 dbname=analytics",
        "host=db.example.com user=runner password = 'Kx7@Wq9\\' dbname=analytics",
        "postgresql://runner:Kx7%ZZWq9@db.example.com/analytics",
        "postgresql://runner:Kx7@Wq9@db.example.com/analytics",
    ],
)
def test_a_malformed_connection_string_is_refused_without_its_password(
    tmp_path, monitor, capsys, secret, dsn
):
    env = {"DATABASE_URL": dsn, "API_SECRET_KEY": secret, "LOG_DIR": str(tmp_path / "logs")}
    assert main(["run"], {**env, "HEALTHCHECK_URL": monitor.url}) == 3
    err = capsys.readouterr().err
    assert "DATABASE_URL is invalid" in err
    assert "percent-encode" in err
    for text in (err, log_text(env), monitor.pings[0].body):
        leaked = {piece for piece in fragments("Kx7@Wq9") if piece in text}
        assert not leaked, leaked


@pytest.mark.parametrize("password", PASSWORDS)
def test_an_encoded_password_to_a_closed_port_exits_4_without_it(
    tmp_path, monitor, capsys, secret, password
):
    port = closed_port()
    encoded = quote(password, safe="")
    env = {
        "DATABASE_URL": f"postgresql://runner:{encoded}@127.0.0.1:{port}/analytics",
        "API_SECRET_KEY": secret,
        "LOG_DIR": str(tmp_path / "logs"),
        "HEALTHCHECK_URL": monitor.url,
    }
    assert main(["run"], env) == 4
    err = capsys.readouterr().err
    assert f"cannot connect to database 'analytics' on 127.0.0.1:{port}" in err
    assert monitor.paths() == ["/4"]
    for text in (err, log_text(env), monitor.pings[0].body):
        for secret_text in (password, quote(password, safe="")):
            leaked = {piece for piece in fragments(secret_text, 4) if piece in text}
            assert not leaked, leaked


# -- issue 11.6: the process survives its surroundings -----------------------------------------
@pytest.mark.parametrize("closed", [(2,), (1,), (1, 2)], ids=["stderr", "stdout", "both"])
def test_a_run_with_closed_output_streams_exits_0_and_logs_to_the_file(
    run_env, backend, db, closed
):
    many_clients(db, 2)
    env = {**run_env, "REFRESH_PLATFORMS": "shopify"}
    proc = start_run(env, close=closed)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = log_lines(env)
    assert lines[0].startswith("Starting analytics refresh cron job")
    assert sum(line.startswith("✅ SUCCESS") for line in lines) == 2
    assert any(
        line.startswith("Results: 2 successful, 0 failed out of 2 total jobs") for line in lines
    )
    # Nothing else was written into the file through a reused descriptor.
    import re

    assert all(re.match(LOG_LINE, line) for line in log_text(env).splitlines())
    assert fetch(db, "SELECT status, exit_code FROM refresh_runs") == [("succeeded", 0)]


def test_a_config_error_with_stderr_closed_still_reaches_the_log(run_env):
    env = {**run_env, "REFRESH_TIMEOUT": "never"}
    proc = start_run(env, close=(2,))
    proc.communicate(timeout=30)
    assert proc.returncode == 3
    assert "REFRESH_TIMEOUT='never' is invalid" in log_text(env)


def test_sighup_mid_run_is_a_clean_interruption(run_env, backend, db):
    many_clients(db, 8)
    backend.default = Answer(sleep=0.6)
    env = {**run_env, "REFRESH_CONCURRENCY": "2", "REFRESH_PLATFORMS": "shopify"}
    proc = start_run(env)
    wait_for(lambda: len(backend.refreshes()) >= 2)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 6, err
    sent = len(backend.refreshes())
    assert sent < 8
    status, code, note = fetch(db, "SELECT status, exit_code, note FROM refresh_runs")[0]
    assert (status, code) == ("interrupted", 6)
    assert "SIGHUP" in note
    rows = dict(fetch(db, "SELECT status, count(*) FROM refresh_jobs GROUP BY status"))
    assert rows == {"succeeded": sent, "not_attempted": 8 - sent}
    lines = log_lines(env)
    assert any(line.startswith("Received SIGHUP: no new job starts") for line in lines)


def test_a_log_folder_removed_mid_run_is_recreated_with_the_later_lines(run_env, backend, db):
    many_clients(db, 4)
    backend.default = Answer(sleep=0.5)
    env = {**run_env, "REFRESH_CONCURRENCY": "1", "REFRESH_PLATFORMS": "shopify"}
    proc = start_run(env)
    wait_for(lambda: backend.refreshes())
    shutil.rmtree(env["LOG_DIR"])
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = log_lines(env)
    # The new file holds what came after: the remaining jobs and the results.
    assert not any(line.startswith("Starting analytics refresh") for line in lines)
    assert sum(line.startswith("✅ SUCCESS") for line in lines) >= 3
    assert lines[-1].startswith("Results: 4 successful, 0 failed out of 4 total jobs")


# -- issue 10: every run that was recorded running ends recorded ---------------------------------
@pytest.fixture
def limited_role(db, db_url):
    """A login role that may do everything the runner does except insert into refresh_jobs."""
    name = f"ar_limited_{uuid.uuid4().hex[:8]}"
    password = "limited-role-password-xyz"
    with db.cursor() as cur:
        cur.execute(f'CREATE ROLE "{name}" LOGIN PASSWORD %s', (password,))
        cur.execute(f'GRANT USAGE ON SCHEMA public TO "{name}"')
        cur.execute(
            f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{name}"'
        )
        cur.execute(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{name}"')
        cur.execute(f'REVOKE INSERT ON refresh_jobs FROM "{name}"')
    yield psycopg2.extensions.make_dsn(db_url, user=name, password=password)
    with db.cursor() as cur:
        cur.execute(f'DROP OWNED BY "{name}"')
    # The test database is dropped after the test; the role is the server's, so drop it too.
    admin = psycopg2.connect(psycopg2.extensions.make_dsn(db_url, dbname="postgres"))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP ROLE IF EXISTS "{name}"')
    admin.close()


def test_a_role_without_insert_on_refresh_jobs_ends_its_run_recorded(
    run_env, backend, db, limited_role, monitor, capsys
):
    many_clients(db, 2)
    env = {**run_env, "DATABASE_URL": limited_role, "HEALTHCHECK_URL": monitor.url}
    assert main(["run"], env) == 4
    assert backend.refreshes() == []
    ((status, code, note),) = fetch(db, "SELECT status, exit_code, note FROM refresh_runs")
    assert (status, code) == ("failed", 4)
    assert "permission denied" in note
    assert "refresh_jobs" in note
    assert monitor.paths() == ["/start", "/4"]
    assert "permission denied" in monitor.pings[-1].body
    assert any("exit 4" in line and "permission denied" in line for line in log_lines(env))
    assert "limited-role-password-xyz" not in capsys.readouterr().err + log_text(env)


def test_a_table_locked_mid_run_ends_with_a_final_status(run_env, backend, db, db_url):
    many_clients(db, 6)
    backend.default = Answer(sleep=0.4)
    with db.cursor() as cur:
        cur.execute("SELECT current_database()")
        (name,) = cur.fetchone()
        # What an operator sets; the runner bounds each wait itself, by its deadline.
        cur.execute(f"ALTER DATABASE \"{name}\" SET lock_timeout = '1s'")
    env = {**run_env, "REFRESH_CONCURRENCY": "1", "REFRESH_PLATFORMS": "shopify"}
    proc = start_run(env, "--deadline", "3")
    locker = psycopg2.connect(db_url)
    try:
        wait_for(lambda: backend.refreshes())
        wait_for(lambda: fetch(db, "SELECT 1 FROM refresh_runs WHERE status = 'running'"))
        with locker.cursor() as cur:
            cur.execute("LOCK TABLE refresh_jobs IN ACCESS EXCLUSIVE MODE")
        # Hold it for the rest of the run: every job row it writes waits and times out.
        _, err = proc.communicate(timeout=40)
    finally:
        locker.rollback()
        locker.close()
        if proc.poll() is None:
            proc.kill()
    ((status, code, note),) = fetch(db, "SELECT status, exit_code, note FROM refresh_runs")
    assert status != "running"
    assert (status, code) == ("failed", 4), err
    assert proc.returncode == code
    assert note == "5 job records could not be written to refresh_jobs" or note.endswith(
        "job records could not be written to refresh_jobs"
    )


def test_a_lock_released_in_time_costs_the_run_nothing(run_env, backend, db, db_url):
    many_clients(db, 4)
    backend.default = Answer(sleep=0.3)
    env = {**run_env, "REFRESH_CONCURRENCY": "1", "REFRESH_PLATFORMS": "shopify"}
    proc = start_run(env)
    locker = psycopg2.connect(db_url)
    try:
        wait_for(lambda: backend.refreshes())
        with locker.cursor() as cur:
            cur.execute("LOCK TABLE refresh_jobs IN ACCESS EXCLUSIVE MODE")
        release = threading.Timer(0.8, locker.rollback)
        release.start()
        _, err = proc.communicate(timeout=30)
        release.join()
    finally:
        locker.close()
    assert proc.returncode == 0, err
    assert fetch(db, "SELECT status, exit_code, jobs_succeeded FROM refresh_runs") == [
        ("succeeded", 0, 4)
    ]
    assert dict(fetch(db, "SELECT status, count(*) FROM refresh_jobs GROUP BY status")) == {
        "succeeded": 4
    }
