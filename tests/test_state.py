"""Per-key state and bounded history: refresh_state always matches the newest job row,
failure streaks show everywhere, prune keeps what it must, the learned limit carries over."""

from __future__ import annotations

import json
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from analytics_refresh import db as runner_db
from analytics_refresh.cli import main
from tests.backend import Answer
from tests.conftest import connect_clients, log_lines
from tests.runs import ALICE, BOB

STATE_VS_JOBS = """
    SELECT s.client_id::text, s.platform, s.last_status, s.last_run_id = j.run_id,
           s.last_success_at IS NOT DISTINCT FROM ok.finished_at,
           s.consecutive_failures = (
               SELECT count(*) FROM refresh_jobs f
               WHERE f.client_id = s.client_id AND f.platform = s.platform
                 AND f.status = 'failed'
                 AND (ok.finished_at IS NULL OR f.finished_at > ok.finished_at))
    FROM refresh_state s
    JOIN LATERAL (
        SELECT run_id, status FROM refresh_jobs
        WHERE client_id = s.client_id AND platform = s.platform
          AND status IN ('succeeded', 'failed')
        ORDER BY finished_at DESC LIMIT 1) j ON true
    LEFT JOIN LATERAL (
        SELECT max(finished_at) AS finished_at FROM refresh_jobs
        WHERE client_id = s.client_id AND platform = s.platform AND status = 'succeeded') ok
        ON true
    ORDER BY 1, 2
"""


def state(db) -> dict:
    with db.cursor() as cur:
        cur.execute(
            "SELECT client_id::text, platform, last_status, consecutive_failures, "
            "last_error, last_success_at IS NOT NULL FROM refresh_state"
        )
        return {(r[0], r[1]): r[2:] for r in cur.fetchall()}


@pytest.fixture
def two_clients(db):
    connect_clients(db, {ALICE: ("shopify",), BOB: ("shopify",)})


def test_state_always_matches_the_newest_job_row(run_env, db, backend, two_clients):
    backend.script(BOB, "shopify", Answer(500, {"error": "boom"}))
    for _ in range(3):
        assert main(["run"], run_env) == 1
    backend.script(BOB, "shopify", Answer())
    assert main(["run"], run_env) == 0
    backend.script(ALICE, "all", Answer(404, {"error": "gone"}))
    assert main(["run"], run_env) == 1
    with db.cursor() as cur:
        cur.execute(STATE_VS_JOBS)
        rows = cur.fetchall()
    assert len(rows) == 4
    for _client, _platform, last_status, same_run, same_success, same_streak in rows:
        assert last_status in ("succeeded", "failed")
        assert same_run  # the state's last attempt is the newest job row
        assert same_success  # its last success is the newest successful job row
        assert same_streak  # its streak is the failed rows since that success
    now = state(db)
    assert now[(BOB, "shopify")][:2] == ("succeeded", 0)  # a success ends the streak
    assert now[(ALICE, "all")][:3] == ("failed", 1, "HTTP 404; gone")


def test_a_key_failing_three_runs_in_a_row_shows_in_status_json_and_metrics(
    run_env, db, backend, two_clients, tmp_path, capsys
):
    metrics_file = tmp_path / "metrics" / "refresh.prom"
    env = {**run_env, "METRICS_FILE": str(metrics_file), "REFRESH_MAX_ATTEMPTS": "1"}
    assert main(["run"], env) == 0
    backend.script(BOB, "shopify", Answer(500, {"error": "database timeout"}))
    for _ in range(3):
        assert main(["run"], env) == 1
    capsys.readouterr()

    assert main(["status", "--json", "--keys"], env) == 0  # fresh enough: the exit is about age
    report = json.loads(capsys.readouterr().out)
    assert report["healthy"] is False  # but it does not read as healthy
    keys = {(c["client_id"], c["platform"]): c for c in report["caches"]}
    bob = keys[(BOB, "shopify")]
    assert bob["consecutive_failures"] == 3
    assert bob["last_status"] == "failed"
    assert "database timeout" in bob["last_error"]
    assert keys[(ALICE, "shopify")]["consecutive_failures"] == 0
    assert report["failing_repeatedly_count"] == 1

    assert main(["status"], env) == 0
    human = capsys.readouterr().out
    assert "Failing run after run" in human
    assert f"{BOB} (shopify): failed 3 runs in a row, last: HTTP 500" in human
    assert "✗ failed" in human
    assert "✓ all" not in human  # never reads as healthy while keys fail

    values = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics_file.read_text())
        for s in family.samples
    }
    failing = {("shard", "none"), ("platform", "shopify")}
    assert values[("analytics_refresh_keys_failing_repeatedly", frozenset(failing))] == 1


def test_after_a_run_where_every_job_failed_status_is_not_healthy(
    run_env, db, backend, two_clients, capsys
):
    assert main(["run"], run_env) == 0
    for client in (ALICE, BOB):
        for platform in ("shopify", "all"):
            backend.script(client, platform, Answer(503, {"error": "down"}))
    assert main(["run", "--deadline", "20"], {**run_env, "REFRESH_MAX_ATTEMPTS": "1"}) == 1
    capsys.readouterr()
    main(["status"], run_env)
    out = capsys.readouterr().out
    assert "✗ 4 of 4 client × platforms failed their last refresh" in out
    assert "✓ all" not in out


def add_history(db, days_ago: float, status="succeeded") -> str:
    run_id = str(uuid.uuid4())
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO refresh_runs (run_id, trigger, host, status, started_at, finished_at)"
            " VALUES (%s, 'cron', 'old', %s, now() - make_interval(days => %s),"
            " CASE WHEN %s = 'running' THEN NULL ELSE now() - make_interval(days => %s) END)",
            (run_id, status, days_ago, status, days_ago),
        )
        cur.execute(
            "INSERT INTO refresh_jobs (run_id, client_id, platform, status, finished_at)"
            " SELECT %s, gen_random_uuid(), 'shopify', 'succeeded', now()"
            " FROM generate_series(1, 7)",
            (run_id,),
        )
    return run_id


def counts(db) -> tuple[int, int, int]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT (SELECT count(*) FROM refresh_runs), (SELECT count(*) FROM refresh_jobs),"
            " (SELECT count(*) FROM refresh_state)"
        )
        return cur.fetchone()


def test_prune_keeps_recent_and_running_runs_and_the_state(
    run_env, db, backend, two_clients, capsys
):
    assert main(["run"], {**run_env, "REFRESH_HISTORY_DAYS": "0"}) == 0  # 4 jobs, 2 keys x 2
    running = add_history(db, 40, status="running")
    for days in (40, 35, 31, 20, 1):
        add_history(db, days)
    runs, jobs, keys = counts(db)
    assert (runs, jobs, keys) == (7, 4 + 6 * 7, 4)

    assert main(["db", "prune", "--days", "30"], run_env) == 0
    assert "Pruned 3 runs and 21 job rows" in capsys.readouterr().out
    assert counts(db) == (4, 4 + 3 * 7, 4)  # the running run, 20 and 1 days old, and ours
    with db.cursor() as cur:
        cur.execute("SELECT status FROM refresh_runs WHERE run_id = %s", (running,))
        assert cur.fetchone() == ("running",)

    # After every run, with the default of 30 days kept; REFRESH_HISTORY_DAYS=0 keeps all.
    add_history(db, 45)
    assert main(["run"], {**run_env, "REFRESH_HISTORY_DAYS": "0"}) == 0
    assert counts(db)[0] == 6
    assert main(["run"], {**run_env, "REFRESH_HISTORY_DAYS": "10"}) == 0
    assert counts(db)[0] == 5  # the 20-day-old run went too
    assert any(line.startswith("Pruned 2 runs") for line in log_lines(run_env))
    assert counts(db)[2] == 4


def test_an_upgrade_from_history_only_fills_the_state(run_env, db, empty_db_url, backend):
    """An install of the previous release: history, no refresh_state. db init fills it."""
    env = {**run_env, "DATABASE_URL": empty_db_url}
    assert main(["db", "init", "--with-api-schema"], env) == 0
    conn = runner_db.connect(empty_db_url)
    connect_clients(conn, {ALICE: ("shopify",), BOB: ("shopify",)})
    backend.script(BOB, "shopify", Answer(500, {"error": "boom"}))
    for _ in range(2):
        assert main(["run"], {**env, "REFRESH_MAX_ATTEMPTS": "1"}) == 1
    before = state(conn)
    with conn.cursor() as cur:
        cur.execute("DROP TABLE refresh_state")
    assert main(["run"], env) == 4  # tables of an older release: db init first
    assert main(["db", "init"], env) == 0
    after = state(conn)
    conn.close()
    assert after == before
    assert after[(BOB, "shopify")][:2] == ("failed", 2)
    assert after[(ALICE, "shopify")][:2] == ("succeeded", 0)


def test_the_adaptive_limit_starts_where_the_last_run_settled(run_env, db, backend, two_clients):
    env = {**run_env, "REFRESH_ADAPTIVE": "true", "REFRESH_CONCURRENCY": "16"}
    assert main(["run"], env) == 0
    with db.cursor() as cur:
        cur.execute("SELECT concurrency_limit FROM refresh_runs")
        (learned,) = cur.fetchone()
        assert learned is not None
        cur.execute("UPDATE refresh_runs SET concurrency_limit = 11")
    assert main(["run", "-v"], env) == 0
    assert any("limit ended at" in line for line in log_lines(env))
    with db.cursor() as cur:
        cur.execute("SELECT concurrency_limit FROM refresh_runs ORDER BY started_at DESC LIMIT 1")
        (second,) = cur.fetchone()
    assert second >= 11  # began at the learned 11, not at 4 (4 jobs only: nothing to lower it)
    assert main(["run"], {**env, "REFRESH_CONCURRENCY": "2"}) == 0
    with db.cursor() as cur:
        cur.execute("SELECT concurrency_limit FROM refresh_runs ORDER BY started_at DESC LIMIT 1")
        assert cur.fetchone()[0] <= 2  # the ceiling still rules


def test_a_batch_written_twice_counts_a_failure_once_and_an_abandoned_run_writes_no_state(
    run_env, db, db_url, two_clients
):
    """After a lost acknowledgement the writer repeats its statement; a run marked abandoned
    while cut off from the database flushes late. Neither may bend the keys' state."""
    from analytics_refresh.clock import Deadline
    from analytics_refresh.outcome import JobRecord
    from analytics_refresh.pending import PendingRecords
    from analytics_refresh.plan import Job
    from analytics_refresh.writes import RunWriter

    job = Job(BOB, "shopify")
    history = RunWriter(db_url, trigger="cron", deadline=Deadline(60))
    history.insert_run("running")
    history.insert_planned([job])
    failed = JobRecord(job, "failed", 1, 500, 10, error="HTTP 500")
    history.write_jobs([failed])
    history.write_jobs([failed])  # the same statement again
    assert state(db)[(BOB, "shopify")][:2] == ("failed", 1)

    late = RunWriter(db_url, trigger="cron", deadline=Deadline(60))
    late.insert_run("running")
    late.insert_planned([job])
    with db.cursor() as cur:
        cur.execute(
            "UPDATE refresh_runs SET status = 'abandoned' WHERE run_id = %s", (late.run_id,)
        )
    pending = PendingRecords()
    pending.queue(JobRecord(job, "succeeded", 1, 200, 10, 1, 5))
    assert pending.write(late, final=True) == 0
    with db.cursor() as cur:
        cur.execute("SELECT status FROM refresh_jobs WHERE run_id = %s", (late.run_id,))
        assert cur.fetchone() == ("succeeded",)  # its own record is kept
    assert state(db)[(BOB, "shopify")][:2] == ("failed", 1)  # the state is not its to move
    history.close()
    late.close()
