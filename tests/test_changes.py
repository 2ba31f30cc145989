"""Change-aware refresh: skip what did not change, refresh the rest when due."""

from __future__ import annotations

import json
import statistics
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from analytics_refresh.changes import decide, job_key, latest_due, phase_seconds
from analytics_refresh.cli import main
from analytics_refresh.plan import Job
from analytics_refresh.records import KeyState
from tests.conftest import connect_clients, log_lines
from tests.runs import ALICE, BOB, jobs

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
DAY = 1440.0
KEY_TABLE = "CREATE TABLE change_keys (client_id uuid, platform text, change_key text)"
CHANGE_SQL = "SELECT client_id::text, platform, change_key FROM change_keys"


def state(job: Job, keys: dict | None, hours_ago: float, connected=("shopify", "amazon")):
    """The state of a key last refreshed ``hours_ago`` when the query returned ``keys``."""
    at = NOW - timedelta(hours=hours_ago)
    stored = None if keys is None else job_key(job, keys, connected)
    return KeyState(job.client_id, job.platform, last_success_at=at, change_key=stored)


# -- the decision -----------------------------------------------------------------------------
def test_unchanged_keys_are_skipped_and_changed_ones_refreshed_with_their_all():
    shop, amz, both = Job(ALICE, "shopify"), Job(ALICE, "amazon"), Job(ALICE, "all")
    bob = Job(BOB, "shopify")
    before = {(ALICE, "shopify"): "s1", (ALICE, "amazon"): "a1", (BOB, "shopify"): "b1"}
    keys = {**before, (ALICE, "shopify"): "s2"}  # ALICE's shopify data changed since
    states = {
        (ALICE, "shopify"): state(shop, before, 0.01),
        (ALICE, "amazon"): state(amz, before, 0.01),
        (ALICE, "all"): state(both, before, 0.01),
        (BOB, "shopify"): state(bob, before, 0.01, ("shopify",)),
    }
    connected = {ALICE: ("shopify", "amazon"), BOB: ("shopify",)}
    decision = decide(
        [shop, amz, both, bob], states, keys, connected=connected, now=NOW, max_age_minutes=DAY
    )
    assert decision.run == [shop, both]  # the changed platform, and the dashboard combining it
    assert decision.unchanged == [amz, bob]
    assert decision.kinds == {shop: "changed", both: "changed", amz: "unchanged", bob: "unchanged"}
    # Stored with the all job's success: both platforms' keys, the new one included.
    assert decision.keys[both] == job_key(both, keys, ("shopify", "amazon"))
    assert decision.keys[both] != states[(ALICE, "all")].change_key


@pytest.mark.parametrize(
    ("key", "stored", "hours_ago", "kind"),
    [
        (None, "k", 1, "changed"),  # the query has no row for it
        ("k", None, 1, "changed"),  # refreshed before change detection was on
        ("k", "k", None, "changed"),  # never refreshed
        ("k", "k", 25, "due"),  # older than the max age, whatever its phase
        ("k", "k", 0.01, "unchanged"),
    ],
)
def test_what_counts_as_changed_and_due(key, stored, hours_ago, kind):
    job = Job(ALICE, "shopify")
    keys = {} if key is None else {(ALICE, "shopify"): key}
    states = {}
    if hours_ago is not None:
        was = None if stored is None else {(ALICE, "shopify"): stored}
        states[(ALICE, "shopify")] = state(job, was, hours_ago, ("shopify",))
    decision = decide(
        [job], states, keys, connected={ALICE: ("shopify",)}, now=NOW, max_age_minutes=DAY
    )
    assert decision.kinds[job] == kind


def test_max_age_is_honoured_at_a_stable_phase_spread_over_the_period():
    period = DAY * 60
    jobs_ = [Job(str(uuid.UUID(int=n)), "shopify") for n in range(2000)]
    phases = [phase_seconds(j, period) for j in jobs_]
    assert phases == [phase_seconds(j, period) for j in jobs_]  # stable across runs
    assert all(0 <= p < period for p in phases)
    # Spread: every tenth of the period holds about a tenth of the keys.
    tenths = [0] * 10
    for p in phases:
        tenths[int(p * 10 // period)] += 1
    assert min(tenths) > 150
    assert max(tenths) < 250
    assert abs(statistics.median(phases) - period / 2) < period * 0.1
    # Each key comes due once per period: its latest due instant is within one period.
    for job in jobs_[:50]:
        due = latest_due(job, NOW, period)
        assert NOW - timedelta(seconds=period) < due <= NOW
        assert latest_due(job, due + timedelta(seconds=1), period) == due


def test_simulated_day_refreshes_every_unchanged_key_once_spread_over_runs():
    """A day of 10-minute runs over 500 unchanged keys: each refreshed about once, spread."""
    keys_ = [Job(str(uuid.UUID(int=n)), "amazon") for n in range(500)]
    keys = {(j.client_id, j.platform): "same" for j in keys_}
    states = {(j.client_id, j.platform): state(j, keys, 0, ("amazon",)) for j in keys_}
    connected = {j.client_id: ("amazon",) for j in keys_}
    refreshed, per_run = {j: 0 for j in keys_}, []
    now = NOW
    for _ in range(144):
        now += timedelta(minutes=10)
        d = decide(keys_, states, keys, connected=connected, now=now, max_age_minutes=DAY)
        per_run.append(len(d.run))
        for job in d.run:
            refreshed[job] += 1
            states[(job.client_id, job.platform)] = KeyState(
                job.client_id, job.platform, last_success_at=now, change_key=d.keys[job]
            )
    assert set(refreshed.values()) == {1}  # once per max age, no more
    assert max(per_run) <= 3 * (500 / 144)  # no burst: at most 3x the mean per run


# -- through the CLI --------------------------------------------------------------------------
@pytest.fixture
def change_env(run_env, db):
    with db.cursor() as cur:
        cur.execute(KEY_TABLE)
    connect_clients(db, {ALICE: ("shopify", "amazon"), BOB: ("shopify",)})
    set_keys(db, {(ALICE, "shopify"): "1", (ALICE, "amazon"): "1", (BOB, "shopify"): "1"})
    return {**run_env, "REFRESH_CHANGE_SQL": CHANGE_SQL}


def set_keys(db, keys: dict) -> None:
    with db.cursor() as cur:
        cur.execute("DELETE FROM change_keys")
        for (client, platform), key in keys.items():
            cur.execute("INSERT INTO change_keys VALUES (%s, %s, %s)", (client, platform, key))


def last_results(env) -> str:
    return [line for line in log_lines(env) if line.startswith("Results:")][-1]


def test_second_run_skips_unchanged_and_a_change_refreshes_its_keys(change_env, db, backend):
    assert main(["run"], change_env) == 0
    assert last_results(change_env).startswith("Results: 5 successful, 0 failed out of 5")
    assert main(["run"], change_env) == 0
    assert "(5 skipped as unchanged)" in last_results(change_env)
    assert jobs(db) == {}  # the latest run wrote no row for a key it skipped
    assert not [line for line in log_lines(change_env) if line.startswith("⏭ SKIPPED - ")]
    assert main(["run", "-v"], change_env) == 0  # a line per skipped key only when asked
    skipped_lines = [line for line in log_lines(change_env) if line.startswith("⏭ SKIPPED - ")]
    assert f"⏭ SKIPPED - {BOB} (shopify): unchanged since" in "\n".join(skipped_lines)

    set_keys(db, {(ALICE, "shopify"): "2", (ALICE, "amazon"): "1", (BOB, "shopify"): "1"})
    before = len(backend.refreshes())
    assert main(["run"], change_env) == 0
    sent = {(r.query["client_id"], r.query["platform"]) for r in backend.refreshes()[before:]}
    assert sent == {(ALICE, "shopify"), (ALICE, "all")}
    assert "(3 skipped as unchanged)" in last_results(change_env)


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("SELECT nonsense FROM nowhere", "it failed"),
        ("SELECT client_id::text, platform FROM change_keys", "expected 3 columns"),
        ("SELECT 'not-a-uuid', 'shopify', 'k'", "not a UUID"),
        (f"SELECT '{ALICE}', 'ebay', 'k'", "not shopify or amazon"),
        ("SELECT pg_sleep(40)::text, 'shopify', 'k'", "ran past its bound"),
        ("INSERT INTO change_keys VALUES (NULL, NULL, NULL) RETURNING *", "not a SELECT"),
        # A COMMIT would end the read-only transaction: the parser refuses a second statement.
        (
            f"{CHANGE_SQL}; COMMIT; INSERT INTO change_keys VALUES (NULL, NULL, NULL); "  # noqa: S608
            f"{CHANGE_SQL}",
            "4 statements",
        ),
        (
            "WITH gone AS (DELETE FROM change_keys RETURNING *) SELECT * FROM gone",
            "holds a DELETE",
        ),
        (f"{CHANGE_SQL} UNION ALL {CHANGE_SQL}", "a second row for"),
    ],
)
def test_a_failing_or_malformed_query_refreshes_everything_with_a_warning(
    change_env, db, backend, query, problem
):
    assert main(["run"], change_env) == 0  # keys stored
    env = {**change_env, "REFRESH_CHANGE_SQL": query}
    if "pg_sleep" in query:
        env["REFRESH_DEADLINE"] = "8"  # the query gets a quarter of what the deadline leaves
    before = len(backend.refreshes())
    main(["run"], env)
    warning = [line for line in log_lines(env) if "REFRESH_CHANGE_SQL could not be used" in line]
    assert warning
    assert problem in warning[-1]
    assert len(backend.refreshes()) - before == 5  # never a silent skip
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM change_keys WHERE client_id IS NULL")
        assert cur.fetchone() == (0,)  # read-only: the query could not write
        cur.execute("SELECT count(*) FROM change_keys")
        assert cur.fetchone() == (3,)  # nor delete


def test_the_query_file_twin_is_read(change_env, tmp_path, backend):
    path = tmp_path / "change.sql"
    path.write_text(f"-- change keys\n{CHANGE_SQL}\n", encoding="utf-8")
    env = {k: v for k, v in change_env.items() if k != "REFRESH_CHANGE_SQL"}
    env["REFRESH_CHANGE_SQL_FILE"] = str(path)
    assert main(["run"], env) == 0
    assert main(["run"], env) == 0
    assert "(5 skipped as unchanged)" in last_results(env)


def test_an_unchanged_key_stays_current_in_status_and_metrics(
    change_env, db, backend, tmp_path, capsys
):
    env = {**change_env, "METRICS_FILE": str(tmp_path / "m.prom")}
    assert main(["run"], env) == 0
    with db.cursor() as cur:  # the last refresh was hours ago; the data has not changed since
        cur.execute("UPDATE refresh_state SET last_success_at = now() - interval '5 hours'")
    assert main(["run"], env) == 0
    assert "(5 skipped as unchanged)" in last_results(env)
    capsys.readouterr()
    assert main(["status", "--json", "--keys"], env) == 0  # confirmed current: not stale
    report = json.loads(capsys.readouterr().out)
    assert report["stale_count"] == 0
    assert all(c["age_hours"] < 0.1 for c in report["caches"])
    text = (tmp_path / "m.prom").read_text()
    assert 'analytics_refresh_last_run_change_jobs{kind="unchanged",shard="none"} 5.0' in text


@pytest.mark.parametrize(
    "key",
    ["line one\nline two", "x" * 5000, "a;b=c|d", "nul \\x00 and tab\t"],
    ids=["newline", "long", "separators", "controls"],
)
def test_any_key_compares_equal_to_itself_next_run(change_env, db, backend, key):
    set_keys(db, {(ALICE, "shopify"): key, (ALICE, "amazon"): key, (BOB, "shopify"): key})
    assert main(["run"], change_env) == 0
    assert main(["run"], change_env) == 0
    assert "(5 skipped as unchanged)" in last_results(change_env)


def test_a_key_is_due_by_when_its_last_refresh_was_planned():
    """A refresh planned before the key's due instant but ending after it does not count
    for that instant: the next run after the instant refreshes the key."""
    job = Job(ALICE, "amazon")
    keys = {(ALICE, "amazon"): "k"}
    stored = job_key(job, keys, ("amazon",))
    due = latest_due(job, NOW, DAY * 60)
    planned, ended = due - timedelta(seconds=30), due + timedelta(seconds=30)
    after = KeyState(
        ALICE, "amazon", last_success_at=ended, change_key=stored, success_planned_at=planned
    )
    decision = decide(
        [job],
        {(ALICE, "amazon"): after},
        keys,
        connected={ALICE: ("amazon",)},
        now=due + timedelta(minutes=5),
        max_age_minutes=DAY,
    )
    assert decision.kinds[job] == "due"
    # Judged by the job's end it would have waited a whole further period.
    ended_only = KeyState(ALICE, "amazon", last_success_at=ended, change_key=stored)
    decision = decide(
        [job],
        {(ALICE, "amazon"): ended_only},
        keys,
        connected={ALICE: ("amazon",)},
        now=due + timedelta(minutes=5),
        max_age_minutes=DAY,
    )
    assert decision.kinds[job] == "unchanged"
