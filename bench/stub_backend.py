"""A stand-in dashboard API for the refresh benchmark: a fixed pool of workers and a queue.

Like gunicorn's sync workers, at most ``--workers`` requests are being served at once and
any request beyond that waits its turn in a first-come, first-served queue. A refresh
(``force_refresh=true``) holds its worker for the job's service time: a lognormal draw
per client x platform, the same in every run with the same ``--seed``, times a
per-request jitter that differs with ``--run`` (a job never takes exactly what it took
last time). A read (``force_refresh=false``, what a dashboard user sends) and
``/health`` hold a worker for ``--interactive-ms``. With ``--shed-queue N`` a request
that finds N requests already waiting is answered at once with 503 and ``Retry-After``,
as a load-shedding API does.

``GET /_stats`` returns what the benchmark reports (service, queue waits, requests in
flight); ``POST /_reset`` clears it. Run ``python bench/stub_backend.py --help``.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import random
import statistics
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

ENDPOINT = "/api/dashboard/inventory-analytics"


class Workers:
    """C workers and a FIFO queue in front of them; ``acquire`` returns its queue wait."""

    def __init__(self, count: int, shed_queue: int | None = None):
        self.count = count
        self.shed_queue = shed_queue
        self.busy = 0
        self.waiting: collections.deque[threading.Event] = collections.deque()
        self.lock = threading.Lock()

    def acquire(self) -> float | None:
        """Wait for a worker; return the seconds waited, or None when the request is shed."""
        arrived = time.monotonic()
        with self.lock:
            if self.busy < self.count and not self.waiting:
                self.busy += 1
                return 0.0
            if self.shed_queue is not None and len(self.waiting) >= self.shed_queue:
                return None
            turn = threading.Event()
            self.waiting.append(turn)
        turn.wait()  # release() hands its worker straight to the head of the queue
        return time.monotonic() - arrived

    def release(self) -> None:
        with self.lock:
            if self.waiting:
                self.waiting.popleft().set()
            else:
                self.busy -= 1


class Stats:
    """Per-run figures, kept under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.service_sum = 0.0
        self.services: list[float] = []
        self.held_sum = 0.0  # how long refreshes really held their worker (sleep overruns)
        self.refresh_waits: list[float] = []
        self.read_waits: list[float] = []
        self.shed = 0
        self.requests = 0
        self.in_flight = 0  # refreshes arrived and not yet answered, queued ones included
        self.max_in_flight = 0
        self.first_arrival: float | None = None
        self.last_answer: float | None = None

    def as_dict(self) -> dict:
        waits = self.refresh_waits
        return {
            "requests": self.requests,
            "served": len(waits),
            "shed": self.shed,
            "service_sum": self.service_sum,
            "service_max": max(self.services, default=0.0),
            "held_sum": self.held_sum,
            "service_median": statistics.median(self.services) if self.services else 0.0,
            "queue_wait_mean": sum(waits) / len(waits) if waits else 0.0,
            "queue_wait_max": max(waits, default=0.0),
            "read_wait_mean": (
                sum(self.read_waits) / len(self.read_waits) if self.read_waits else 0.0
            ),
            "max_in_flight": self.max_in_flight,
            "span": (
                self.last_answer - self.first_arrival
                if self.first_arrival is not None and self.last_answer is not None
                else 0.0
            ),
        }


class ServiceTimes:
    """A job's service time: a seeded lognormal draw per job, times a per-request jitter."""

    def __init__(self, mean: float, sigma: float, jitter: float, seed: int, run: int = 0):
        self.mean, self.sigma, self.jitter, self.seed, self.run = mean, sigma, jitter, seed, run
        self.mu = math.log(mean) - sigma**2 / 2 if mean > 0 else 0.0
        self.attempts: collections.Counter = collections.Counter()
        self.lock = threading.Lock()

    def base(self, client_id: str, platform: str) -> float:
        if self.mean <= 0:
            return 0.0
        # random.Random(str) seeds from a SHA-512 of the text: the same in every process.
        return random.Random(f"{self.seed}:{client_id}:{platform}").lognormvariate(
            self.mu, self.sigma
        )

    def draw(self, client_id: str, platform: str) -> float:
        base = self.base(client_id, platform)
        if base == 0.0 or self.jitter <= 0:
            return base
        with self.lock:
            self.attempts[(client_id, platform)] += 1
            n = self.attempts[(client_id, platform)]
        # The jitter differs from run to run (``--run``), as a real job's time does: a run
        # judged against the last one's durations sees that noise.
        noise = random.Random(f"{self.seed}:{self.run}:{client_id}:{platform}:{n}")
        noise = noise.lognormvariate(0.0, self.jitter)
        return base * noise


def make_handler(args, workers: Workers, stats: Stats, times: ServiceTimes):
    padding = "x" * max(0, args.body_kb * 1024 - 200)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; without TCP_NODELAY the client's delayed
        # ACK holds the second one back by about 40 ms.
        disable_nagle_algorithm = True

        def log_message(self, *_args):
            pass

        def send_json(self, status: int, body: dict, headers: dict | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            if self.path == "/_reset":
                with stats.lock:
                    stats.reset()
                self.send_json(200, {"reset": True})
            else:
                self.send_json(404, {"error": "not found"})

        def do_GET(self):
            parts = urlsplit(self.path)
            if parts.path == "/_stats":
                with stats.lock:
                    body = {**stats.as_dict(), "now_in_flight": stats.in_flight}
                body.update(busy=workers.busy, queued=len(workers.waiting))
                self.send_json(200, body)
                return
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            refresh = parts.path == ENDPOINT and query.get("force_refresh") == "true"
            if parts.path not in (ENDPOINT, "/health"):
                self.send_json(404, {"error": "not found"})
                return
            if refresh and not self.headers.get("Authorization", "").startswith("Bearer "):
                self.send_json(401, {"error": "missing token"})
                return
            arrived = time.monotonic()
            if not refresh:
                self.serve(refresh, query)
                return
            with stats.lock:
                stats.requests += 1
                stats.in_flight += 1
                stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
                if stats.first_arrival is None:
                    stats.first_arrival = arrived
            try:
                self.serve(refresh, query)
            finally:
                with stats.lock:
                    stats.in_flight -= 1
                    stats.last_answer = time.monotonic()

        def serve(self, refresh: bool, query: dict) -> None:
            waited = workers.acquire()
            if waited is None:
                if refresh:
                    with stats.lock:
                        stats.shed += 1
                self.send_json(503, {"error": "overloaded"}, {"Retry-After": str(args.retry_after)})
                return
            took = time.monotonic()
            try:
                client_id, platform = query.get("client_id", ""), query.get("platform", "")
                seconds = times.draw(client_id, platform) if refresh else args.interactive_ms / 1000
                time.sleep(seconds)
                body = {
                    "client_id": client_id,
                    "platform": platform,
                    "platforms": ["shopify", "amazon"] if platform == "all" else [platform],
                    "sku_count": 42,
                    "cached": not refresh,
                    "padding": padding,
                }
                if args.ttl:
                    # As the reference API declares its copies: until generated + TTL.
                    until = datetime.now(timezone.utc) + timedelta(seconds=args.ttl)
                    body["expires_at"] = until.isoformat().replace("+00:00", "Z")
            finally:
                held = time.monotonic() - took
                workers.release()
            with stats.lock:
                if refresh:
                    stats.held_sum += held
                    stats.service_sum += seconds
                    stats.services.append(seconds)
                    stats.refresh_waits.append(waited)
                else:
                    stats.read_waits.append(waited)
            self.send_json(200, body)

    return Handler


class StubServer(ThreadingHTTPServer):
    daemon_threads = True
    # A run opens up to REFRESH_CONCURRENCY connections at once; the default backlog of 5
    # would drop the rest and cost each a one-second SYN retransmit.
    request_queue_size = 256


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--workers", type=int, default=8, help="requests served at once (C)")
    parser.add_argument("--mean", type=float, default=0.1, help="mean service seconds")
    parser.add_argument("--sigma", type=float, default=1.0, help="lognormal sigma (tail)")
    parser.add_argument("--jitter", type=float, default=0.1, help="per-request lognormal sigma")
    parser.add_argument("--seed", type=int, default=1, help="the jobs' service times")
    parser.add_argument("--run", type=int, default=0, help="this run's jitter")
    parser.add_argument("--shed-queue", type=int, default=None, help="503 past this queue")
    parser.add_argument("--retry-after", type=int, default=1, help="seconds, with each 503")
    parser.add_argument("--interactive-ms", type=float, default=2.0, help="a read's service")
    parser.add_argument("--body-kb", type=int, default=4, help="size of a refresh answer")
    parser.add_argument("--ttl", type=float, default=0, help="declare expires_at this far out")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    workers = Workers(args.workers, args.shed_queue)
    stats = Stats()
    times = ServiceTimes(args.mean, args.sigma, args.jitter, args.seed, args.run)
    server = StubServer((args.host, args.port), make_handler(args, workers, stats, times))
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
