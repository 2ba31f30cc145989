"""Heartbeat pings and the metrics file around a real run; the alert rules and the dashboard."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import psycopg2
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from analytics_refresh.cli import main
from analytics_refresh.lock import lock_key
from tests.backend import Answer
from tests.conftest import ROOT, connect_clients, log_lines
from tests.ops_helpers import PingRecorder, SilentMonitor

ALICE = "3b619a14-3cd8-49fa-9c24-d8df5e54c452"
BOB = "5f0c3a52-7d5e-4c43-9a4e-0f2d6b1c9e11"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "analytics-refresh-dashboard.json"
METRIC_NAME = re.compile(r"\banalytics_refresh_[a-z_]+")


@pytest.fixture
def clients(db):
    connect_clients(db, {ALICE: ("shopify", "amazon"), BOB: ("shopify",)})


@pytest.fixture
def monitor():
    recorder = PingRecorder()
    yield recorder
    recorder.stop()


def run_ids(db) -> list[str]:
    with db.cursor() as cur:
        cur.execute("SELECT run_id::text FROM refresh_runs ORDER BY started_at")
        return [r[0] for r in cur.fetchall()]


def metrics(path: Path) -> dict:
    """{(name, frozenset(labels)): value} of a metrics file, read by prometheus' own parser."""
    values = {}
    for family in text_string_to_metric_families(path.read_text(encoding="utf-8")):
        for sample in family.samples:
            values[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return values


def value(values: dict, name: str, **labels) -> float:
    labels.setdefault("shard", "none")
    return values[(f"analytics_refresh_{name}", frozenset(labels.items()))]


# -- heartbeat --------------------------------------------------------------------------------
def test_clean_run_pings_start_then_0_with_its_log(run_env, clients, monitor, db, secret):
    assert main(["run"], {**run_env, "HEALTHCHECK_URL": monitor.url}) == 0
    assert monitor.paths() == ["/start", "/0"]
    (run_id,) = run_ids(db)
    assert [p.query.get("rid") for p in monitor.pings] == [run_id, run_id]
    body = monitor.pings[1].body
    assert "Starting analytics refresh cron job" in body
    assert "Results: 5 successful, 0 failed out of 5 total jobs" in body
    assert re.match(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} - ", body)
    assert secret not in body
    assert "Bearer" not in body


def test_run_with_failed_jobs_pings_1(run_env, clients, backend, monitor):
    backend.script(BOB, "shopify", Answer(404, {"error": "platform not connected"}))
    assert main(["run"], {**run_env, "HEALTHCHECK_URL": monitor.url}) == 1
    assert monitor.paths() == ["/start", "/1"]
    assert "❌ FAILED" in monitor.pings[1].body


def test_run_that_finds_the_lock_taken_pings_only_5(run_env, clients, monitor, db_url):
    holder = psycopg2.connect(db_url)
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (lock_key(None),))
        assert main(["run"], {**run_env, "HEALTHCHECK_URL": monitor.url}) == 5
    finally:
        holder.close()
    assert monitor.paths() == ["/5"]
    assert "Another refresh run holds the lock" in monitor.pings[0].body


@pytest.mark.parametrize(
    ("change", "code", "text"),
    [
        ({"DATABASE_URL": "postgresql://ops:pw-hidden@127.0.0.1:1/none"}, 4, "cannot connect"),
        ({"API_SECRET_KEY": ""}, 3, "API_SECRET_KEY is not set"),
    ],
)
def test_run_that_cannot_start_pings_its_exit_code(run_env, monitor, change, code, text):
    assert main(["run"], {**run_env, "HEALTHCHECK_URL": monitor.url, **change}) == code
    assert monitor.paths() == [f"/{code}"]
    assert "rid" not in monitor.pings[0].query
    assert text in monitor.pings[0].body
    assert "pw-hidden" not in monitor.pings[0].body


def test_hung_monitor_costs_seconds_and_changes_nothing(run_env, clients, db):
    silent = SilentMonitor()
    try:
        started = time.monotonic()
        assert main(["run"], {**run_env, "HEALTHCHECK_URL": silent.url}) == 0
        elapsed = time.monotonic() - started
    finally:
        silent.stop()
    assert elapsed < 7
    with db.cursor() as cur:
        cur.execute("SELECT status, exit_code, jobs_succeeded FROM refresh_runs")
        assert cur.fetchall() == [("succeeded", 0, 5)]
    warnings = [x for x in log_lines(run_env) if "Heartbeat ping" in x]
    assert len(warnings) == 2
    assert "/start" in warnings[0]
    assert "no answer within 2.5s" in warnings[0]
    assert "ping/silent" not in "\n".join(warnings)  # the check's key stays out of the log


def test_dry_run_pings_nothing(run_env, clients, monitor):
    assert main(["run", "--dry-run"], {**run_env, "HEALTHCHECK_URL": monitor.url}) == 0
    assert monitor.pings == []


# -- metrics ----------------------------------------------------------------------------------
def test_metrics_file_holds_the_values_of_the_run(run_env, clients, backend, db, tmp_path):
    path = tmp_path / "textfile" / "analytics_refresh.prom"
    backend.script(BOB, "all", Answer(503, headers={"Retry-After": "0"}), Answer(200))
    backend.script(BOB, "shopify", Answer(500, {"error": "boom"}))
    env = {**run_env, "METRICS_FILE": str(path), "REFRESH_MAX_ATTEMPTS": "2"}
    before = time.time()
    assert main(["run"], env) == 1
    after = time.time()

    values = metrics(path)
    with db.cursor() as cur:
        cur.execute(
            "SELECT client_id::text, platform, extract(epoch FROM finished_at)::float8 "
            "FROM refresh_jobs WHERE status = 'succeeded'"
        )
        succeeded = {(c, p): f for c, p, f in cur.fetchall()}
    start = value(values, "last_run_start_timestamp_seconds")
    end = value(values, "last_run_end_timestamp_seconds")
    assert before <= start <= end <= after
    assert value(values, "last_run_duration_seconds") == pytest.approx(end - start)
    assert value(values, "last_run_exit_code") == 1
    assert value(values, "last_run_retries") == 2  # one for each job that was retried
    jobs = {
        s: value(values, "last_run_jobs", status=s)
        for s in ("succeeded", "failed", "not_attempted", "skipped")
    }
    assert jobs == {"succeeded": 4, "failed": 1, "not_attempted": 0, "skipped": 0}
    assert value(values, "last_success_timestamp_seconds") == 0  # no run has succeeded yet
    # Every key is counted per platform; with 5 keys and 20 named, each is named too.
    counts = {
        p: (
            value(values, "keys", platform=p),
            value(values, "keys_never_refreshed", platform=p),
            value(values, "keys_failing", platform=p),
        )
        for p in ("shopify", "amazon", "all")
    }
    assert counts == {"shopify": (2, 1, 1), "amazon": (1, 0, 0), "all": (2, 0, 0)}
    assert value(values, "key_age_seconds_count", platform="shopify") == 2
    assert value(values, "oldest_key_current_timestamp_seconds", platform="shopify") == 0
    assert value(values, "promise_end_timestamp_seconds", platform="shopify") == 0
    assert value(values, "newest_key_current_timestamp_seconds", platform="amazon") == (
        pytest.approx(succeeded[(ALICE, "amazon")])
    )
    per_client = {
        (dict(labels)["client_id"], dict(labels)["platform"]): v
        for (name, labels), v in values.items()
        if name == "analytics_refresh_worst_key_last_current_timestamp_seconds"
    }
    assert set(per_client) == set(succeeded) | {(BOB, "shopify")}
    assert per_client[(BOB, "shopify")] == 0  # never refreshed
    for key, finished in succeeded.items():
        assert per_client[key] == pytest.approx(finished)
    assert not list(path.parent.glob("*.prom.*"))  # the temporary file was renamed


def test_metrics_keep_the_last_success_across_failing_runs(run_env, clients, backend, tmp_path):
    path = tmp_path / "refresh.prom"
    env = {**run_env, "METRICS_FILE": str(path)}
    assert main(["run"], env) == 0
    first = metrics(path)
    last_success = value(first, "last_success_timestamp_seconds")
    assert last_success == pytest.approx(value(first, "last_run_end_timestamp_seconds"), abs=1)

    backend.script(ALICE, "amazon", Answer(404, {"error": "gone"}))
    assert main(["run"], env) == 1
    second = metrics(path)
    assert value(second, "last_run_exit_code") == 1
    assert value(second, "last_success_timestamp_seconds") == last_success
    alice_amazon = {"client_id": ALICE, "platform": "amazon"}
    alice_all = {"client_id": ALICE, "platform": "all"}
    worst = "worst_key_last_current_timestamp_seconds"
    assert value(second, worst, **alice_amazon) == value(first, worst, **alice_amazon)
    assert value(second, worst, **alice_all) > value(first, worst, **alice_all)

    # The database goes away: the run exits 4 and the file keeps what it knew.
    down = {**env, "DATABASE_URL": "postgresql://ops@127.0.0.1:1/none"}
    assert main(["run"], down) == 4
    third = metrics(path)
    assert value(third, "last_run_exit_code") == 4
    assert value(third, "last_success_timestamp_seconds") == last_success
    assert value(third, worst, **alice_amazon) == value(second, worst, **alice_amazon)
    for name, labels in second:  # every count and age of the record, as it was
        if name.startswith("analytics_refresh_key") or "worst" in name:
            assert third[(name, labels)] == second[(name, labels)], name


def test_unwritable_metrics_file_is_a_warning(run_env, clients, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["run"], {**run_env, "METRICS_FILE": str(blocker / "m.prom")}) == 0
    assert any("Cannot write the metrics file" in x for x in log_lines(run_env))


# -- alert rules and dashboard ----------------------------------------------------------------
def test_alert_rules_are_well_formed():
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    (group,) = rules["groups"]
    assert group["name"]
    names = [rule["alert"] for rule in group["rules"]]
    assert {
        "AnalyticsRefreshNoRecentSuccess",
        "AnalyticsRefreshRunFailed",
        "AnalyticsRefreshClientCacheStale",
    } <= set(names)
    for rule in group["rules"]:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}
        assert re.fullmatch(r"\d+[smh]", rule["for"])
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert {"summary", "description"} <= set(rule["annotations"])
        assert rule["expr"].count("(") == rule["expr"].count(")")


def test_dashboard_is_well_formed():
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] == "analytics-refresh"
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    titles = " ".join(p["title"] for p in panels)
    for needed in ("Runs over time", "Failures", "staleness"):
        assert needed in titles
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert all(t["expr"] for t in panel["targets"])
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])


def test_alerts_and_dashboard_use_only_metrics_the_run_writes(run_env, clients, tmp_path):
    path = tmp_path / "refresh.prom"
    assert main(["run"], {**run_env, "METRICS_FILE": str(path)}) == 0
    written = {name for name, _ in metrics(path)}
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"][0]["rules"]
    exprs = [rule["expr"] for rule in rules]
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
    assert used
    assert used <= written, used - written


# -- the Pushgateway ----------------------------------------------------------------------------
def test_metrics_are_pushed_grouped_by_job_and_shard(run_env, clients, monitor, db):
    gateway = monitor.url.removesuffix("/ping/check-key")
    assert main(["run"], {**run_env, "METRICS_PUSHGATEWAY_URL": gateway}) == 0
    assert main(["run", "--shard", "1/2"], {**run_env, "METRICS_PUSHGATEWAY_URL": gateway}) == 0
    unsharded, sharded = monitor.pings
    assert unsharded.path == "/metrics/job/analytics_refresh/shard/none"
    assert sharded.path == "/metrics/job/analytics_refresh/shard@base64/MS8y"  # "1/2"
    values = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(unsharded.body)
        for s in family.samples
    }
    assert value(values, "last_run_exit_code") == 0
    assert value(values, "last_run_jobs", status="succeeded") == 5
    assert 'shard="1/2"' in sharded.body


def test_a_gateway_that_is_down_changes_nothing(run_env, clients, db):
    import socket

    with socket.socket() as sock:  # a port that refuses connections
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    started = time.monotonic()
    assert main(["run"], {**run_env, "METRICS_PUSHGATEWAY_URL": closed}) == 0
    assert time.monotonic() - started < 10
    assert any(
        "Cannot push metrics to the Pushgateway on 127.0.0.1" in x for x in log_lines(run_env)
    )


def test_each_shard_writes_a_file_of_its_own_with_its_label(run_env, clients, tmp_path, db):
    env = {**run_env, "METRICS_FILE": str(tmp_path / "prom" / "analytics_refresh.prom")}
    # Every job succeeds against the scripted API, in either shard: each run exits 0.
    assert main(["run", "--shard", "0/2"], env) == 0
    assert main(["run", "--shard", "1/2"], env) == 0
    with db.cursor() as cur:
        cur.execute("SELECT sum(jobs_total), sum(jobs_succeeded) FROM refresh_runs")
        assert cur.fetchone() == (5, 5)  # the two shards between them did every job once
    files = sorted(p.name for p in (tmp_path / "prom").iterdir())
    assert files == ["analytics_refresh.shard-0-of-2.prom", "analytics_refresh.shard-1-of-2.prom"]
    for index, name in enumerate(files):
        text = (tmp_path / "prom" / name).read_text()
        assert f'shard="{index}/2"' in text
        assert 'shard="none"' not in text
