"""Running real listener processes for the tests: start, wait for, stop, kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Short settle, delay and poll times, so that a test waits seconds, not minutes.
FAST = {
    "REFRESH_SETTLE_SECONDS": "0.5",
    "REFRESH_MAX_DELAY_SECONDS": "3",
    "REFRESH_POLL_SECONDS": "2",
    "REFRESH_MAX_ATTEMPTS": "1",
}
ENTRY = "import sys; from analytics_refresh.cli import main; sys.exit(main(sys.argv[1:]))"


def start(env: dict, *args: str) -> subprocess.Popen:
    """Start ``analytics-refresh listen`` (or another command) as a process of its own."""
    full = {**FAST, **env, "PATH": os.environ.get("PATH", "")}
    return subprocess.Popen(
        [sys.executable, "-c", ENTRY, *(args or ("listen",))],
        env=full,
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(proc: subprocess.Popen, timeout: float = 30) -> tuple[int, str]:
    """SIGTERM the process and return its exit code and output."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def kill(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.communicate(timeout=10)


def wait_for(predicate, timeout: float = 20.0, every: float = 0.1):
    """Return the first truthy value of ``predicate()`` within ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > end:
            return value
        time.sleep(every)


def request(db, client_id: str, platform: str | None = None) -> None:
    with db.cursor() as cur:
        cur.execute("SELECT analytics_refresh_request(%s::uuid, %s)", (client_id, platform))


def listening(db, count: int = 1) -> bool:
    """Whether ``count`` listeners have registered and read the record at least once."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM refresh_listeners WHERE stopped_at IS NULL"
            " AND heartbeat_at > now() - interval '60 seconds'"
        )
        return cur.fetchone()[0] >= count


def refreshed(backend) -> Counter:
    """How many refresh requests the backend received per (client_id, platform)."""
    return Counter((r.query["client_id"], r.query["platform"]) for r in backend.refreshes())


def listen_jobs(db) -> list[tuple]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT j.client_id::text, j.platform, j.status FROM refresh_jobs AS j"
            " JOIN refresh_runs AS r USING (run_id) WHERE r.trigger = 'listen'"
            " ORDER BY j.finished_at"
        )
        return cur.fetchall()


def pending_count(db) -> int:
    with db.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM refresh_requests AS r LEFT JOIN refresh_claims AS c"
            " ON c.client_id = r.client_id AND c.platform = r.platform"
            " WHERE r.version > CASE r.platform WHEN 'shopify' THEN coalesce(c.covered_shopify, 0)"
            " ELSE coalesce(c.covered_amazon, 0) END"
        )
        return cur.fetchone()[0]
