"""The listener end to end: real processes, the real PostgreSQL, a loopback backend."""

from __future__ import annotations

import time

from tests.backend import Answer
from tests.conftest import connect_clients, log_lines
from tests.listen_helpers import (
    listen_jobs,
    listening,
    refreshed,
    request,
    start,
    stop,
    wait_for,
)
from tests.runs import ALICE, BOB


def test_a_burst_of_changes_is_one_refresh_per_key_and_no_other_key(db, backend, run_env):
    connect_clients(db, {ALICE: ("shopify", "amazon"), BOB: ("shopify",)})
    proc = start(run_env)
    try:
        assert wait_for(lambda: listening(db))
        for _ in range(8):
            request(db, ALICE, "shopify")
            time.sleep(0.05)
        assert wait_for(lambda: len(refreshed(backend)) >= 2)
        time.sleep(1.5)  # room for any second refresh that should not come
    finally:
        code, out = stop(proc)
    assert code == 0, out
    assert refreshed(backend) == {(ALICE, "shopify"): 1, (ALICE, "all"): 1}
    assert sorted(listen_jobs(db)) == [(ALICE, "all", "succeeded"), (ALICE, "shopify", "succeeded")]
    lines = log_lines(run_env)
    assert any(line.startswith(f"✅ SUCCESS - {ALICE} (shopify)") for line in lines)


def test_a_change_during_a_refresh_gives_exactly_one_more(db, backend, run_env):
    connect_clients(db, {ALICE: ("shopify",)})
    backend.script(ALICE, "shopify", Answer(sleep=2.0), Answer())
    env = {**run_env, "REFRESH_PLATFORMS": "shopify"}
    proc = start(env)
    try:
        assert wait_for(lambda: listening(db))
        request(db, ALICE, "shopify")
        assert wait_for(lambda: refreshed(backend)[(ALICE, "shopify")] == 1)
        for _ in range(5):  # while the first refresh is in flight
            request(db, ALICE, "shopify")
            time.sleep(0.1)
        assert wait_for(lambda: refreshed(backend)[(ALICE, "shopify")] == 2, timeout=15)
        time.sleep(2.5)
    finally:
        code, out = stop(proc)
    assert code == 0, out
    assert refreshed(backend)[(ALICE, "shopify")] == 2
