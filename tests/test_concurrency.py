"""The adaptive limit: falls on overload and queueing, rises again, judges jobs by history.

The limit's own tests drive it with a scripted clock; the end-to-end ones run the CLI with
``REFRESH_ADAPTIVE=true`` against the scripted backend.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading

import pytest

from analytics_refresh.cli import main
from analytics_refresh.http.client import Attempt, Verdict
from analytics_refresh.model.outcome import Failure
from analytics_refresh.run.concurrency import AdaptiveLimit, FixedLimit, make_limit
from tests.backend import Answer
from tests.conftest import connect_clients, log_lines
from tests.runs import jobs

OK = Attempt(Verdict.SUCCESS, 200)
SHED = Attempt(Verdict.RETRY, 503, "HTTP 503", retry_after=1.0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def answer(limit: AdaptiveLimit, key, seconds: float, clock: Clock, attempt: Attempt = OK):
    """One request for ``key`` that takes ``seconds``."""
    ticket = limit.begin(key)
    clock.now += seconds
    limit.observe(ticket, dataclasses.replace(attempt, elapsed=seconds))


def traffic(limit: AdaptiveLimit, expected: dict, clock: Clock, factor: float = 1.0) -> None:
    """Keep the limit full, for two windows, of requests taking ``factor`` x their history."""
    keys = list(expected)
    total = 2 * max(limit.MIN_WINDOW, limit.limit)
    out: collections.deque = collections.deque()
    sent = 0
    while sent < total or out:
        while sent < total and len(out) < limit.limit:
            key = keys[sent % len(keys)]
            out.append((key, limit.begin(key)))
            sent += 1
        key, ticket = out.popleft()
        clock.now += 0.001
        limit.observe(ticket, Attempt(Verdict.SUCCESS, 200, elapsed=expected[key] * factor))


@pytest.fixture
def limit_moves():
    """The limit's debug lines, caught on its own logger (the CLI stops propagation)."""
    moves: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            moves.append(record.getMessage())

    logger = logging.getLogger("analytics_refresh.run.concurrency")
    handler, level = Catch(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield moves
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def history():
    # Big clients are slow because they are big: 0.05 s to 2 s.
    return {f"job{i}": 0.05 * (1 + i % 40) for i in range(200)}


def test_limit_falls_on_503_and_rises_again_when_the_backend_recovers(clock, history):
    limit = AdaptiveLimit(64, history, clock=clock)
    for _ in range(4):
        traffic(limit, history, clock)
    high = limit.limit
    assert high > AdaptiveLimit.INITIAL

    answer(limit, "job1", 0.001, clock, SHED)
    assert limit.limit == high // 2
    assert not limit.slow_start
    # Answers to requests sent before the cut say nothing about the new limit.
    old = [limit.begin("job2") for _ in range(3)]
    answer(limit, "job3", 0.001, clock, SHED)
    assert limit.limit == high // 4
    for ticket in old:
        limit.observe(ticket, SHED)
    assert limit.limit == high // 4

    for _ in range(10):
        traffic(limit, history, clock)
    assert limit.limit > high // 4 + 5


def test_latency_is_judged_against_each_jobs_own_history(clock, history):
    limit = AdaptiveLimit(64, history, clock=clock)
    for _ in range(3):
        traffic(limit, history, clock)
    before = limit.limit
    # Every job took what it took last time, the 2-second ones included: no queue.
    traffic(limit, history, clock)
    assert limit.limit >= before
    # Every job took 60% longer than last time: a queue, whatever the job's size.
    before = limit.limit
    traffic(limit, history, clock, factor=1.6)
    assert limit.limit < before


def test_a_slow_big_client_is_not_congestion(clock):
    sizes = {"big": 3.0, "small": 0.05}
    limit = AdaptiveLimit(16, sizes, clock=clock)
    # The same 3 s latency: normal for the big client, a 60x queue for the small one.
    traffic(limit, {"big": 3.0}, clock)
    assert limit.limit > AdaptiveLimit.INITIAL
    before = limit.limit
    traffic(limit, {"small": 3.0}, clock)
    assert limit.limit < before


def test_requests_still_out_far_past_their_history_cut_at_once(clock, history):
    limit = AdaptiveLimit(64, history, clock=clock, initial=10)
    for _ in range(10):
        limit.begin("job0")  # history: 0.05 s; a typical job here takes about 1 s
    # Late is judged on the scale of a typical job: 50 ms more is nothing yet.
    clock.now += 1.0
    limit.check()
    assert limit.limit == 10
    clock.now += 2.0
    limit.check()
    assert limit.limit == 1  # all ten are late: none is being served on time


def test_timeouts_cut_and_the_limit_stays_between_1_and_the_ceiling(clock, history):
    limit = AdaptiveLimit(6, history, clock=clock)
    for _ in range(5):
        traffic(limit, history, clock)
    assert limit.limit == 6
    for _ in range(6):
        timed_out = Attempt(Verdict.RETRY, None, "timed out after 30s", failure=Failure.TIMEOUT)
        answer(limit, "job0", 30.0, clock, timed_out)
    assert limit.limit == 1


def test_a_backend_slower_than_history_is_its_new_normal_after_one_at_a_time(
    clock, history, limit_moves
):
    limit = AdaptiveLimit(32, history, clock=clock)
    for _ in range(10):
        traffic(limit, history, clock, factor=1.5)
    moves = limit_moves
    # 50% slower than history looks like a queue until one request at a time, which cannot
    # queue, shows it is the backend's speed now; from there the limit grows again.
    down = next(i for i, m in enumerate(moves) if "-> 1 (" in m)
    assert any(m.startswith("Concurrency limit 1 -> 2") for m in moves[down:])
    assert limit.limit >= 4


def test_jobs_without_history_are_judged_together(clock):
    limit = AdaptiveLimit(64, {}, clock=clock)
    cold = {f"new{i}": 0.05 * (1 + i % 5) for i in range(400)}
    batches = iter(range(0, 400, 16))
    for start in batches:
        keys = list(cold)[start : start + 16]
        traffic(limit, {k: cold[k] for k in keys}, clock)
        if limit.limit > AdaptiveLimit.INITIAL:
            break
    assert limit.limit > AdaptiveLimit.INITIAL


def test_make_limit_is_fixed_unless_adaptive():
    assert isinstance(make_limit(8, adaptive=False), FixedLimit)
    assert isinstance(make_limit(1, adaptive=True), FixedLimit)
    assert isinstance(make_limit(8, adaptive=True), AdaptiveLimit)
    assert make_limit(8, adaptive=False).limit == 8


def test_the_limit_is_safe_to_share_between_threads(history):
    limit = AdaptiveLimit(64, history)

    def worker(n: int) -> None:
        for i in range(300):
            key = f"job{(n * 300 + i) % 200}"
            ticket = limit.begin(key)
            limit.check()
            limit.observe(ticket, Attempt(Verdict.SUCCESS, 200, elapsed=history[key]))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert limit.in_flight == 0
    assert 1 <= limit.limit <= 64


# -- the runner, adaptive ------------------------------------------------------------------
def many(db, count: int) -> list[str]:
    ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(1, count + 1)]
    connect_clients(db, {c: ("shopify",) for c in ids})
    return ids


def test_adaptive_run_backs_off_on_503_and_recovers(run_env, backend, db):
    """The backend sheds a burst of requests; the run slows down, then speeds up again."""
    ids = many(db, 40)
    shed_from, shed_to = 6, 14
    count = {"n": 0}
    shed: set[str] = set()
    lock = threading.Lock()
    original = backend.next_answer

    def shedding(client_id: str, platform: str) -> Answer:
        with lock:
            count["n"] += 1
            # Each job is shed at most once, so every one succeeds on its retry.
            if shed_from <= count["n"] < shed_to and client_id not in shed:
                shed.add(client_id)
                return Answer(503, {"error": "overloaded"}, {"Retry-After": "0"})
        return original(client_id, platform)

    backend.default = Answer(sleep=0.02)
    backend.next_answer = shedding
    env = {
        **run_env,
        "REFRESH_ADAPTIVE": "true",
        "REFRESH_CONCURRENCY": "16",
        "LOG_LEVEL": "DEBUG",
        "REFRESH_PLATFORMS": "shopify",
    }
    assert main(["run"], env) == 0
    assert all(row[0] == "succeeded" for row in jobs(db).values())
    assert len(jobs(db)) == len(ids)
    moves = [line for line in log_lines(env) if line.startswith("Concurrency limit")]
    fell = [i for i, line in enumerate(moves) if "HTTP 503" in line]
    assert fell, moves
    after = [line.split()[2:5] for line in moves[fell[-1] + 1 :]]
    assert any(int(new) > int(old) for old, _, new in after), moves


def test_adaptive_run_orders_and_completes_like_a_fixed_one(run_env, backend, db):
    many(db, 12)
    backend.default = Answer(sleep=0.01)
    env = {**run_env, "REFRESH_ADAPTIVE": "true", "REFRESH_PLATFORMS": "shopify,all"}
    assert main(["run"], env) == 0
    assert main(["run"], env) == 0  # now with history: ordered, judged per job
    assert sum(1 for row in jobs(db).values() if row[0] == "succeeded") == 24
    assert len(backend.refreshes()) == 48
