"""Longest expected job first, and skipping what is already fresh."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from analytics_refresh.cli import main
from analytics_refresh.run.ordering import JobQueue, schedule
from analytics_refresh.store.plan import Job
from analytics_refresh.store.records import KeyState
from tests.backend import Answer
from tests.conftest import connect_clients, log_lines
from tests.runs import ALICE, BOB, CAROL, jobs
from tests.test_status import rebuild_state

NOW = datetime(2026, 1, 15, 8, 0, tzinfo=timezone.utc)


def job(n: int, platform: str = "shopify") -> Job:
    return Job(str(uuid.UUID(int=n)), platform)


def last(durations: dict[Job, int | None], age_seconds: float = 3600.0) -> dict:
    at = NOW - timedelta(seconds=age_seconds)
    return {
        (j.client_id, j.platform): KeyState(
            j.client_id, j.platform, last_success_at=at, last_duration_ms=d
        )
        for j, d in durations.items()
    }


def test_longest_expected_job_first_and_unknown_jobs_before_all():
    planned = [job(i) for i in range(6)]
    history = last(
        {planned[0]: 100, planned[1]: 9000, planned[2]: 50, planned[4]: 9000, planned[5]: None}
    )
    result = schedule(planned, history, now=NOW)
    # Unknown (3, and 5 with no duration) first in plan order, then 9 s (1 and 4 in plan
    # order), then 100 ms, then 50 ms.
    assert result.jobs == [planned[3], planned[5], planned[1], planned[4], planned[0], planned[2]]
    assert result.expected[planned[1]] == 9.0
    assert planned[3] not in result.expected
    assert result.skipped == []


def test_fresh_jobs_are_skipped_and_stale_ones_run():
    planned = [job(i) for i in range(4)]
    history = {
        **last({planned[0]: 100}, age_seconds=10 * 60),  # fresh
        **last({planned[1]: 100}, age_seconds=31 * 60),  # stale
        **last({planned[2]: None}, age_seconds=60),  # fresh, duration unknown
    }
    result = schedule(planned, history, skip_fresh_minutes=30, now=NOW)
    assert [r.job for r in result.skipped] == [planned[0], planned[2]]
    assert all(r.status == "skipped" and "refreshed less than" in r.error for r in result.skipped)
    assert result.jobs == [planned[3], planned[1]]


def test_skip_fresh_off_runs_everything():
    planned = [job(i) for i in range(3)]
    result = schedule(planned, last(dict.fromkeys(planned, 5), age_seconds=1), now=NOW)
    assert result.skipped == []
    assert sorted(result.jobs, key=str) == sorted(planned, key=str)


@pytest.mark.parametrize(("limit", "front"), [(1, 1), (2, 1), (4, 3), (8, 6), (64, 48)])
def test_a_quarter_of_the_slots_take_the_shortest_jobs(limit, front):
    assert JobQueue.front_slots(limit) == front


def test_queue_takes_from_the_front_until_its_share_is_full():
    ordered = [job(i) for i in range(6)]  # longest first
    queue = JobQueue(ordered)
    assert queue.take(0, 4) == (ordered[0], True)
    assert queue.take(2, 4) == (ordered[1], True)
    assert queue.take(3, 4) == (ordered[5], False)  # front share full: the shortest
    assert queue.take(3, 4) == (ordered[4], False)
    assert queue.take(1, 4) == (ordered[2], True)
    assert len(queue) == 1


# -- end to end ----------------------------------------------------------------------------
def seed_history(db, durations: dict[tuple[str, str], int], minutes_ago: float = 120) -> None:
    """A past run whose jobs succeeded with these durations (ms)."""
    run_id = str(uuid.uuid4())
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO refresh_runs (run_id, trigger, host, status, started_at, finished_at)"
            " VALUES (%s, 'cron', 'earlier', 'succeeded', now() - %s * interval '1 minute',"
            " now() - %s * interval '1 minute')",
            (run_id, minutes_ago + 1, minutes_ago),
        )
        for (client_id, platform), ms in durations.items():
            cur.execute(
                "INSERT INTO refresh_jobs (run_id, client_id, platform, status, attempts,"
                " duration_ms, finished_at) VALUES (%s, %s, %s, 'succeeded', 1, %s,"
                " now() - %s * interval '1 minute')",
                (run_id, client_id, platform, ms, minutes_ago),
            )
    rebuild_state(db)


@pytest.fixture
def clients(db):
    connect_clients(db, {ALICE: ("shopify", "amazon"), BOB: ("shopify",), CAROL: ("amazon",)})


def test_run_starts_the_longest_expected_job_first(run_env, clients, backend, db):
    seed_history(
        db,
        {
            (ALICE, "shopify"): 300,
            (ALICE, "amazon"): 100,
            (ALICE, "all"): 9000,
            (BOB, "shopify"): 50,
            (BOB, "all"): 700,
            (CAROL, "amazon"): 2000,
        },
    )  # (CAROL, "all") has no history: it goes first
    env = {**run_env, "REFRESH_CONCURRENCY": "1"}
    assert main(["run"], env) == 0
    sent = [(r.query["client_id"], r.query["platform"]) for r in backend.refreshes()]
    assert sent == [
        (CAROL, "all"),
        (ALICE, "all"),
        (CAROL, "amazon"),
        (BOB, "all"),
        (ALICE, "shopify"),
        (ALICE, "amazon"),
        (BOB, "shopify"),
    ]


def test_fresh_jobs_are_skipped_recorded_and_exit_0(run_env, clients, backend, db):
    seed_history(db, {(ALICE, "shopify"): 300, (ALICE, "all"): 900}, minutes_ago=5)
    seed_history(db, {(BOB, "shopify"): 300}, minutes_ago=45)
    env = {**run_env, "REFRESH_SKIP_FRESH_MINUTES": "30"}
    assert main(["run"], env) == 0

    sent = {(r.query["client_id"], r.query["platform"]) for r in backend.refreshes()}
    assert (ALICE, "shopify") not in sent
    assert (ALICE, "all") not in sent
    assert (BOB, "shopify") in sent
    assert len(sent) == 5
    recorded = jobs(db)
    assert recorded[(ALICE, "shopify")][:2] == ("skipped", 0)
    assert recorded[(ALICE, "all")][0] == "skipped"
    assert sum(1 for row in recorded.values() if row[0] == "succeeded") == 5
    with db.cursor() as cur:
        cur.execute(
            "SELECT status, exit_code, jobs_total, jobs_succeeded, jobs_skipped"
            " FROM refresh_runs WHERE host <> 'earlier'"
        )
        assert cur.fetchall() == [("succeeded", 0, 7, 5, 2)]
    lines = log_lines(env)
    assert sum(1 for line in lines if line.startswith(f"⏭ SKIPPED - {ALICE}")) == 2
    assert lines[-1].startswith(
        "Results: 5 successful, 0 failed out of 7 total jobs (2 skipped as fresh)"
    )


def test_a_run_right_after_a_run_skips_everything(run_env, clients, backend, db):
    env = {**run_env, "REFRESH_SKIP_FRESH_MINUTES": "60"}
    assert main(["run"], env) == 0
    assert len(backend.refreshes()) == 7
    assert main(["run"], env) == 0
    assert len(backend.refreshes()) == 7
    assert {row[0] for row in jobs(db).values()} == {"skipped"}


def test_failed_jobs_are_not_fresh(run_env, clients, backend, db):
    backend.script(BOB, "all", Answer(404, {"error": "gone"}))
    env = {**run_env, "REFRESH_SKIP_FRESH_MINUTES": "60", "REFRESH_MAX_ATTEMPTS": "1"}
    assert main(["run"], env) == 1
    backend.script(BOB, "all", Answer())
    assert main(["run"], env) == 0
    assert jobs(db)[(BOB, "all")][0] == "succeeded"
    assert sum(1 for row in jobs(db).values() if row[0] == "skipped") == 6
