"""Under the real cron daemon, the line cron_setup.sh installs really runs a refresh.

cron gives the job four variables (HOME, LOGNAME, PATH=/usr/bin:/bin, SHELL=/bin/sh), starts
it in the home directory and keeps its output: the line must bring everything else itself.
The schedule here is every minute, so the daemon fires it within about a minute. The line
is the throwaway user's (tests/deploy/conftest.py), so cron runs the job as that user; it
reaches the test database through a loopback relay, since the server's socket lies in a
directory only root may enter.
"""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import subprocess
import threading
import time
from pathlib import Path

import psycopg2.extensions
import pytest

from tests.backend import Answer
from tests.conftest import connect_clients
from tests.deploy.conftest import require_tool, run_setup

# Alone: the daemon it starts reads every user's crontab, and would run the lines the
# crontab tests of a parallel worker install for their throwaway users.
pytestmark = [pytest.mark.slow, pytest.mark.alone]

CLIENT = "3b619a14-3cd8-49fa-9c24-d8df5e54c452"
CRON_DAEMON = "/usr/sbin/cron"
# Cron wakes at each minute boundary: at most a minute to fire, plus the run itself.
WAIT_SECONDS = 150


def cron_is_running() -> bool:
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() in ("cron", "crond"):
                return True
        except OSError:  # the process ended while we looked
            continue
    return False


@pytest.fixture
def cron_daemon():
    """The machine's cron daemon, started for the test (and stopped after) if not running."""
    require_tool("crontab", "cron")
    if cron_is_running():
        yield
        return
    if not os.path.exists(CRON_DAEMON):
        require_tool("cron", "cron")
    if os.geteuid() != 0:
        pytest.skip("no cron daemon is running, and only root can start one")
    # Started with an almost empty environment, so nothing of the test's leaks into jobs.
    daemon = subprocess.Popen(
        [CRON_DAEMON, "-f"],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield
    daemon.terminate()
    daemon.wait(timeout=10)


class _Relay(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def user_db_url(db_url) -> str:
    """db_url, reachable by any local user: a TCP relay on loopback to a socket server."""
    params = psycopg2.extensions.parse_dsn(db_url)
    host = params.get("host", "")
    if not host.startswith("/"):
        yield db_url
        return
    path = f"{host}/.s.PGSQL.{params.get('port', 5432)}"

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as upstream:
                upstream.connect(path)
                back = threading.Thread(target=_pipe, args=(upstream, self.request), daemon=True)
                back.start()
                _pipe(self.request, upstream)
                back.join(timeout=30)

    server = _Relay(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    params.update(host="127.0.0.1", port=str(server.server_address[1]))
    try:
        yield psycopg2.extensions.make_dsn(**params)
    finally:
        server.shutdown()
        server.server_close()


def dotenv_value(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def finished_runs(db) -> list[tuple]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT trigger, status, exit_code, jobs_total, jobs_succeeded, jobs_failed"
            " FROM refresh_runs WHERE finished_at IS NOT NULL"
        )
        return cur.fetchall()


def test_cron_runs_the_installed_line_with_crons_bare_environment(
    cron_daemon, user_crontab, project, db, user_db_url, backend, secret
):
    connect_clients(db, {CLIENT: ("shopify",)})
    backend.default = Answer(body={"platforms": ["shopify"], "sku_count": 1})
    # Everything the run needs comes from .env: cron passes none of the test's environment.
    (project / ".env").write_text(
        f"DATABASE_URL={dotenv_value(user_db_url)}\n"
        f"API_SECRET_KEY={secret}\n"
        f"ANALYTICS_API_URL={backend.url}\n"
        "REFRESH_TIMEOUT=10\n",
        encoding="utf-8",
    )
    log = project / "logs" / "analytics_refresh_cron.log"

    installed = run_setup(project, "--schedule", "* * * * *")
    assert installed.returncode == 0, installed.stderr
    started = time.monotonic()
    while time.monotonic() - started < WAIT_SECONDS:
        if finished_runs(db) and log.exists() and "Results:" in log.read_text(encoding="utf-8"):
            break
        time.sleep(0.5)
    # Once is enough: take the every-minute line out before cron fires it again.
    run_setup(project, "--uninstall")

    output = project / "logs" / "cron_output.log"
    diagnostics = (
        f"after {time.monotonic() - started:.0f}s; cron running: {cron_is_running()}\n"
        f"crontab line: {installed.stdout.splitlines()[1:2]}\n"
        f"cron_output.log: {output.read_text() if output.exists() else '(none)'}\n"
        f"log: {log.read_text() if log.exists() else '(none)'}"
    )
    assert finished_runs(db) == [("cron", "succeeded", 0, 2, 2, 0)], diagnostics
    messages = [line.split(" - ", 1)[1] for line in log.read_text(encoding="utf-8").splitlines()]
    expected = [
        "Starting analytics refresh cron job - AUTOMATED CACHE REFRESH",
        "Found 1 active clients for analytics refresh",
        "Processing 1 clients × 3 platforms = 2 refresh jobs",
        f"✅ SUCCESS - {CLIENT} (shopify): 1 platforms, 1 SKUs",
        f"✅ SUCCESS - {CLIENT} (all): 1 platforms, 1 SKUs",
        "Results: 2 successful, 0 failed out of 2 total jobs",
    ]
    for line in expected:
        assert any(m.startswith(line) for m in messages), (line, diagnostics)
    refreshes = backend.refreshes()
    assert sorted(r.query["platform"] for r in refreshes) == ["all", "shopify"]
    assert all(r.query["force_refresh"] == "true" for r in refreshes)
    assert all(r.headers["Authorization"].startswith("Bearer ") for r in refreshes)
