"""Soak: one run of 10,000 jobs against a backend where 2% of requests fail transiently.

The backend answers each refresh in a few milliseconds, except that a seeded 2% of
requests fail in one of three ways, in equal shares: HTTP 500, a connection reset before
any answer, or an answer slower than ``REFRESH_TIMEOUT``. Midway a second runner is
started against the same database; it must find the lock held and exit 5. The soak
prints:

- jobs succeeded (goal: at least 99.9% after retries);
- jobs recorded (goal: 100%: every planned job has its row in ``refresh_jobs``);
- retries as a share of requests (goal: at most 10%);
- run overlap (goal: none: the second runner exits 5 and records ``skipped``).

Run: ``.venv/bin/python bench/soak.py`` (embedded PostgreSQL, or ``DATABASE_URL``).
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_db
from api_bench import postgres

ROOT = Path(__file__).resolve().parent.parent
SECRET = "soak-secret-key-that-is-long-enough-0123456789"  # noqa: S105 - a test key
COMMAND = "python bench/soak.py"


class FlakyBackend(ThreadingHTTPServer):
    """Answers refreshes fast, but fails a seeded share of requests transiently."""

    daemon_threads = True

    def __init__(self, failure_rate: float, slow_seconds: float, seed: int):
        self.failure_rate = failure_rate
        self.slow_seconds = slow_seconds
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.counts = {"requests": 0, "500": 0, "reset": 0, "slow": 0}
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address) -> None:
        """Stay quiet when the runner hangs up on a slow answer: that is the point."""

    def decide(self) -> str:
        with self.lock:
            self.counts["requests"] += 1
            if self.rng.random() >= self.failure_rate:
                return "ok"
            fault = self.rng.choice(("500", "reset", "slow"))
            self.counts[fault] += 1
            return fault


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # answers go out in two writes; no delayed-ACK stall
    server: FlakyBackend

    def log_message(self, *_args):
        pass

    def do_GET(self):
        query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
        fault = self.server.decide()
        if fault == "reset":
            # SO_LINGER 0: close with RST, as a crashed worker or a proxy would.
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            self.close_connection = True
            return
        if fault == "slow":
            time.sleep(self.server.slow_seconds)
        status = 500 if fault == "500" else 200
        body = (
            b'{"error": "transient failure"}'
            if status == 500
            else (
                f'{{"client_id": "{query.get("client_id", "")}", '
                f'"platforms": ["{query.get("platform", "")}"], "sku_count": 12}}'
            ).encode()
        )
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--failure-rate", type=float, default=0.02)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="soak-") as tmp, postgres() as server:
        workdir = Path(tmp)
        url = bench_db.create_database(server, "soak")
        bench_db.seed_clients(url, args.jobs, ("shopify",))
        backend = FlakyBackend(args.failure_rate, slow_seconds=1.5, seed=args.seed)
        threading.Thread(target=backend.serve_forever, daemon=True).start()
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "ANALYTICS_API_URL": backend.url,
            "API_SECRET_KEY": SECRET,
            "REFRESH_PLATFORMS": "shopify",
            "REFRESH_CONCURRENCY": str(args.concurrency),
            "REFRESH_TIMEOUT": "1",
            "REFRESH_MAX_ATTEMPTS": "3",
            "LOG_DIR": str(workdir / "logs"),
        }
        command = [sys.executable, str(ROOT / "analytics_refresh_cron.py")]
        started = time.monotonic()
        # cwd: the run's own folder, not the checkout, whose .env would change its settings.
        run = subprocess.Popen(command, env=env, cwd=workdir, stdout=subprocess.DEVNULL)
        # Midway, as a second host's scheduler would, start another run.
        while backend.counts["requests"] < args.jobs // 2 and run.poll() is None:
            time.sleep(0.2)
        second = subprocess.run(command, env=env, cwd=workdir, capture_output=True, check=False)
        code = run.wait()
        elapsed = time.monotonic() - started
        backend.shutdown()

        conn = psycopg2.connect(url)
        with conn.cursor() as cur:
            cur.execute("SELECT status, count(*) FROM refresh_jobs GROUP BY status ORDER BY status")
            statuses = dict(cur.fetchall())
            cur.execute(
                "SELECT status, exit_code, started_at, finished_at FROM refresh_runs "
                "ORDER BY started_at"
            )
            runs = cur.fetchall()
        conn.close()
        bench_db.drop_database(server, "soak")

    counts = backend.counts
    recorded = sum(statuses.values())
    succeeded = statuses.get("succeeded", 0)
    retries = counts["requests"] - args.jobs
    active = [r for r in runs if r[0] != "skipped"]
    overlap = any(a[3] is None or b[2] < a[3] for a, b in itertools.pairwise(active))
    print(f"command: {COMMAND} --jobs {args.jobs} --failure-rate {args.failure_rate}")
    print(f"runner exit {code} in {elapsed:.1f}s; second runner exit {second.returncode}")
    print(
        f"requests {counts['requests']}: injected 500 {counts['500']}, "
        f"reset {counts['reset']}, slow {counts['slow']}"
    )
    print(f"runs recorded: {[(r[0], r[1]) for r in runs]}")
    rows = [
        (
            "jobs succeeded",
            f"{succeeded / args.jobs:.3%}",
            ">= 99.9%",
            succeeded / args.jobs >= 0.999,
        ),
        ("jobs recorded", f"{recorded / args.jobs:.1%}", "100%", recorded == args.jobs),
        (
            "retries / requests",
            f"{retries / counts['requests']:.2%}",
            "<= 10%",
            retries / counts["requests"] <= 0.10,
        ),
        (
            "run overlap",
            "none" if not overlap and second.returncode == 5 else "OVERLAP",
            "none",
            not overlap and second.returncode == 5,
        ),
    ]
    print("| figure | value | goal | met |\n|---|---:|---|---|")
    for name, value, goal, met in rows:
        print(f"| {name} | {value} | {goal} | {'yes' if met else 'NO'} |")
    return 0 if all(met for *_, met in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
