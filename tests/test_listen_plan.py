"""The coalescing rule: quiet for the settle time, or the max delay after the first change."""

from __future__ import annotations

import time

from analytics_refresh.listen.pending import Pending, plan
from analytics_refresh.plan import Job
from tests.conftest import connect_clients
from tests.listen_helpers import listening, refreshed, request, start, stop, wait_for
from tests.runs import ALICE


def key(quiet: float, waiting: float, held: float | None = None) -> Pending:
    return Pending(Job(ALICE, "shopify"), quiet, waiting, held, None, seen=100.0)


def test_a_key_is_due_once_quiet_for_the_settle_time():
    assert plan([key(quiet=5.0, waiting=5.0)], settle=5, max_delay=60).due
    later = plan([key(quiet=1.0, waiting=1.0)], settle=5, max_delay=60)
    assert not later.due
    assert later.wake_in == 4.0


def test_a_key_that_never_goes_quiet_is_due_at_the_max_delay():
    assert plan([key(quiet=0.1, waiting=60.0)], settle=5, max_delay=60).due
    assert plan([key(quiet=0.1, waiting=58.0)], settle=5, max_delay=60).wake_in == 2.0


def test_a_held_key_waits_for_its_claim_and_the_oldest_goes_first():
    held = plan([key(quiet=9.0, waiting=9.0, held=7.0)], settle=5, max_delay=60)
    assert not held.due
    assert held.wake_in == 7.0
    older = Pending(Job(ALICE, "all"), 9.0, 30.0, None, None, 100.0)
    both = plan([key(quiet=9.0, waiting=9.0), older], settle=5, max_delay=60)
    assert [p.job.platform for p in both.due] == ["all", "shopify"]
    assert both.oldest == 30.0


def test_changes_that_never_stop_are_refreshed_every_max_delay(db, backend, run_env):
    connect_clients(db, {ALICE: ("shopify",)})
    env = {
        **run_env,
        "REFRESH_PLATFORMS": "shopify",
        "REFRESH_SETTLE_SECONDS": "2",
        "REFRESH_MAX_DELAY_SECONDS": "3",
    }
    proc = start(env)
    try:
        assert wait_for(lambda: listening(db))
        began = time.monotonic()
        while time.monotonic() - began < 8:  # never quiet for 2 s
            request(db, ALICE, "shopify")
            time.sleep(0.3)
        during = refreshed(backend)[(ALICE, "shopify")]
        assert wait_for(lambda: refreshed(backend)[(ALICE, "shopify")] == during + 1, timeout=10)
    finally:
        code, out = stop(proc)
    assert code == 0, out
    assert 2 <= during <= 3  # at about 3 s and 6 s, not once per change
