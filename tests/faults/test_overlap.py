"""Ten runs started at once from two "hosts" against one database: exactly one runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.backend import Answer
from tests.conftest import connect_clients

ROOT = Path(__file__).resolve().parents[2]
CLIENT = "3b619a14-3cd8-49fa-9c24-d8df5e54c452"


def second_host_prefix() -> list[str]:
    """Run under another hostname (a UTS namespace) when this machine allows it."""
    unshare = shutil.which("unshare")
    if os.name != "posix" or os.geteuid() != 0 or unshare is None:
        return []
    probe = subprocess.run([unshare, "--uts", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        return []
    return [unshare, "--uts", "sh", "-c", 'hostname host-b && exec "$0" "$@"']


def test_ten_simultaneous_runs_on_two_hosts_only_one_runs(run_env, backend, db):
    connect_clients(db, {CLIENT: ("shopify",)})
    backend.default = Answer(sleep=4)
    env = {**os.environ, **run_env, "REFRESH_PLATFORMS": "shopify"}
    command = [sys.executable, str(ROOT / "analytics_refresh_cron.py")]
    other_host = second_host_prefix()
    procs = [
        subprocess.Popen(
            (other_host if i % 2 else []) + command,
            env=env,
            # cwd: the session's empty directory (conftest), never the checkout and its .env
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(10)
    ]
    codes = sorted(p.wait(60) for p in procs)
    assert codes == [0] + [5] * 9

    with db.cursor() as cur:
        cur.execute("SELECT status, exit_code, host FROM refresh_runs")
        rows = cur.fetchall()
        cur.execute("SELECT count(*) FROM refresh_jobs")
        (job_rows,) = cur.fetchone()
    assert sorted(r[:2] for r in rows) == [("skipped", 5)] * 9 + [("succeeded", 0)]
    if other_host:
        assert {r[2] for r in rows} >= {"host-b"}
        assert len({r[2] for r in rows}) == 2
    assert job_rows == 1  # only the winner planned and recorded a job
    assert len(backend.refreshes()) == 1
