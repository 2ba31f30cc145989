"""Freshness the runner can prove: copies kept before they expire, the window's day in the
key, quiet runs that write nothing per skipped key, and the promise of each mode."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import psycopg2.extensions
import pytest

from analytics_refresh import promise
from analytics_refresh.answers import expiry
from analytics_refresh.cli import main
from analytics_refresh.settings import Settings
from dashboard_api import create_app
from dashboard_api.demo import add_orders, load_demo
from dashboard_api.server import start_background
from tests.backend import Answer
from tests.conftest import connect_clients, log_lines
from tests.runs import ALICE

ROOT = Path(__file__).resolve().parent.parent
CHANGE_FILE = str(ROOT / "dashboard_api" / "change_keys.sql")
UTC = dt.timezone.utc
RECEIVED = dt.datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


# -- reading an answer's expiry -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("declared", "cache_control", "expires", "seen"),
    [
        ("2026-12-02T15:00:00Z", "max-age=60", None, dt.datetime(2026, 12, 2, 15, tzinfo=UTC)),
        ("2026-12-02T16:00:00+01:00", None, None, dt.datetime(2026, 12, 2, 15, tzinfo=UTC)),
        ("2026-12-02T15:00:00", None, None, dt.datetime(2026, 12, 2, 15, tzinfo=UTC)),
        (None, "private, max-age=90", None, RECEIVED + dt.timedelta(seconds=90)),
        ("soon", 'public, max-age="30"', None, RECEIVED + dt.timedelta(seconds=30)),
        (None, "no-cache", "Wed, 02 Dec 2026 13:00:00 GMT", RECEIVED + dt.timedelta(hours=1)),
        (None, "s-maxage=5", None, None),
        (None, None, "not a date", None),
        (None, None, None, None),
        (7, None, None, None),
    ],
)  # fmt: skip
def test_an_answer_says_until_when_its_copy_holds(declared, cache_control, expires, seen):
    assert expiry(declared, cache_control, expires, RECEIVED) == seen


def test_an_absurd_expiry_is_kept_within_ten_years():
    far = expiry("9999-01-01T00:00:00Z", None, None, RECEIVED)
    assert far == RECEIVED + dt.timedelta(days=3650)


# -- the promise of each mode -------------------------------------------------------------------
def test_each_mode_promises_its_bounds():
    classic = promise.promise_for(Settings())
    assert classic.mode == "classic"
    assert classic.max_age_seconds == 2.5 * 3600  # the interval, 2 h, and a run, 30 min
    aware = promise.promise_for(Settings(change_sql="SELECT 1", interval_minutes=10))
    assert aware.staleness_seconds == 12.5 * 60
    assert aware.max_age_seconds == (1440 + 12.5) * 60
    assert aware.keeps_copies
    assert "before it expires" in aware.describe()
    listener = promise.promise_for(Settings(interval_minutes=10, timeout=30), "listener")
    assert listener.staleness_seconds == 90  # the max delay, 60 s, and a refresh, 30 s
    with pytest.raises(ValueError, match="mode must be one of"):
        promise.promise_for(Settings(), "sometimes")


def test_the_judgement_of_a_key_against_its_promise():
    aware = promise.promise_for(Settings(change_sql="SELECT 1", interval_minutes=10))
    now = RECEIVED
    ok = {"last_success_at": now - dt.timedelta(hours=3), "current_at": now}
    assert promise.breach(aware, now, **ok) is None
    assert promise.breach(aware, now, last_success_at=None) == "never refreshed"
    expired = {**ok, "expires_at": now - dt.timedelta(seconds=1)}
    assert promise.breach(aware, now, **expired) == "its copy expired"
    waiting = {**ok, "change_seen_at": now - dt.timedelta(minutes=13)}
    assert promise.breach(aware, now, **waiting) == "a change waits for 13 min"
    old = {"last_success_at": now - dt.timedelta(days=2)}
    assert promise.breach(aware, now, **old) == "48 h old"
    # Classic promises nothing of copies: the next run, every interval, is its keeper.
    assert promise.breach(promise.promise_for(Settings()), now, **expired) is None


def test_the_lead_is_the_interval_and_the_longer_of_a_run_and_the_recent_runs():
    settings = Settings(interval_minutes=10)
    assert promise.refresh_lead(settings) == 600 + 150
    assert promise.refresh_lead(settings, 400.0) == 1000


# -- against the reference API ------------------------------------------------------------------
@pytest.fixture
def api_factory(db_url, secret):
    """Start the reference API with given settings: ``api_factory(CACHE_TTL=...)``."""
    started = []

    def start(**config):
        app = create_app(
            {"DATABASE_URL": db_url, "API_SECRET_KEY": secret, "TESTING": True, **config}
        )
        server = start_background(app, host="127.0.0.1", port=0)
        started.append((server, app))
        return server

    yield start
    for server, app in started:
        server.stop()
        app.extensions["dashboard_api"].close()


@pytest.fixture
def shops(db) -> list[str]:
    return load_demo(db, clients=4, skus=5, orders_per_day=2)


def aware_env(run_env, api, **more) -> dict:
    return {
        **run_env,
        "ANALYTICS_API_URL": api.url,
        "REFRESH_CHANGE_SQL_FILE": CHANGE_FILE,
        "REFRESH_INTERVAL_MINUTES": "1",
        **more,
    }


def latest_run(db) -> dict:
    with db.cursor() as cur:
        cur.execute(
            "SELECT run_id::text, jobs_total, jobs_succeeded, jobs_unchanged, jobs_changed,"
            " jobs_due, jobs_expiring, checked_changes FROM refresh_runs"
            " ORDER BY started_at DESC LIMIT 1"
        )
        names = [c.name for c in cur.description]
        row = dict(zip(names, cur.fetchone(), strict=True))
        cur.execute("SELECT count(*) FROM refresh_jobs WHERE run_id = %s", (row["run_id"],))
        row["rows"] = cur.fetchone()[0]
    return row


def sent(backend_or_log, since: int) -> int:
    return len(backend_or_log) - since


def state_rows(db) -> list[tuple]:
    with db.cursor() as cur:
        cur.execute("SELECT * FROM refresh_state ORDER BY client_id, platform")
        return cur.fetchall()


def test_the_copy_expiry_is_kept_and_a_copy_is_refreshed_before_it(run_env, api_factory, shops, db):
    api = api_factory(CACHE_TTL="80")
    env = aware_env(run_env, api)
    assert main(["run"], env) == 0
    with db.cursor() as cur:
        cur.execute(
            "SELECT s.expires_at, j.expires_at FROM refresh_state s JOIN refresh_jobs j"
            " ON j.run_id = s.last_success_run_id AND (j.client_id, j.platform) ="
            " (s.client_id, s.platform)"
        )
        stored = cur.fetchall()
        cur.execute(
            f'SELECT expires_at FROM "{shops[0]}_cached_responses"'  # noqa: S608
            " WHERE platform = 'all'"
        )
        [(cached,)] = cur.fetchall()
    assert len(stored) == 7
    assert all(state == job is not None for state, job in stored)
    assert cached in {state for state, _ in stored}  # the answer's own expiry

    # 80 s of life against a lead of 75 s (a 1-minute interval and a quarter of it).
    assert main(["run"], env) == 0
    assert latest_run(db)["jobs_unchanged"] == 7
    time.sleep(6)
    assert main(["run"], env) == 0
    run = latest_run(db)
    assert (run["jobs_expiring"], run["jobs_succeeded"], run["rows"]) == (7, 7, 7)


def test_a_quiet_run_writes_only_its_run_row_and_logs_counts(run_env, api_factory, shops, db):
    env = aware_env(run_env, api_factory(CACHE_TTL="86400"))
    assert main(["run"], env) == 0
    before, lines = state_rows(db), len(log_lines(env))

    assert main(["run"], env) == 0

    run = latest_run(db)
    assert run["rows"] == 0
    assert (run["jobs_total"], run["jobs_unchanged"], run["checked_changes"]) == (7, 7, True)
    assert state_rows(db) == before  # no write to any key's state
    new = log_lines(env)[lines:]
    assert len(new) <= 8
    assert any(line.startswith("Change detection: 0 changed") for line in new)
    assert "(7 skipped as unchanged)" in next(x for x in new if x.startswith("Results:"))


def test_a_quiet_key_stays_current_from_the_run_that_checked_it(
    run_env, api_factory, shops, db, capsys
):
    env = aware_env(run_env, api_factory(CACHE_TTL="86400"))
    assert main(["run"], env) == 0
    with db.cursor() as cur:  # refreshed 5 hours ago, unchanged since
        cur.execute("UPDATE refresh_state SET last_success_at = now() - interval '5 hours'")
    assert main(["run"], env) == 0
    capsys.readouterr()
    assert main(["status", "--json", "--keys"], env) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["stale_count"] == 0
    assert all(c["age_hours"] < 0.1 for c in report["caches"])

    # One client's data changes and its refresh fails: the checking run confirms nothing.
    add_orders(db, shops[0], 1, platform="shopify")
    assert main(["run", "--client", shops[1]], env) == 0  # a partial run checks nothing
    env_down = {**env, "ANALYTICS_API_URL": "http://127.0.0.1:9", "REFRESH_MAX_ATTEMPTS": "1"}
    assert main(["run"], env_down) == 1
    capsys.readouterr()
    main(["status", "--json", "--keys", "--max-age", "2"], env)
    caches = {(c["client_id"], c["platform"]): c for c in json.loads(capsys.readouterr().out)[
        "caches"]}  # fmt: skip
    assert caches[(shops[0], "shopify")]["stale"]  # 5 hours since its last refresh
    assert caches[(shops[0], "shopify")]["change_pending"]
    assert caches[(shops[0], "all")]["stale"]
    assert not caches[(shops[0], "amazon")]["stale"]  # checked unchanged by the failed run


def test_an_expired_copy_is_not_current_whatever_its_age(run_env, api_factory, shops, capsys):
    env = aware_env(run_env, api_factory(CACHE_TTL="2"))
    assert main(["run"], env) == 0
    time.sleep(2.5)
    capsys.readouterr()
    assert main(["status", "--json", "--keys"], env) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["stale_count"] == 7
    assert all(c["age_hours"] < 0.1 for c in report["caches"])  # young, and expired
    assert all(c["expired"] and c["expires_at"] for c in report["caches"])


def test_a_detected_change_is_never_skipped_as_fresh(run_env, api_factory, shops, db):
    env = aware_env(run_env, api_factory(CACHE_TTL="86400"), REFRESH_SKIP_FRESH_MINUTES="60")
    assert main(["run"], env) == 0
    add_orders(db, shops[0], 1, platform="amazon")
    assert main(["run"], env) == 0
    run = latest_run(db)
    assert (run["jobs_changed"], run["jobs_succeeded"], run["jobs_unchanged"]) == (2, 2, 5)
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM refresh_jobs WHERE status = 'skipped'")
        assert cur.fetchone() == (0,)
        cur.execute(
            "SELECT platform, change_at IS NOT NULL FROM refresh_jobs WHERE run_id = %s"
            " ORDER BY platform",
            (run["run_id"],),
        )
        assert cur.fetchall() == [("all", True), ("amazon", True)]


def test_a_backend_that_declares_nothing_keeps_the_old_rules(change_backend_env, db):
    assert main(["run"], change_backend_env) == 0
    assert main(["run"], change_backend_env) == 0
    run = latest_run(db)
    assert (run["jobs_unchanged"], run["jobs_expiring"]) == (3, 0)
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM refresh_state WHERE expires_at IS NOT NULL")
        assert cur.fetchone() == (0,)


def test_caching_headers_alone_set_the_expiry(change_backend_env, backend, db):
    backend.default = Answer(headers={"Cache-Control": "max-age=30"})
    assert main(["run"], change_backend_env) == 0
    assert main(["run"], change_backend_env) == 0  # 30 s of life, 75 s of lead
    assert latest_run(db)["jobs_expiring"] == 3


@pytest.fixture
def change_backend_env(run_env, db):
    """Change-aware runs against the scripted backend, over the reference change query."""
    connect_clients(db, {ALICE: ("shopify", "amazon")})
    return {**run_env, "REFRESH_CHANGE_SQL_FILE": CHANGE_FILE, "REFRESH_INTERVAL_MINUTES": "1"}


# -- across midnight UTC ------------------------------------------------------------------------
@pytest.fixture
def moved_clock(db, db_url):
    """The database's clock moved by an offset the test sets: ``moved_clock(moment)``.

    A now() ahead of pg_catalog's in the search path of the runner's sessions (and in the
    runner tables' defaults) reads pg_catalog.now() plus the offset.
    """
    with db.cursor() as cur:
        cur.execute("CREATE SCHEMA moved_clock")
        cur.execute("CREATE TABLE moved_clock.offset_by (amount interval NOT NULL)")
        cur.execute("INSERT INTO moved_clock.offset_by VALUES ('0')")
        cur.execute(
            "CREATE FUNCTION moved_clock.now() RETURNS timestamptz LANGUAGE sql STABLE AS"
            " $$ SELECT pg_catalog.now() + (SELECT amount FROM moved_clock.offset_by) $$"
        )
        cur.execute(
            "ALTER TABLE refresh_runs ALTER COLUMN started_at SET DEFAULT moved_clock.now()"
        )
    url = psycopg2.extensions.make_dsn(
        db_url, options="-c search_path=moved_clock,pg_catalog,public"
    )

    def move_to(moment: dt.datetime) -> None:
        with db.cursor() as cur:
            cur.execute(
                "UPDATE moved_clock.offset_by SET amount = %s::timestamptz - pg_catalog.now()",
                (moment,),
            )

    move_to.url = url
    return move_to


def test_the_first_run_past_midnight_refreshes_every_key_and_none_before(
    run_env, api_factory, shops, db, moved_clock
):
    api = api_factory(CACHE_TTL=str(7 * 86400))
    env = aware_env(run_env, api, DATABASE_URL=moved_clock.url)
    midnight = dt.datetime.combine(
        dt.datetime.now(UTC).date() + dt.timedelta(days=1), dt.time(), UTC
    )
    moved_clock(midnight - dt.timedelta(seconds=30))
    assert main(["run"], env) == 0
    assert latest_run(db)["jobs_succeeded"] == 7
    moved_clock(midnight - dt.timedelta(seconds=5))
    assert main(["run"], env) == 0
    assert latest_run(db)["jobs_unchanged"] == 7  # nothing refreshed for nothing

    moved_clock(midnight + dt.timedelta(seconds=5))
    assert main(["run"], env) == 0
    run = latest_run(db)
    assert (run["jobs_changed"], run["jobs_succeeded"]) == (7, 7)
    moved_clock(midnight + dt.timedelta(seconds=40))
    assert main(["run"], env) == 0
    assert latest_run(db)["jobs_unchanged"] == 7


def test_the_metrics_tell_requests_from_skips(run_env, api_factory, shops, db, tmp_path):
    env = aware_env(run_env, api_factory(CACHE_TTL="5400"), METRICS_FILE=str(tmp_path / "m.prom"))
    assert main(["run"], env) == 0
    first = metric(tmp_path / "m.prom", "last_request_success_timestamp_seconds")
    assert abs(metric(tmp_path / "m.prom", "copy_lifetime_seconds") - 5400) < 5
    time.sleep(1.1)
    assert main(["run"], env) == 0  # every key skipped: no request succeeded since
    assert metric(tmp_path / "m.prom", "last_request_success_timestamp_seconds") == first
    assert metric(tmp_path / "m.prom", "last_run_change_jobs", 'kind="unchanged"') == 7


def metric(path: Path, name: str, label: str = "") -> float:
    for line in path.read_text().splitlines():
        if line.startswith(f"analytics_refresh_{name}{{") and label in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the metrics file")


def test_status_help_states_the_promise_of_each_mode(capsys):
    assert main(["status", "--help"], {}) == 0
    text = capsys.readouterr().out
    for words in ("classic", "change-aware", "listener", "before its declared expiry"):
        assert words in text
