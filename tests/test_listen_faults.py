"""The listener under faults: two listeners, a SIGKILL, killed connections, a database
that goes away and comes back, notifications that never arrive."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.backend import Answer
from tests.conftest import connect_clients, log_lines
from tests.listen_helpers import (
    kill,
    listening,
    pending_count,
    refreshed,
    request,
    start,
    stop,
    wait_for,
)
from tests.pgproxy import PgProxy
from tests.runs import ALICE

SHOPIFY_ONLY = {"REFRESH_PLATFORMS": "shopify"}


@pytest.fixture
def proxy(db_url):
    server = PgProxy(db_url).start()
    yield server
    server.close()


def _clients(db, count: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    connect_clients(db, {c: ("shopify",) for c in ids})
    return ids


def test_two_listeners_never_refresh_one_change_twice(db, backend, run_env):
    ids = _clients(db, 16)
    backend.default = Answer(sleep=0.2)  # long enough for both to want the same keys
    env = {**run_env, **SHOPIFY_ONLY}
    first, second = start(env), start(env)
    try:
        assert wait_for(lambda: listening(db, 2))
        for client_id in ids:
            request(db, client_id, "shopify")
        assert wait_for(lambda: len(refreshed(backend)) == len(ids), timeout=30)
        time.sleep(2)
    finally:
        results = [stop(first), stop(second)]
    assert [code for code, _ in results] == [0, 0], results
    assert set(refreshed(backend).values()) == {1}
    assert pending_count(db) == 0


def test_a_killed_listeners_keys_are_refreshed_once_its_lease_ends(db, backend, run_env):
    connect_clients(db, {ALICE: ("shopify",)})
    backend.script(ALICE, "shopify", Answer(sleep=20), Answer())
    env = {**run_env, **SHOPIFY_ONLY, "REFRESH_TIMEOUT": "30"}
    doomed = start(env)
    assert wait_for(lambda: listening(db))
    request(db, ALICE, "shopify")
    assert wait_for(lambda: refreshed(backend)[(ALICE, "shopify")] == 1)
    kill(doomed)  # SIGKILL with the refresh in flight: nothing frees its claim
    killed_at = time.monotonic()
    survivor = start(env)
    try:
        assert wait_for(lambda: refreshed(backend)[(ALICE, "shopify")] == 2, timeout=60)
        took = time.monotonic() - killed_at
    finally:
        code, out = stop(survivor)
    assert code == 0, out
    # The lease is 30 s; the survivor then takes the key within its settle and poll times.
    assert 20 < took < 30 + 10, took
    assert pending_count(db) == 0


def test_changes_while_connections_are_killed_are_refreshed_after_reconnecting(
    db, backend, run_env
):
    connect_clients(db, {ALICE: ("shopify",)})
    env = {**run_env, **SHOPIFY_ONLY, "REFRESH_POLL_SECONDS": "600"}
    proc = start(env)
    try:
        assert wait_for(lambda: listening(db))
        with db.cursor() as cur:
            # The change lands in the same statement that ends the listener's sessions: its
            # notification can only be lost.
            cur.execute(
                "SELECT analytics_refresh_request(%s::uuid, 'shopify'),"
                " pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name LIKE 'analytics-refresh listen%%'",
                (ALICE,),
            )
        assert wait_for(lambda: refreshed(backend)[(ALICE, "shopify")] == 1, timeout=30)
    finally:
        code, out = stop(proc)
    assert code == 0, out
    lines = log_lines(env)
    assert any("Listener lost the database" in line for line in lines), lines
    assert any("Listener reconnected" in line for line in lines), lines


def test_changes_while_the_database_is_away_are_refreshed_once_it_answers(
    db, backend, run_env, proxy
):
    connect_clients(db, {ALICE: ("shopify",)})
    env = {**run_env, **SHOPIFY_ONLY, "DATABASE_URL": proxy.client_url()}
    env["REFRESH_POLL_SECONDS"] = "600"  # only the reconnect may find the change
    proc = start(env)
    try:
        assert wait_for(lambda: listening(db))
        proxy.refusing = True
        proxy.drop_all()
        request(db, ALICE, "shopify")  # behind the listener's back
        time.sleep(4)
        assert refreshed(backend)[(ALICE, "shopify")] == 0
        proxy.refusing = False
        back = time.monotonic()
        assert wait_for(lambda: refreshed(backend)[(ALICE, "shopify")] == 1, timeout=45)
        assert time.monotonic() - back < 30  # the backoff is at most 10 s; the goal is 60 s
    finally:
        code, out = stop(proc)
    assert code == 0, out


def test_a_database_unreachable_at_start_is_waited_for(db, backend, run_env, proxy):
    connect_clients(db, {ALICE: ("shopify",)})
    proxy.refusing = True
    env = {**run_env, **SHOPIFY_ONLY, "DATABASE_URL": proxy.client_url()}
    proc = start(env)
    try:
        time.sleep(3)
        assert proc.poll() is None  # still trying, not exited
        request(db, ALICE, "shopify")
        proxy.refusing = False
        assert wait_for(lambda: refreshed(backend)[(ALICE, "shopify")] == 1, timeout=30)
    finally:
        code, out = stop(proc)
    assert code == 0, out
    assert any("Listener cannot reach the database" in line for line in log_lines(env))


def test_without_notifications_it_polls_alone_and_says_so_once(db, backend, run_env, proxy):
    connect_clients(db, {ALICE: ("shopify",)})
    proxy.swallow_notifications = True
    env = {**run_env, **SHOPIFY_ONLY, "DATABASE_URL": proxy.client_url()}
    proc = start(env)
    try:
        assert wait_for(lambda: listening(db), timeout=30)
        request(db, ALICE, "shopify")
        assert wait_for(lambda: refreshed(backend)[(ALICE, "shopify")] == 1, timeout=30)
        proxy.drop_all()  # a reconnect tries LISTEN again, and says nothing new
        request(db, ALICE, "shopify")
        assert wait_for(lambda: refreshed(backend)[(ALICE, "shopify")] == 2, timeout=30)
    finally:
        code, out = stop(proc)
    assert code == 0, out
    said = [line for line in log_lines(env) if "LISTEN is unavailable" in line]
    assert len(said) == 1, said
    assert "polling every 2s alone" in said[0]


def test_a_round_cut_off_by_the_database_is_redone_soon_after_it_answers(
    db, backend, run_env, proxy
):
    connect_clients(db, {ALICE: ("shopify",)})
    backend.script(ALICE, "shopify", Answer(sleep=3.0), Answer())
    env = {**run_env, **SHOPIFY_ONLY, "DATABASE_URL": proxy.client_url()}
    env["REFRESH_POLL_SECONDS"] = "600"
    proc = start(env)
    try:
        assert wait_for(lambda: listening(db))
        request(db, ALICE, "shopify")
        assert wait_for(lambda: refreshed(backend)[(ALICE, "shopify")] == 1)
        proxy.refusing = True  # the refresh's record cannot be written
        proxy.drop_all()
        time.sleep(12)
        proxy.refusing = False
        back = time.monotonic()
        # Its claim is freed at the reconnect, not when its 30 s lease ends.
        assert wait_for(lambda: refreshed(backend)[(ALICE, "shopify")] == 2, timeout=40)
        assert time.monotonic() - back < 12
    finally:
        code, out = stop(proc)
    assert code == 0, out
    assert pending_count(db) == 0
