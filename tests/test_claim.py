"""The run's claim: every finished job's record is written, kept for the next try, or counted
as not recorded; each run's lease is stored with it and judged by its own length."""

from __future__ import annotations

import time

import psycopg2.extensions

from analytics_refresh.cli import main
from analytics_refresh.clock import Deadline
from analytics_refresh.model.outcome import JobRecord
from analytics_refresh.store.pending import PendingRecords
from analytics_refresh.store.plan import Job
from analytics_refresh.store.writes import RunWriter
from tests.conftest import connect_clients, log_lines
from tests.faults.test_exclusivity import running_row
from tests.faults.test_process_faults import fetch
from tests.runs import ALICE, BOB, CAROL


def writer_with_plan(db_url, jobs) -> RunWriter:
    writer = RunWriter(db_url, trigger="cron", deadline=Deadline(60))
    writer.insert_run("running")
    writer.insert_planned(jobs)
    return writer


def statuses(db, run_id):
    rows = fetch(db, "SELECT client_id::text, status FROM refresh_jobs WHERE run_id = %s", run_id)
    return dict(rows)


def test_a_batch_that_fails_in_an_unexpected_way_is_written_row_by_row(db, db_url):
    """Not a database error: a record that cannot even become a row. The rest of its batch
    is written; it alone is counted, never dropped unseen."""
    jobs = [Job(ALICE, "shopify"), Job(BOB, "shopify"), Job(CAROL, "amazon")]
    writer = writer_with_plan(db_url, jobs)
    pending = PendingRecords()
    pending.queue(JobRecord(jobs[0], "succeeded", 1, 200, 10))
    pending.queue(JobRecord(jobs[1], "succeeded", 1, 200, 10, change_key=12345))  # not text
    pending.queue(JobRecord(jobs[2], "failed", 1, 500, 10, error="HTTP 500"))
    assert pending.write(writer) == 1
    assert pending.unrecorded == 1
    assert statuses(db, writer.run_id) == {
        ALICE: "succeeded",
        BOB: "not_attempted",
        CAROL: "failed",
    }
    writer.close()


def test_an_unreachable_database_keeps_the_batch_until_the_final_write(db, db_url):
    jobs = [Job(ALICE, "shopify"), Job(BOB, "shopify")]
    writer = writer_with_plan(db_url, jobs)
    pending = PendingRecords()
    pending.queue(JobRecord(jobs[0], "succeeded", 1, 200, 10))
    good_url = writer.url
    writer.url = psycopg2.extensions.make_dsn(db_url, dbname="no_such_database")
    writer.close()  # the next write must reconnect, to a database that is not there
    writer.give_up_at = time.monotonic() + 1  # no long reconnecting
    assert pending.write(writer) == 0  # kept, not lost
    assert pending.unrecorded == 0
    writer.url, writer.give_up_at = good_url, None
    pending.queue(JobRecord(jobs[1], "failed", 1, 500, 10, error="HTTP 500"))
    assert pending.write(writer, final=True) == 0
    assert statuses(db, writer.run_id) == {ALICE: "succeeded", BOB: "failed"}
    writer.close()


def test_records_given_up_are_counted_and_later_ones_too(db, db_url):
    jobs = [Job(ALICE, "shopify"), Job(BOB, "shopify")]
    writer = writer_with_plan(db_url, jobs)
    pending = PendingRecords()
    pending.queue(JobRecord(jobs[0], "succeeded", 1, 200, 10))
    assert pending.give_up("the database stopped answering") == 1
    pending.queue(JobRecord(jobs[1], "succeeded", 1, 200, 10))  # a job that ended after
    assert pending.write(writer, final=True) == 0
    assert pending.unrecorded == 2
    assert statuses(db, writer.run_id) == {ALICE: "not_attempted", BOB: "not_attempted"}
    writer.close()


# -- each run's lease is its own --------------------------------------------------------------
def with_lease(db, run_id: str, seconds: float) -> None:
    with db.cursor() as cur:
        cur.execute(
            "UPDATE refresh_runs SET lease_seconds = %s WHERE run_id = %s", (seconds, run_id)
        )


def test_a_run_stores_the_lease_it_promises(run_env, db, backend):
    connect_clients(db, {ALICE: ("shopify",)})
    assert main(["run"], {**run_env, "REFRESH_TIMEOUT": "45"}) == 0
    assert fetch(db, "SELECT lease_seconds FROM refresh_runs") == [(75.0,)]


def test_an_older_run_is_judged_by_its_own_lease_not_the_new_runs_timeout(run_env, db, backend):
    connect_clients(db, {ALICE: ("shopify",)})
    # Renewed 40 s ago by a run whose requests may last 60 s: alive, though the new run's
    # own lease (5 + 30 s) would call it dead.
    alive = running_row(db, host="elsewhere", seconds_ago=40)
    with_lease(db, alive, 90)
    assert main(["run"], {**run_env, "REFRESH_TIMEOUT": "5"}) == 5
    assert backend.refreshes() == []
    line = [x for x in log_lines(run_env) if "is still alive" in x][-1]
    assert f"run {alive} on elsewhere" in line

    # Renewed 40 s ago by a run that promised 35 s: gone, though the new run's own lease
    # (300 + 30 s) would call it alive.
    with db.cursor() as cur:
        cur.execute("DELETE FROM refresh_runs")
    gone = running_row(db, host="elsewhere", seconds_ago=40)
    with_lease(db, gone, 35)
    assert main(["run"], {**run_env, "REFRESH_TIMEOUT": "300"}) == 0
    assert fetch(db, "SELECT status FROM refresh_runs WHERE run_id = %s", gone) == [("abandoned",)]
