"""What an operator sees: every failure where they look, every typo named, nothing silent.

Each test drives the CLI as a user does, through ``main(argv, environ)``, or as a process of
its own where the terminal or the environment is what matters, and asserts the very line,
row or exit code the operator relies on.
"""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from analytics_refresh.cli import main
from tests.backend import Answer
from tests.conftest import ROOT, connect_clients, log_lines
from tests.ops_helpers import PingRecorder
from tests.runs import ALICE, BOB, CAROL, jobs, runs

CRON_SCRIPT = ROOT / "analytics_refresh_cron.py"
CLI = Path(sys.executable).with_name("analytics-refresh")
UNKNOWN = "0e0e0e0e-0000-4000-8000-000000000001"
OTHER_UNKNOWN = "0e0e0e0e-0000-4000-8000-000000000002"


@pytest.fixture
def monitor():
    recorder = PingRecorder()
    yield recorder
    recorder.stop()


@pytest.fixture
def offline_env(tmp_path, secret) -> dict:
    """Settings for a run that fails before it needs a database or an API."""
    return {
        "DATABASE_URL": closed_port_url().replace("http", "postgresql", 1) + "/analytics",
        "ANALYTICS_API_URL": closed_port_url(),
        "API_SECRET_KEY": secret,
        "LOG_DIR": str(tmp_path / "logs"),
    }


def closed_port_url() -> str:
    """An http URL on loopback where nothing listens (a port just freed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def base_environ(**extra: str) -> dict:
    """A clean environment for a child process: no variable of the caller's leaks in."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "SYSTEMROOT")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.setdefault("PATH", "/usr/bin:/bin")
    return {**env, **extra}


def run_process(argv, env: dict, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a command as its own process, stdin not a terminal, output piped."""
    return subprocess.run(
        argv,
        env=base_environ(**env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_in_pty(argv, env: dict, cwd: Path, *, stdout_pty: bool = True, timeout: float = 30):
    """Run a command with stdin (and stdout, stderr) on a pseudo-terminal, as from a shell.

    Return the exit code, what reached the terminal, and what reached piped stdout
    (when ``stdout_pty`` is false).
    """
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        argv,
        env=base_environ(**env),
        cwd=cwd,
        stdin=slave,
        stdout=slave if stdout_pty else subprocess.PIPE,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    terminal = b""
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the terminal closed: every writer has exited
                    break
                if not chunk:
                    break
                terminal += chunk
            elif proc.poll() is not None and not stdout_pty:
                break
        piped = proc.stdout.read().decode() if proc.stdout else ""
        code = proc.wait(timeout=max(1, end - time.monotonic()))
    finally:
        os.close(master)
        if proc.stdout:
            proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
    return code, terminal.decode(errors="replace").replace("\r\n", "\n"), piped


def log_text(env: dict) -> str:
    return (Path(env["LOG_DIR"]) / "analytics_refresh_cron.log").read_text(encoding="utf-8")


def trigger_of_last_run(db) -> str:
    with db.cursor() as cur:
        cur.execute("SELECT trigger FROM refresh_runs ORDER BY started_at DESC LIMIT 1")
        return cur.fetchone()[0]


# -- 1. configuration and database errors reach the log file and the heartbeat ----------------
def test_invalid_setting_exits_3_in_the_log_file_and_the_heartbeat(offline_env, monitor, capsys):
    env = {**offline_env, "HEALTHCHECK_URL": monitor.url, "REFRESH_CONCURRENCY": "lots"}
    assert main(["run"], env) == 3
    problem = "REFRESH_CONCURRENCY='lots' is invalid: expected a whole number"
    assert problem in capsys.readouterr().err
    assert any(problem in line and "exit 3" in line for line in log_lines(env))
    assert monitor.paths() == ["/3"]
    assert problem in monitor.pings[0].body


def test_a_config_error_goes_to_this_runs_log_even_after_another_run(run_env, db, tmp_path, capsys):
    # main() is called twice in one process: the second call's error belongs in its own
    # LOG_DIR, not in the file the first call set up.
    assert main(["run", "--dry-run"], run_env) == 0
    env = {**run_env, "LOG_DIR": str(tmp_path / "second"), "REFRESH_DEADLINE": "soon"}
    assert main(["run"], env) == 3
    assert any("REFRESH_DEADLINE='soon' is invalid" in line for line in log_lines(env))
    assert "REFRESH_DEADLINE" not in log_text(run_env)


def test_unreachable_database_exits_4_in_the_log_file_and_the_heartbeat(
    offline_env, monitor, capsys
):
    port = closed_port_url().rsplit(":", 1)[1]
    env = {
        **offline_env,
        "HEALTHCHECK_URL": monitor.url,
        "DATABASE_URL": f"postgresql://runner:pw-not-shown@127.0.0.1:{port}/analytics",
    }
    assert main(["run"], env) == 4
    err = capsys.readouterr().err
    assert f"cannot connect to database 'analytics' on 127.0.0.1:{port}" in err
    assert any(
        "DatabaseError (exit 4): cannot connect to database 'analytics'" in line
        for line in log_lines(env)
    )
    assert monitor.paths() == ["/4"]
    body = monitor.pings[0].body
    assert "cannot connect to database 'analytics'" in body
    for text in (err, log_text(env), body):
        assert "pw-not-shown" not in text


# -- 2. an unparseable .env line is a configuration error naming the file and the line ---------
def test_unparseable_dotenv_line_exits_3_naming_file_and_line(tmp_path, monitor):
    dotenv = tmp_path / ".env"
    dotenv.write_text('REFRESH_TIMEOUT=2\nANALYTICS_API_URL="http://api:5000\nLOG_LEVEL=INFO\n')
    logs = tmp_path / "elsewhere"
    env = {"LOG_DIR": str(logs), "HEALTHCHECK_URL": monitor.url}
    done = run_process([sys.executable, str(CRON_SCRIPT)], env, cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    named = f"{dotenv}: line 2 cannot be parsed (expected NAME=value)"
    assert named in done.stderr
    # The log folder and the heartbeat come from the process environment, which .env
    # cannot undo: both hear of it.
    assert named in (logs / "analytics_refresh_cron.log").read_text(encoding="utf-8")
    assert not (tmp_path / "logs").exists()
    assert monitor.paths() == ["/3"]
    assert named in monitor.pings[0].body


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("this is not an assignment\n", 1),
        ("A=1\nB='unclosed\n", 2),
        ("API_SECRET_KEY=x\n\n# comment\nB C=2\n", 4),
        ("=value\n", 1),
    ],
)
def test_every_kind_of_broken_dotenv_line_is_refused(tmp_path, monkeypatch, capsys, text, line):
    (tmp_path / ".env").write_text(text)
    monkeypatch.chdir(tmp_path)
    assert main(["token", ALICE]) == 3
    assert f".env: line {line} cannot be parsed" in capsys.readouterr().err


# -- 3. a misspelt variable is named with the closest known one --------------------------------
def test_misspelt_variables_are_named_on_stderr_and_in_the_log(run_env, clients, tmp_path):
    (tmp_path / ".env").write_text("REFRESH_CONCURENCY=8\n")
    env = {**run_env, "API_SECRT_KEY": "x" * 40}
    done = run_process([sys.executable, str(CRON_SCRIPT), "--dry-run"], env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    wanted = (
        "unknown variable API_SECRT_KEY is ignored: did you mean API_SECRET_KEY?",
        "unknown variable REFRESH_CONCURENCY is ignored: did you mean REFRESH_CONCURRENCY?",
    )
    log = log_text(env)
    for warning in wanted:
        assert warning in done.stderr
        assert warning in log
    # The misspelt value was ignored, not taken for the one it resembles.
    assert "x" * 40 not in done.stderr + log


def test_a_misspelt_variable_is_named_even_when_another_setting_is_invalid(offline_env, capsys):
    env = {**offline_env, "REFRESH_TIMEOUT": "soon", "LOG_LEVLE": "DEBUG"}
    assert main(["run"], env) == 3
    err = capsys.readouterr().err
    assert "unknown variable LOG_LEVLE is ignored: did you mean LOG_LEVEL?" in err
    assert "LOG_LEVLE" in log_text(env)


# -- 4. retries are visible at INFO -----------------------------------------------------------
def test_retries_are_named_on_the_job_line_and_counted_in_the_results(run_env, db, backend):
    connect_clients(db, {ALICE: ("shopify",), BOB: ("shopify",)})
    busy = Answer(503, {"error": "busy"}, headers={"Retry-After": "0"})
    backend.script(ALICE, "shopify", busy, Answer())
    backend.script(BOB, "shopify", busy, busy)
    env = {**run_env, "REFRESH_MAX_ATTEMPTS": "2", "REFRESH_PLATFORMS": "shopify"}
    assert main(["run"], env) == 1
    lines = log_lines(env)
    (success,) = [line for line in lines if line.startswith("✅ SUCCESS")]
    assert success.startswith(f"✅ SUCCESS - {ALICE} (shopify): 1 platforms, 7 SKUs")
    assert "attempt 2 after HTTP 503]" in success
    (failed,) = [line for line in lines if line.startswith("❌ FAILED")]
    assert failed.startswith(f"❌ FAILED - {BOB} (shopify): HTTP 503 after 2 attempts")
    assert "earlier attempts: HTTP 503" in failed
    (results,) = [line for line in lines if line.startswith("Results:")]
    assert results.startswith("Results: 1 successful, 1 failed out of 2 total jobs (2 retries)")


def test_a_run_without_retries_says_none(run_env, db, backend):
    connect_clients(db, {ALICE: ("shopify",)})
    assert main(["run", "--platform", "shopify"], run_env) == 0
    lines = log_lines(run_env)
    (success,) = [line for line in lines if line.startswith("✅ SUCCESS")]
    assert "attempt 1]" in success
    assert "after" not in success
    (results,) = [line for line in lines if line.startswith("Results:")]
    assert "retr" not in results


# -- 5. every job failing the same way gets one line naming the URL and the fix ----------------
def test_api_down_gives_one_summary_line_with_the_url_and_the_fix(run_env, clients, db):
    api = closed_port_url()
    env = {**run_env, "ANALYTICS_API_URL": api, "REFRESH_MAX_ATTEMPTS": "1"}
    assert main(["run"], env) == 1
    lines = log_lines(env)
    assert sum(line.startswith("❌ FAILED") for line in lines) == 7
    summary = [line for line in lines if "Every job failed the same way" in line]
    assert summary == [
        "❌ Every job failed the same way (connection failed: Connection refused) calling "
        f"{api}/api/dashboard/inventory-analytics: start the dashboard API or correct "
        "ANALYTICS_API_URL; `analytics-refresh check` probes it"
    ]


def test_failures_of_different_kinds_get_no_summary(run_env, clients, backend):
    backend.script(ALICE, "shopify", Answer(404, {"error": "no such client"}))
    backend.script(BOB, "shopify", Answer(400, {"error": "bad"}))
    assert main(["run"], {**run_env, "REFRESH_MAX_ATTEMPTS": "1"}) == 1
    assert not any("Every job failed" in line for line in log_lines(run_env))


# -- 6. the dry run prints its plan to stdout, whatever the terminal ---------------------------
def dry_run_plan() -> list[str]:
    return [
        f"DRY RUN - would refresh {ALICE} (shopify)",
        f"DRY RUN - would refresh {ALICE} (amazon)",
        f"DRY RUN - would refresh {ALICE} (all)",
        f"DRY RUN - would refresh {BOB} (shopify)",
        f"DRY RUN - would refresh {BOB} (all)",
        f"DRY RUN - would refresh {CAROL} (amazon)",
        f"DRY RUN - would refresh {CAROL} (all)",
        "DRY RUN - 7 jobs planned, none called",
    ]


def test_dry_run_piped_prints_a_line_a_job_and_the_count(run_env, clients, backend, tmp_path):
    done = run_process([sys.executable, str(CRON_SCRIPT), "--dry-run"], run_env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == sorted(dry_run_plan())
    assert done.stdout.splitlines()[-1] == "DRY RUN - 7 jobs planned, none called"
    assert backend.refreshes() == []


def test_dry_run_on_a_terminal_prints_the_plan(run_env, clients, backend, db, tmp_path):
    code, terminal, _ = run_in_pty(
        [sys.executable, str(CRON_SCRIPT), "--dry-run"], run_env, cwd=tmp_path
    )
    assert code == 0, terminal
    for line in dry_run_plan():
        assert line in terminal
    assert backend.refreshes() == []
    assert runs(db) == []


def test_dry_run_on_a_terminal_lists_each_job_once(run_env, clients, tmp_path):
    code, terminal, _ = run_in_pty(
        [sys.executable, str(CRON_SCRIPT), "--dry-run"], run_env, cwd=tmp_path
    )
    assert code == 0, terminal
    for line in dry_run_plan():
        assert terminal.count(line) == 1, line


def test_dry_run_with_only_stdin_a_terminal_prints_the_plan_to_stdout(run_env, clients, tmp_path):
    code, terminal, piped = run_in_pty(
        [sys.executable, str(CRON_SCRIPT), "--dry-run"], run_env, cwd=tmp_path, stdout_pty=False
    )
    assert code == 0, terminal
    assert sorted(piped.splitlines()) == sorted(dry_run_plan())


# -- 7. --client ids without a connected credential ---------------------------------------------
def test_an_unknown_client_is_named_in_a_warning(run_env, clients, backend, capsys):
    assert main(["run", "--client", ALICE, "--client", UNKNOWN], run_env) == 0
    warnings = [line for line in log_lines(run_env) if UNKNOWN in line]
    assert warnings == [
        f"⚠️ --client {UNKNOWN} has no connected credential in client_api_credentials: "
        "nothing to refresh for it"
    ]
    assert {r.query["client_id"] for r in backend.refreshes()} == {ALICE}


def test_no_connected_client_among_those_given_exits_3(run_env, clients, backend, db, capsys):
    argv = ["run", "--client", UNKNOWN, "--client", OTHER_UNKNOWN]
    assert main(argv, run_env) == 3
    err = capsys.readouterr().err
    assert (
        "none of the clients given with --client has a connected credential: "
        f"{UNKNOWN}, {OTHER_UNKNOWN}"
    ) in err
    assert backend.refreshes() == []
    assert any("exit 3" in line and UNKNOWN in line for line in log_lines(run_env))
    # The run was recorded and ended with that code.
    assert runs(db)[0][:2] == ("failed", 3)


def test_a_disconnected_client_counts_as_unknown(run_env, clients, backend, capsys):
    from tests.runs import DAVE

    assert main(["run", "--client", DAVE, "--dry-run"], run_env) == 3
    assert DAVE in capsys.readouterr().err


# -- 8. the trigger: manual from a terminal, cron otherwise -------------------------------------
def test_a_run_started_from_a_terminal_is_recorded_manual(run_env, clients, db, tmp_path):
    code, terminal, _ = run_in_pty([sys.executable, str(CRON_SCRIPT)], run_env, cwd=tmp_path)
    assert code == 0, terminal
    assert trigger_of_last_run(db) == "manual"
    assert "Starting analytics refresh cron job - AUTOMATED CACHE REFRESH (trigger manual)" in (
        log_text(run_env)
    )


def test_a_run_without_a_terminal_is_recorded_cron(run_env, clients, db, tmp_path):
    done = run_process([sys.executable, str(CRON_SCRIPT)], run_env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert trigger_of_last_run(db) == "cron"


def test_an_explicit_trigger_wins_over_the_terminal(run_env, clients, db, tmp_path):
    argv = [sys.executable, str(CRON_SCRIPT), "--trigger", "cron"]
    code, terminal, _ = run_in_pty(argv, run_env, cwd=tmp_path)
    assert code == 0, terminal
    assert trigger_of_last_run(db) == "cron"


# -- 9. under systemd the log lines reach the journal (stderr) --------------------------------
def test_journal_stream_sends_the_log_lines_to_stderr(run_env, clients, tmp_path):
    env = {**run_env, "JOURNAL_STREAM": "8:12345", "LOG_FORMAT": "text"}
    done = run_process([sys.executable, str(CRON_SCRIPT)], env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    err = done.stderr.splitlines()
    assert any(
        re.match(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} - Starting analytics refresh cron job", line)
        for line in err
    )
    assert sum("✅ SUCCESS" in line for line in err) == 7
    assert any(line.split(" - ", 1)[1].startswith("Results: 7 successful") for line in err)
    # The file still gets every line, and nothing is said twice on stderr.
    assert "Results: 7 successful" in log_text(env)
    assert sum("Results:" in line for line in err) == 1
    assert done.stdout == ""


def test_without_journal_stream_a_cron_run_is_quiet(run_env, clients, tmp_path):
    done = run_process([sys.executable, str(CRON_SCRIPT)], run_env, cwd=tmp_path)
    assert done.returncode == 0
    assert (done.stdout, done.stderr) == ("", "")


# -- 10. the embedded PostgreSQL can be stopped ------------------------------------------------
def test_db_stop_with_no_server_says_none_runs(tmp_path, capsys):
    env = {"ANALYTICS_REFRESH_DATA_DIR": str(tmp_path / "data"), "LOG_DIR": str(tmp_path / "l")}
    assert main(["db", "stop"], env) == 0
    out = capsys.readouterr().out
    assert out == f"No embedded PostgreSQL is running under {tmp_path / 'data' / 'postgres'}\n"
    assert not (tmp_path / "data").exists()


@pytest.fixture
def data_dir():
    """A data folder outside pytest's private temporary root, which another pytest session
    may make private again while the embedded server (another system user) starts."""
    path = Path(tempfile.mkdtemp(prefix="analytics-refresh-demo-"))
    yield path / "data"
    shutil.rmtree(path, ignore_errors=True)


def test_demo_on_the_embedded_server_says_how_to_stop_it_and_db_stop_does(tmp_path, data_dir):
    data = data_dir
    env = {"ANALYTICS_REFRESH_DATA_DIR": str(data), "LOG_DIR": str(tmp_path / "logs")}
    demo = [str(CLI), "demo", "--clients", "1", "--skus", "3", "--orders-per-day", "1"]
    try:
        done = run_process(demo, env, cwd=tmp_path, timeout=60)
        assert done.returncode == 0, done.stderr
        last = " ".join(done.stdout.split()[-30:])
        assert "stop it with `analytics-refresh db stop`" in last
        pid = int((data / "postgres" / "postmaster.pid").read_text().split()[0])
        os.kill(pid, 0)  # it does keep running
    finally:
        stopped = run_process([str(CLI), "db", "stop"], env, cwd=tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.startswith(f"Stopped the embedded PostgreSQL under {data / 'postgres'}")
    assert f"(pid {pid})" in stopped.stdout
    end = time.monotonic() + 10
    while time.monotonic() < end and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists()
    again = run_process([str(CLI), "db", "stop"], env, cwd=tmp_path)
    assert (again.returncode, again.stdout.strip()) == (
        0,
        f"No embedded PostgreSQL is running under {data / 'postgres'}",
    )


# -- 11. a short secret is named, never masked; a real one always masked -----------------------
@pytest.mark.parametrize("value", ["short", "too", "is", "a" * 31])
def test_a_short_secret_error_reads_plainly(offline_env, monitor, capsys, value):
    env = {**offline_env, "API_SECRET_KEY": value, "HEALTHCHECK_URL": monitor.url}
    assert main(["run"], env) == 3
    err = capsys.readouterr().err
    expected = f"API_SECRET_KEY is too short: expected at least 32 characters, got {len(value)}"
    for text in (err, log_text(env), monitor.pings[0].body):
        assert expected in text
        assert "[redacted]" not in text


def test_a_secret_pasted_into_another_setting_is_masked(offline_env, monitor, capsys, secret):
    env = {**offline_env, "REFRESH_TIMEOUT": secret, "HEALTHCHECK_URL": monitor.url}
    assert main(["run"], env) == 3
    err = capsys.readouterr().err
    assert "REFRESH_TIMEOUT='[redacted]' is invalid: expected a number" in err
    for text in (err, log_text(env), monitor.pings[0].body):
        assert "REFRESH_TIMEOUT='[redacted]' is invalid" in text
        assert secret not in text


def echo_the_secret(db, backend, secret) -> None:
    connect_clients(db, {ALICE: ("shopify",)})
    backend.script(ALICE, "shopify", Answer(400, {"error": f"key {secret} refused"}))


def test_a_real_secret_is_masked_in_the_log_stderr_and_the_heartbeat(
    run_env, db, backend, monitor, capsys, secret
):
    echo_the_secret(db, backend, secret)
    env = {**run_env, "HEALTHCHECK_URL": monitor.url}
    assert main(["run", "--platform", "shopify"], env) == 1
    (failed,) = [line for line in log_lines(env) if line.startswith("❌ FAILED")]
    assert "key [redacted] refused" in failed
    assert "key [redacted] refused" in monitor.pings[-1].body
    for text in (capsys.readouterr().err, log_text(env), *(p.body for p in monitor.pings)):
        assert secret not in text


def test_a_real_secret_is_masked_in_the_job_table(run_env, db, backend, secret):
    echo_the_secret(db, backend, secret)
    assert main(["run", "--platform", "shopify"], run_env) == 1
    ((*_, error),) = jobs(db).values()
    assert error == "HTTP 400; key [redacted] refused"


# -- 13. a project .env never reaches an injected environment ----------------------------------
@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["run"], 0),
        (["run", "--dry-run"], 0),
        (["check"], 0),
        (["status", "--max-age", "1"], 1),  # nothing refreshed yet: stale, not misconfigured
        (["token", ALICE], 0),
        (["db", "init"], 0),
        (["db", "prune"], 0),
    ],
)
def test_a_hostile_dotenv_is_ignored_with_an_injected_environment(
    run_env, clients, tmp_path, monkeypatch, capsys, argv, code
):
    (tmp_path / ".env").write_text(
        "REFRESH_CONCURRENCY=lots\nANALYTICS_API_URL=http://wrong.invalid\nBROKEN LINE\n"
    )
    monkeypatch.chdir(tmp_path)
    assert main(argv, run_env) == code
    assert "REFRESH_CONCURRENCY" not in capsys.readouterr().err


def test_the_same_dotenv_does_break_an_uninjected_call(tmp_path, monkeypatch, capsys):
    # The test above would prove nothing if .env were never read at all.
    (tmp_path / ".env").write_text("REFRESH_CONCURRENCY=lots\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REFRESH_CONCURRENCY", raising=False)
    assert main(["token", ALICE]) == 3
    assert "REFRESH_CONCURRENCY='lots' is invalid" in capsys.readouterr().err
