"""The listener end to end: real processes, the real PostgreSQL, a loopback backend."""

from __future__ import annotations

import time
import uuid

from analytics_refresh.cli import main
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


def _add_orders(db, client_id: str, platform: str, count: int) -> None:
    with db.cursor() as cur:
        for n in range(count):  # one statement each, as a loader committing one by one
            cur.execute(
                "INSERT INTO order_lines (client_id, platform, order_id, sku, quantity,"
                " unit_price, ordered_at) VALUES (%s, %s, %s, 'SKU-1', 1, 9.5, now())",
                (client_id, platform, f"o-{n}-{uuid.uuid4().hex[:6]}"),
            )


def test_new_orders_refresh_that_clients_keys_and_no_other(db, backend, run_env):
    connect_clients(db, {ALICE: ("shopify", "amazon"), BOB: ("shopify",)})
    proc = start(run_env)
    try:
        assert wait_for(lambda: listening(db))
        _add_orders(db, ALICE, "amazon", 5)
        assert wait_for(lambda: len(refreshed(backend)) >= 2)
        time.sleep(1.5)
    finally:
        code, out = stop(proc)
    assert code == 0, out
    assert refreshed(backend) == {(ALICE, "amazon"): 1, (ALICE, "all"): 1}
    with db.cursor() as cur:
        # Each refresh keeps when the change it covered was first seen: the first order's.
        cur.execute(
            "SELECT j.change_at >= min(o.updated_at) - interval '1 second'"
            " AND j.change_at <= min(o.updated_at) + interval '1 second'"
            " AND j.change_at < j.finished_at"
            " FROM refresh_jobs j JOIN refresh_runs r USING (run_id), order_lines o"
            " WHERE r.trigger = 'listen' AND o.client_id = j.client_id"
            " GROUP BY j.platform, j.change_at, j.finished_at"
        )
        assert [row[0] for row in cur.fetchall()] == [True, True]


def test_request_command_records_the_change_and_wakes_a_listener(db, backend, run_env, capsys):
    connect_clients(db, {BOB: ("shopify",)})
    env = {**run_env, "REFRESH_PLATFORMS": "shopify"}
    proc = start(env)
    try:
        assert wait_for(lambda: listening(db))
        assert main(["request", BOB, "--platform", "shopify"], environ=env) == 0
        assert BOB in capsys.readouterr().out
        assert wait_for(lambda: refreshed(backend)[(BOB, "shopify")] == 1)
    finally:
        code, out = stop(proc)
    assert code == 0, out


def test_request_command_refuses_a_bad_client_id(run_env, capsys):
    assert main(["request", "not-a-uuid"], environ=run_env) == 2
    assert "not-a-uuid" in capsys.readouterr().err


def test_a_run_skips_a_key_a_listener_is_refreshing(db, backend, run_env):
    connect_clients(db, {ALICE: ("shopify",), BOB: ("shopify",)})
    backend.script(ALICE, "shopify", Answer(sleep=4.0), Answer())
    env = {**run_env, "REFRESH_PLATFORMS": "shopify"}
    proc = start(env)
    try:
        assert wait_for(lambda: listening(db))
        request(db, ALICE, "shopify")
        assert wait_for(lambda: refreshed(backend)[(ALICE, "shopify")] == 1)
        assert main(["run"], environ=env) == 0  # while the listener's refresh is in flight
    finally:
        code, out = stop(proc)
    assert code == 0, out
    assert refreshed(backend) == {(ALICE, "shopify"): 1, (BOB, "shopify"): 1}
    assert any(
        line.startswith(f"⏭ SKIPPED - {ALICE} (shopify): a listener is refreshing it")
        for line in log_lines(env)
    )


def test_a_change_a_run_refreshed_is_not_refreshed_again_by_a_listener(db, backend, run_env):
    connect_clients(db, {ALICE: ("shopify",)})
    env = {**run_env, "REFRESH_PLATFORMS": "shopify", "REFRESH_SETTLE_SECONDS": "3"}
    proc = start(env)
    try:
        assert wait_for(lambda: listening(db))
        request(db, ALICE, "shopify")
        assert main(["run"], environ=env) == 0  # before the listener's settle time is up
        time.sleep(5)
    finally:
        code, out = stop(proc)
    assert code == 0, out
    assert refreshed(backend) == {(ALICE, "shopify"): 1}


def test_a_stop_lets_the_refresh_in_flight_finish_records_it_and_exits_0(db, backend, run_env):
    connect_clients(db, {ALICE: ("shopify",)})
    backend.script(ALICE, "shopify", Answer(sleep=3.0))
    env = {**run_env, "REFRESH_PLATFORMS": "shopify"}
    proc = start(env)
    assert wait_for(lambda: listening(db))
    request(db, ALICE, "shopify")
    assert wait_for(lambda: refreshed(backend)[(ALICE, "shopify")] == 1)
    code, out = stop(proc)  # SIGTERM with the request in flight
    assert code == 0, out
    assert listen_jobs(db) == [(ALICE, "shopify", "succeeded")]
    with db.cursor() as cur:
        cur.execute("SELECT status FROM refresh_runs WHERE trigger = 'listen'")
        assert cur.fetchall() == [("succeeded",)]
        cur.execute("SELECT count(*) FROM refresh_claims WHERE claimed_by IS NOT NULL")
        assert cur.fetchone() == (0,)
        cur.execute("SELECT stopped_at IS NOT NULL FROM refresh_listeners")
        assert cur.fetchall() == [(True,)]


def test_listen_without_a_secret_is_a_configuration_error(run_env, capsys):
    env = {k: v for k, v in run_env.items() if k != "API_SECRET_KEY"}
    assert main(["listen"], environ=env) == 3
    assert "API_SECRET_KEY" in capsys.readouterr().err


def test_listen_on_a_database_without_the_tables_exits_4_naming_db_init(
    empty_db_url, run_env, capsys
):
    env = {**run_env, "DATABASE_URL": empty_db_url}
    assert main(["listen"], environ=env) == 4
    assert "db init" in capsys.readouterr().err
