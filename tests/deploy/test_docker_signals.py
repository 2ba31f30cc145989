"""`docker stop` reaches the run: the image's process tree, built here without Docker.

Docker sends SIGTERM to the container's PID 1 only. The tree is the image's: its
ENTRYPOINT (the real tini from Debian), then a scheduler that behaves as supercronic
documents (tests/deploy/scheduler_standin.py: same process group, no forwarding, waits for
its job), then docker-cron's job line, which runs the real analytics_refresh_cron.py
against a real PostgreSQL and a slow HTTP backend on loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.backend import Answer
from tests.conftest import connect_clients
from tests.deploy.conftest import ROOT, require_tool
from tests.deploy.test_deploy_manifests import final_stage

STANDIN = Path(__file__).with_name("scheduler_standin.py")
CLIENTS = [str(uuid.UUID(int=i + 1)) for i in range(8)]


def entrypoint() -> list[str]:
    """The image's ENTRYPOINT, in exec form."""
    [value] = [rest for keyword, rest in final_stage() if keyword == "ENTRYPOINT"]
    return json.loads(value)


def job_command(app: Path) -> str:
    """docker-cron's job line, with the image's paths mapped to this machine's."""
    lines = [
        line
        for line in (ROOT / "docker-cron").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    [line] = lines
    command = line.split(None, 5)[5]
    assert "/app" in command
    assert "/opt/venv/bin/python" in command
    return command.replace("/opt/venv/bin/python", sys.executable).replace("/app", str(app))


def test_pid_1_is_an_init_that_signals_the_whole_process_group():
    argv = entrypoint()
    assert (argv[0] == "tini" and "-g" in argv) or argv[0] == "dumb-init", argv
    cmd = json.loads(dict(final_stage()[1:])["CMD"])
    assert cmd[0] == "supercronic"


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


@pytest.fixture
def start_tree(app):
    """Start init -> scheduler stand-in -> job; whatever still runs at the end is killed."""
    tini = require_tool("tini", "tini")
    started: list[subprocess.Popen] = []

    def start(init: list[str], env: dict) -> subprocess.Popen:
        argv = [tini if init[0] == "tini" else init[0], *init[1:]]
        tree = subprocess.Popen(
            [*argv, sys.executable, str(STANDIN), job_command(app)],
            # Not PID 1 here: as a subreaper, tini still reaps what is orphaned below it.
            env={**os.environ, **env, "TINI_SUBREAPER": "1"},
            cwd=app,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        started.append(tree)
        return tree

    yield start
    for tree in started:
        if tree.poll() is None:
            for child in children(tree.pid):  # the stand-in leads the job's process group
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child, signal.SIGKILL)
            tree.kill()
        tree.communicate()


def runs(db) -> list[tuple]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT status, exit_code, jobs_succeeded, jobs_not_attempted FROM refresh_runs"
        )
        return cur.fetchall()


def wait_for(predicate, timeout: float = 20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


@pytest.fixture
def app(tmp_path) -> Path:
    """The image's /app: the entry point, and no .env."""
    directory = tmp_path / "app"
    directory.mkdir()
    shutil.copy2(ROOT / "analytics_refresh_cron.py", directory)
    return directory


@pytest.fixture
def slow_run_env(run_env, backend, db) -> dict:
    connect_clients(db, {c: ("shopify",) for c in CLIENTS})
    backend.default = Answer(sleep=0.6)
    return {**run_env, "REFRESH_CONCURRENCY": "2", "REFRESH_PLATFORMS": "shopify"}


def stop(tree: subprocess.Popen) -> tuple[int, str]:
    tree.send_signal(signal.SIGTERM)
    _, err = tree.communicate(timeout=30)
    return tree.returncode, err.decode(errors="replace")


def test_sigterm_to_pid_1_interrupts_the_run_and_it_records_itself(
    start_tree, slow_run_env, backend, db
):
    tree = start_tree(entrypoint(), slow_run_env)
    wait_for(lambda: len(backend.refreshes()) >= 2)

    code, err = stop(tree)

    # The scheduler outlived the signal and waited for its job, as supercronic does.
    assert "standin: got SIGTERM, waiting for jobs" in err, err
    assert "standin: job exited 6" in err, err
    assert code == 0, err
    [(status, exit_code, succeeded, not_attempted)] = runs(db)
    assert (status, exit_code) == ("interrupted", 6), err
    assert succeeded + not_attempted == len(CLIENTS)
    assert not_attempted > 0
    assert succeeded == len(backend.refreshes())


def test_without_the_process_group_the_signal_never_reaches_the_run(
    start_tree, slow_run_env, backend, db
):
    """The control: plain tini signals only supercronic, which waits; the run never hears
    it (on Docker it would be killed at the end of the grace period, unrecorded)."""
    plain = [word for word in entrypoint() if word != "-g"]
    if plain[0] != "tini":
        pytest.skip("the control is written for tini")
    tree = start_tree(plain, slow_run_env)
    wait_for(lambda: len(backend.refreshes()) >= 2)

    code, err = stop(tree)

    assert code == 0, err
    assert "standin: got SIGTERM, waiting for jobs" in err, err
    assert "standin: job exited 0" in err, err
    assert runs(db) == [("succeeded", 0, len(CLIENTS), 0)]
