"""refresh_job_days: each client's backend milliseconds per UTC day, kept by triggers.

Every way rows reach or leave refresh_jobs (a history written straight in, a real run's
planned and finished rows, a row moved to another day, a prune, a run deleted with its
rows, a truncate, an upgrade that finds history and no sums) leaves the sums equal to an
aggregation of the rows themselves; and the report's cost figures read the same with or
without them.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import psycopg2
import psycopg2.extensions
import pytest

from analytics_refresh.cli import main
from analytics_refresh.store import db as store_db
from tests.conftest import connect_clients
from tests.report_history import KeyHistory, Refresh, database_minute, write
from tests.runs import ALICE, BOB, CAROL

H = timedelta(hours=1)

# The independent computation: every finished job row, summed per client and UTC day.
FROM_ROWS = """
    SELECT client_id::text, (finished_at AT TIME ZONE 'UTC')::date, count(*),
           count(duration_ms) FILTER (WHERE status IN ('succeeded', 'failed')),
           coalesce(sum(duration_ms) FILTER (WHERE status IN ('succeeded', 'failed')), 0),
           count(*) FILTER (WHERE status = 'skipped' AND error LIKE 'unchanged%%')
    FROM refresh_jobs WHERE finished_at IS NOT NULL
    GROUP BY 1, 2 ORDER BY 1, 2
"""
KEPT = """
    SELECT client_id::text, day, jobs, timed_jobs, backend_ms, unchanged_rows
    FROM refresh_job_days ORDER BY 1, 2
"""


def sums(db) -> tuple[list, list]:
    with db.cursor() as cur:
        cur.execute(FROM_ROWS)
        rows = cur.fetchall()
        cur.execute(KEPT)
        return rows, cur.fetchall()


def assert_kept(db) -> list:
    rows, kept = sums(db)
    assert kept == rows
    return kept


def history(now) -> list[KeyHistory]:
    """Three clients over three UTC days, with failures, a skip and a row with no duration."""
    start = now.replace(hour=0, minute=0, second=0, microsecond=0) - 2 * 24 * H
    times = [start + i * 5 * H for i in range(11) if start + i * 5 * H < now]
    return [
        KeyHistory(ALICE, "shopify", [Refresh(t, duration_ms=700) for t in times]),
        KeyHistory(
            BOB,
            "amazon",
            [Refresh(t, "failed", duration_ms=30_000, error="HTTP 503") for t in times[:3]]
            + [Refresh(t, duration_ms=1_234) for t in times[3:]],
        ),
        KeyHistory(
            CAROL,
            "all",
            [Refresh(times[0], "skipped", duration_ms=None, error="unchanged since last run")]
            + [Refresh(t, duration_ms=None) for t in times[1:4]],
        ),
    ]


def test_a_history_written_straight_in_is_summed_per_client_and_day(db):
    write(db, history(database_minute(db)))
    kept = assert_kept(db)
    assert len({day for _, day, *_ in kept}) == 3
    carol = [r for r in kept if r[0] == CAROL]
    assert sum(r[5] for r in carol) == 1  # the unchanged skip
    assert sum(r[3] for r in carol) == 0  # no refresh of hers has a duration


def test_rows_moved_deleted_and_truncated_keep_the_sums(db):
    write(db, history(database_minute(db)))
    with db.cursor() as cur:
        # Another day, another duration, another status: the old day loses what the new gains.
        cur.execute(
            "UPDATE refresh_jobs SET finished_at = finished_at - interval '1 day',"
            " duration_ms = duration_ms * 2 WHERE client_id = %s",
            (ALICE,),
        )
        assert_kept(db)
        cur.execute(
            "UPDATE refresh_jobs SET status = 'succeeded', error = NULL WHERE client_id = %s",
            (CAROL,),
        )
        assert_kept(db)
        cur.execute("UPDATE refresh_jobs SET attempts = attempts + 1")  # nothing summed moves
        assert_kept(db)
        # A run deleted with its rows (the foreign key's cascade), then single rows.
        cur.execute(
            "DELETE FROM refresh_runs WHERE run_id = (SELECT min(run_id::text)::uuid"
            " FROM refresh_jobs WHERE client_id = %s)",
            (BOB,),
        )
        assert_kept(db)
        cur.execute("DELETE FROM refresh_jobs WHERE client_id = %s", (BOB,))
        kept = assert_kept(db)
        assert BOB not in {r[0] for r in kept}  # a day left with no row is gone
        cur.execute("TRUNCATE refresh_runs CASCADE")
        assert assert_kept(db) == []
        write(db, history(database_minute(db)))
        assert assert_kept(db)


def test_real_runs_and_a_prune_keep_the_sums(run_env, clients, db, capsys):
    assert main(["run"], run_env) == 0
    assert main(["run"], run_env) == 0
    kept = assert_kept(db)
    # 7 keys, twice: each job counted once, when it finished, not when it was planned.
    assert sum(r[2] for r in kept) == sum(r[3] for r in kept) == 14
    with db.cursor() as cur:
        cur.execute(
            "UPDATE refresh_runs SET finished_at = now() - interval '40 days'"
            " WHERE run_id = (SELECT run_id FROM refresh_runs ORDER BY started_at LIMIT 1)"
        )
        cur.execute(
            "UPDATE refresh_jobs SET finished_at = now() - interval '40 days' WHERE run_id ="
            " (SELECT run_id FROM refresh_runs ORDER BY started_at LIMIT 1)"
        )
    assert_kept(db)
    assert main(["db", "prune", "--days", "30"], run_env) == 0
    kept = assert_kept(db)
    assert sum(r[2] for r in kept) == 7


def test_an_upgrade_fills_the_sums_from_the_history_once(db, db_url, tmp_path):
    with db.cursor() as cur:
        cur.execute("DROP TABLE refresh_job_days")
        cur.execute("DROP FUNCTION analytics_refresh_job_days() CASCADE")  # and its triggers
    write(db, history(database_minute(db)))
    assert main(["db", "init"], {"DATABASE_URL": db_url, "LOG_DIR": str(tmp_path)}) == 0
    kept = assert_kept(db)
    assert kept
    # Another init finds the sums there and leaves them; the triggers carry on.
    assert main(["db", "init"], {"DATABASE_URL": db_url, "LOG_DIR": str(tmp_path)}) == 0
    assert assert_kept(db) == kept
    write(db, history(database_minute(db) + 2 * H))
    assert len(assert_kept(db)) >= len(kept)


def report_clients(capsys, env) -> dict:
    capsys.readouterr()
    assert main(["report", "--json", "--days", "3"], env) == 0
    figures = json.loads(capsys.readouterr().out)
    return {
        "clients": {c["client_id"]: c["backend_seconds"] for c in figures["clients"]},
        "skipped": figures["skipped_unchanged_share"],
    }


def test_the_report_costs_the_same_from_the_sums_as_from_the_rows(db, db_url, tmp_path, capsys):
    connect_clients(db, {ALICE: ("shopify",), BOB: ("amazon",), CAROL: ("shopify",)})
    write(db, history(database_minute(db)))
    env = {"DATABASE_URL": db_url, "LOG_DIR": str(tmp_path / "logs")}
    from_sums = report_clients(capsys, env)
    assert from_sums["clients"][ALICE] == pytest.approx(
        0.7 * sum(1 for r in history(database_minute(db))[0].refreshes)
    )
    with db.cursor() as cur:
        cur.execute("DROP TABLE refresh_job_days CASCADE")
    assert store_db.missing_tables(db) == []  # the runner's tables are all there
    assert report_clients(capsys, env) == from_sums


@pytest.fixture
def runner_role(db, db_url):
    """A login role with the guide's grants but the one on refresh_job_days."""
    name = f"ar_runner_{uuid.uuid4().hex[:8]}"
    with db.cursor() as cur:
        cur.execute(f'CREATE ROLE "{name}" LOGIN')
        cur.execute(f'GRANT USAGE ON SCHEMA public TO "{name}"')
        cur.execute(f'GRANT SELECT ON client_api_credentials TO "{name}"')
        cur.execute(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON refresh_runs, refresh_jobs, refresh_state,"
            f' refresh_claims, refresh_requests TO "{name}"'
        )
    yield name, psycopg2.extensions.make_dsn(db_url, user=name)
    admin = psycopg2.connect(psycopg2.extensions.make_dsn(db_url, dbname="postgres"))
    admin.autocommit = True
    with db.cursor() as cur:
        cur.execute(f'DROP OWNED BY "{name}"')
    with admin.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,)
        )
        cur.execute(f'DROP ROLE IF EXISTS "{name}"')
    admin.close()


def test_a_runner_role_with_no_grant_on_the_sums_keeps_them_and_reports(
    run_env, clients, db, runner_role, capsys
):
    role, url = runner_role
    env = {**run_env, "DATABASE_URL": url}
    assert main(["run"], env) == 0
    assert main(["run"], env) == 0
    kept = assert_kept(db)
    assert sum(r[2] for r in kept) == 14
    # It may not read the sums: the report reads the job rows instead, to the same figures.
    as_runner = report_clients(capsys, env)
    assert as_runner == report_clients(capsys, run_env)
    assert set(as_runner["clients"]) >= {ALICE, BOB, CAROL}
    with db.cursor() as cur:
        cur.execute(f'GRANT SELECT ON refresh_job_days TO "{role}"')
    assert report_clients(capsys, env) == as_runner


def test_writes_under_an_empty_search_path_keep_the_sums(db):
    """As pg_dump's restore writes: every name qualified, no schema on the path."""
    write(db, history(database_minute(db)))
    with db.cursor() as cur:
        cur.execute("SET search_path = ''")
        cur.execute("UPDATE public.refresh_jobs SET duration_ms = duration_ms + 1")
        cur.execute("DELETE FROM public.refresh_jobs WHERE client_id = %s", (BOB,))
        cur.execute("RESET search_path")
    assert_kept(db)


def test_sums_dropped_by_hand_stop_no_write_and_come_back_with_db_init(db, db_url, tmp_path):
    write(db, history(database_minute(db)))
    with db.cursor() as cur:
        cur.execute("DROP TABLE refresh_job_days")
        cur.execute("UPDATE refresh_jobs SET duration_ms = 5 WHERE client_id = %s", (ALICE,))
    write(db, history(database_minute(db) + 2 * H))
    assert main(["db", "init"], {"DATABASE_URL": db_url, "LOG_DIR": str(tmp_path)}) == 0
    assert assert_kept(db)


def test_a_row_finished_after_the_reports_instant_costs_the_same_both_ways(
    db, db_url, tmp_path, capsys
):
    """A run finishing while the report reads, or a host whose clock is ahead: today's sum
    holds it, and so does the reading of the rows."""
    connect_clients(db, {ALICE: ("shopify",), BOB: ("amazon",)})
    now = database_minute(db)
    write(db, history(now))
    # After the report's instant and still today (its last second, a minute before midnight).
    ahead = min(now + timedelta(seconds=90), now.replace(hour=23, minute=59, second=59))
    write(db, [KeyHistory(ALICE, "shopify", [Refresh(ahead, duration_ms=5000)])])
    env = {"DATABASE_URL": db_url, "LOG_DIR": str(tmp_path / "logs")}
    from_sums = report_clients(capsys, env)
    alice = history(now)[0].refreshes
    assert from_sums["clients"][ALICE] == pytest.approx(0.7 * len(alice) + 5.0)
    with db.cursor() as cur:
        cur.execute("DROP TABLE refresh_job_days")
    assert report_clients(capsys, env) == from_sums
