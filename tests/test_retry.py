"""The retry policy's formula."""

from __future__ import annotations

import random

from analytics_refresh.http.client import parse_retry_after
from analytics_refresh.http.retry import RetryPolicy


def test_full_jitter_stays_under_the_exponential_ceiling():
    policy = RetryPolicy(max_attempts=5, base_delay=1.0, max_delay=30.0, rng=random.Random(7))
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (6, 30.0), (10, 30.0)):
        delays = [policy.delay(attempt) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # the whole range is used, not a fixed wait


def test_retry_after_is_a_floor_with_a_cap():
    policy = RetryPolicy(retry_after_cap=120.0, rng=random.Random(1))
    assert policy.delay(1, retry_after=10) == 10
    assert policy.delay(1, retry_after=3600) == 120
    assert 0 <= policy.delay(1, retry_after=-5) <= 1


def test_attempt_budget():
    policy = RetryPolicy(max_attempts=3)
    assert [policy.should_retry(n) for n in (1, 2, 3)] == [True, True, False]


def test_retry_after_header_forms():
    assert parse_retry_after("7") == 7
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470) == 10
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
