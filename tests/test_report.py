"""The freshness report's figures against an independent judge, in every mode.

Each history is written straight into the test database with known breaches; the
``--json`` figures must equal what tests/report_history.py finds minute by minute.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from analytics_refresh.cli import main
from tests.conftest import connect_clients
from tests.report_history import KeyHistory, Refresh, database_minute, judge, write
from tests.runs import ALICE, BOB, CAROL, DAVE

H = timedelta(hours=1)
M = timedelta(minutes=1)


def report_json(capsys, env, days=3) -> dict:
    capsys.readouterr()
    assert main(["report", "--days", str(days), "--json"], environ=env) == 0
    return json.loads(capsys.readouterr().out)


def expected(keys, figures, *, age, change=None, expiry=False):
    """Return per date [counted, late, breaches] and per key late minutes."""
    start = _parse(figures["window"]["from"])
    now = _parse(figures["window"]["to"])
    days: dict[str, list[int]] = {}
    per_key = {}
    for key in keys:
        judged = judge(key, start=start, now=now, age=age, change=change, expiry=expiry)
        per_key[(key.client_id, key.platform)] = sum(v[1] for v in judged.values())
        for date, (counted, late, breaches) in judged.items():
            total = days.setdefault(date, [0, 0, 0])
            total[0] += counted
            total[1] += late
            total[2] += breaches
    return days, per_key


def _parse(text):
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def check(figures, keys, **bounds):
    days, per_key = expected(keys, figures, **bounds)
    for day in figures["days"]:
        counted, late, breaches = days.get(day["date"], [0, 0, 0])
        assert day["breach_minutes"] == late, day
        assert day["breaches"] == breaches, day
        # The current minute counts once it has begun; the judge counts it once it ended.
        assert abs(day["counted_minutes"] - counted) <= 1, day
        if counted:
            assert day["within_promise"] == pytest.approx(1 - late / counted, abs=1e-4)
    got = {(k["client_id"], k["platform"]): k["late_minutes"] for k in figures["keys"]}
    assert {k: got.get(k, 0) for k in per_key} == per_key
    assert all(v == 0 for k, v in got.items() if k not in per_key)
    return days, per_key


@pytest.fixture
def env(db_url, tmp_path):
    return {"DATABASE_URL": db_url, "LOG_DIR": str(tmp_path / "logs")}


def test_classic_breaches_equal_the_judge(db, env, capsys):
    connect_clients(db, {ALICE: ("shopify",), BOB: ("shopify",), CAROL: ("amazon",)})
    connect_clients(db, {DAVE: ("shopify",)}, status="disconnected")
    now = database_minute(db)
    base = now - timedelta(hours=50)
    every_2h = [base + i * 2 * H for i in range(26)]  # the last 2 minutes... before now
    alice = KeyHistory(ALICE, "shopify", [Refresh(t) for t in every_2h])
    # Bob misses three runs: late from 2 h 30 min after his last success to the next.
    bob = KeyHistory(
        BOB,
        "shopify",
        [Refresh(t) for t in every_2h[:10]]
        + [Refresh(t, "failed", error="HTTP 503 after 3 attempts") for t in every_2h[10:13]]
        + [Refresh(t) for t in every_2h[13:]],
    )
    # Carol starts counting at her first success; before it she is never refreshed.
    carol = KeyHistory(CAROL, "amazon", [Refresh(t) for t in every_2h[5:]])
    dave = KeyHistory(DAVE, "shopify", [Refresh(base)])  # disconnected: not judged
    write(db, [alice, bob, carol, dave])
    figures = report_json(capsys, env)
    assert figures["mode"] == "classic"
    _, per_key = check(figures, [alice, bob, carol], age=timedelta(minutes=150))
    # 8 h without a success: late in each minute that begins more than 2 h 30 min after.
    assert per_key[(BOB, "shopify")] == 8 * 60 - 150 - 1
    assert sum(d["breaches"] for d in figures["days"]) == 1
    assert (DAVE, "shopify") not in {(k["client_id"], k["platform"]) for k in figures["keys"]}
    seconds = {c["client_id"]: c["backend_seconds"] for c in figures["clients"]}
    in_window = [r for r in bob.refreshes if r.at >= _parse(figures["window"]["from"])]
    assert seconds[BOB] == pytest.approx(len(in_window))
    reasons = figures["failures"]["reasons"]
    assert reasons[0]["count"] == 3
    assert "HTTP" in reasons[0]["example"]


def test_change_aware_changes_and_expiry_equal_the_judge(db, env, capsys):
    connect_clients(db, {ALICE: ("shopify",), BOB: ("amazon",), CAROL: ("shopify",)})
    env = {
        **env,
        "REFRESH_CHANGE_SQL": "SELECT NULL::uuid, NULL::text, NULL::text WHERE false",
        "REFRESH_INTERVAL_MINUTES": "20",  # a change shown within 25 min
        "REFRESH_MAX_AGE_MINUTES": "600",  # refreshed within 10 h 25 min
    }
    now = database_minute(db)
    t0 = now - timedelta(hours=40)
    # Alice: three changes; the second took 40 min to show (15 min late).
    alice = KeyHistory(
        ALICE,
        "shopify",
        [
            Refresh(t0, expires_at=t0 + 24 * H),
            Refresh(t0 + 5 * H, change_at=t0 + 5 * H - 10 * M, expires_at=t0 + 29 * H),
            Refresh(t0 + 9 * H, change_at=t0 + 9 * H - 40 * M, expires_at=t0 + 33 * H),
            Refresh(t0 + 18 * H, change_at=t0 + 18 * H - 5 * M, expires_at=t0 + 42 * H),
            Refresh(now - 2 * H, change_at=now - 2 * H - 5 * M, expires_at=now + 20 * H),
        ],
    )
    # Bob: his copy expired 1 h before the next refresh; and his age passed the max age.
    bob = KeyHistory(
        BOB,
        "amazon",
        [
            Refresh(t0, expires_at=t0 + 3 * H),
            Refresh(t0 + 4 * H, expires_at=t0 + 30 * H),
            Refresh(t0 + 16 * H, expires_at=t0 + 40 * H),
            Refresh(now - 3 * H, expires_at=now + 20 * H),
        ],
    )
    # Carol: a change whose refresh failed, then shown by the next success.
    carol = KeyHistory(
        CAROL,
        "shopify",
        [
            Refresh(t0, expires_at=t0 + 30 * H),
            Refresh(t0 + 6 * H, "failed", change_at=t0 + 6 * H - 2 * M, error="timed out"),
            Refresh(t0 + 7 * H, change_at=t0 + 6 * H - 2 * M, expires_at=t0 + 31 * H),
            Refresh(now - H, expires_at=now + 20 * H),
        ],
    )
    write(db, [alice, bob, carol], checked=True)
    figures = report_json(capsys, env)
    assert figures["mode"] == "change-aware"
    _, per_key = check(
        figures,
        [alice, bob, carol],
        age=timedelta(minutes=625),
        change=timedelta(minutes=25),
        expiry=True,
    )
    # 15 min for the slow change, then 20 h without a refresh against 10 h 25 min.
    assert per_key[(ALICE, "shopify")] == (15 - 1) + (20 * 60 - 625 - 1)
    # An expired copy is late from its expiry on; an age only once strictly past its bound.
    assert per_key[(BOB, "amazon")] == 60 + (12 * 60 - 625 - 1) + (21 * 60 - 625 - 1)
    assert per_key[(CAROL, "shopify")] == (62 - 25 - 1) + (32 * 60 - 625 - 1)
    p95 = [d["latency_p95_s"] for d in figures["days"] if d["latency_p95_s"] is not None]
    assert p95
    assert max(p95) <= 62 * 60


def test_listener_bound_equal_the_judge(db, env, capsys):
    connect_clients(db, {ALICE: ("shopify", "amazon")})
    now = database_minute(db)
    t0 = now - timedelta(hours=20)
    alice = KeyHistory(
        ALICE,
        "shopify",
        [Refresh(t0)]
        + [Refresh(t0 + i * H + M, change_at=t0 + i * H) for i in range(1, 5)]
        # one change took 10 minutes to show: late from 6 min (60 s + a refresh) after it
        + [Refresh(t0 + 6 * H + 10 * M, change_at=t0 + 6 * H)]
        + [Refresh(now - 10 * M, change_at=now - 11 * M)],
    )
    amazon = KeyHistory(ALICE, "amazon", [Refresh(t0), Refresh(now - 30 * M)])
    write(db, [alice, amazon], trigger="listen")
    figures = report_json(capsys, env, days=2)
    assert figures["mode"] == "listener"
    _, per_key = check(
        figures,
        [alice, amazon],
        age=timedelta(minutes=1440 + 150),
        change=timedelta(seconds=360),
        expiry=True,
    )
    assert per_key[(ALICE, "shopify")] == 3  # the minutes beginning 7, 8 and 9 min after
    latency = max(d["latency_max_s"] or 0 for d in figures["days"])
    assert latency == 600


def test_rows_naming_their_previous_success_give_the_same_figures(db, env, capsys):
    """The runner names each success's predecessor (and keeps each key's last success in
    the state); the figures must not change."""
    connect_clients(db, {ALICE: ("shopify",), BOB: ("shopify",)})
    now = database_minute(db)
    times = [now - timedelta(hours=30) + i * 2 * H for i in range(15)]
    alice = KeyHistory(ALICE, "shopify", [Refresh(t) for t in times if t.hour % 7])
    bob = KeyHistory(BOB, "shopify", [Refresh(t) for t in times[::2]])
    write(db, [alice, bob])
    before = report_json(capsys, env)
    with db.cursor() as cur:
        cur.execute(
            "UPDATE refresh_jobs AS j SET prev_success_at = coalesce(x.prev, '-infinity') "
            "FROM (SELECT run_id, client_id, platform, lag(finished_at) OVER "
            "(PARTITION BY client_id, platform ORDER BY finished_at) AS prev "
            "FROM refresh_jobs WHERE status = 'succeeded') AS x "
            "WHERE x.run_id = j.run_id AND x.client_id = j.client_id AND x.platform = j.platform"
        )
        # The state a runner writes beside them: each key's last success.
        cur.execute(
            "INSERT INTO refresh_state (client_id, platform, last_status, last_success_at) "
            "SELECT client_id, platform, 'succeeded', max(finished_at) FROM refresh_jobs "
            "WHERE status = 'succeeded' GROUP BY 1, 2"
        )
    after = report_json(capsys, env)
    for a, b in zip(before["days"], after["days"], strict=True):
        assert (a["breach_minutes"], a["breaches"]) == (b["breach_minutes"], b["breaches"])
    assert before["keys"] == after["keys"]
    assert sum(k["late_minutes"] for k in after["keys"]) > 0


def test_html_is_self_contained(db, env, tmp_path, capsys):
    connect_clients(db, {ALICE: ("shopify",)})
    now = database_minute(db)
    write(db, [KeyHistory(ALICE, "shopify", [Refresh(now - 5 * H), Refresh(now - H)])])
    out = tmp_path / "r.html"
    assert main(["report", "--out", str(out)], environ=env) == 0
    assert str(out) in capsys.readouterr().out
    html = out.read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    # No reference to anything outside the file: no URL, no import, no external href/src.
    assert not re.search(r"(?:https?:)?//[a-z0-9]", html.replace("http://www.w3.org", ""))
    assert not re.search(r"\b(?:src|href)\s*=", html)
    assert "@import" not in html
    assert "url(" not in html
    assert "UTC" in html
    assert 'id="legend"' in html


def test_missing_tables_exit_4(empty_db_url, tmp_path, capsys):
    env = {"DATABASE_URL": empty_db_url, "LOG_DIR": str(tmp_path)}
    assert main(["report", "--json"], environ=env) == 4
    assert "db init" in capsys.readouterr().err


def test_bad_days_is_a_usage_error(env, capsys):
    assert main(["report", "--days", "0"], environ=env) == 2
    assert "--days" in capsys.readouterr().err


def test_metrics_gauge_is_the_share_of_keys_within_the_promise(
    run_env, clients, backend, db, tmp_path
):
    from prometheus_client.parser import text_string_to_metric_families

    from tests.backend import Answer

    path = tmp_path / "refresh.prom"
    env = {**run_env, "METRICS_FILE": str(path), "REFRESH_MAX_ATTEMPTS": "1"}
    assert main(["run"], env) == 0

    def ratio() -> float:
        for family in text_string_to_metric_families(path.read_text(encoding="utf-8")):
            for sample in family.samples:
                if sample.name == "analytics_refresh_keys_within_promise_ratio":
                    return sample.value
        raise AssertionError("no within-promise gauge")

    assert ratio() == 1.0
    # Bob's shopify copy was last refreshed 3 h ago and its refresh now fails: outside.
    with db.cursor() as cur:
        cur.execute(
            "UPDATE refresh_state SET last_success_at = now() - interval '3 hours' "
            "WHERE client_id = %s AND platform = 'shopify'",
            (BOB,),
        )
        cur.execute("SELECT count(*) FROM refresh_state")
        (keys,) = cur.fetchone()
    backend.script(BOB, "shopify", Answer(500, {"error": "boom"}))
    assert main(["run"], env) == 1
    assert ratio() == pytest.approx((keys - 1) / keys)


def test_a_pending_request_is_late_past_its_bound_until_shown(db, env, capsys):
    """A change recorded in refresh_requests and not yet refreshed waits in the open gap."""
    connect_clients(db, {ALICE: ("shopify",), BOB: ("shopify",)})
    with db.cursor() as cur:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS refresh_requests (client_id uuid, platform text,"
            " version bigint NOT NULL DEFAULT 0, requested_at timestamptz NOT NULL DEFAULT now(),"
            " pending_since timestamptz, PRIMARY KEY (client_id, platform))"
        )
    now = database_minute(db)
    alice = KeyHistory(ALICE, "shopify", [Refresh(now - 40 * M)], pending_change=now - 20 * M)
    # Bob's request is older than his last refresh: shown by it, whatever pending_since says.
    bob = KeyHistory(BOB, "shopify", [Refresh(now - 10 * M)])
    write(db, [alice, bob], trigger="listen")
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO refresh_requests (client_id, platform, version, requested_at,"
            " pending_since) VALUES (%s, 'shopify', 1, %s, %s), (%s, 'shopify', 1, %s, %s)",
            (ALICE, now - 20 * M, now - 20 * M, BOB, now - 30 * M, now - 30 * M),
        )
    figures = report_json(capsys, env, days=1)
    late = {(k["client_id"], k["platform"]): k["late_minutes"] for k in figures["keys"]}
    # Late from 6 min after the change to now (the current minute counts once begun).
    assert late[(ALICE, "shopify")] in (14, 15)
    assert late[(BOB, "shopify")] == 0


def test_real_runs_are_within_the_promise_and_name_their_previous_success(
    run_env, clients, db, capsys
):
    """Two real runs: every key is current, each success row names the one before it."""
    assert main(["run"], run_env) == 0
    assert main(["run"], run_env) == 0
    with db.cursor() as cur:
        cur.execute(
            "SELECT count(*) FILTER (WHERE prev_success_at = '-infinity'),"
            " count(*) FILTER (WHERE isfinite(prev_success_at)), count(*)"
            " FROM refresh_jobs WHERE status = 'succeeded'"
        )
        first, named, total = cur.fetchone()
    assert first == named == total // 2  # the first run names none, the second the first
    # As if the first run had been an hour ago: every key then counts for an hour.
    with db.cursor() as cur:
        cur.execute(
            "UPDATE refresh_jobs SET finished_at = finished_at - interval '1 hour'"
            " WHERE prev_success_at = '-infinity'"
        )
        cur.execute(
            "UPDATE refresh_jobs SET prev_success_at = prev_success_at - interval '1 hour'"
            " WHERE isfinite(prev_success_at)"
        )
    figures = report_json(capsys, run_env, days=2)  # the hour may begin yesterday (UTC)
    days = figures["days"]
    assert sum(d["counted_minutes"] for d in days) >= 60 * (total // 2) - total
    assert days[-1]["within_promise"] == 1.0
    assert sum(d["breaches"] + d["breach_minutes"] for d in days) == 0
    assert {k["late_minutes"] for k in figures["keys"]} == {0}
    assert len(figures["keys"]) == figures["keys_judged"] == total // 2
    assert {c["client_id"] for c in figures["clients"]} == {ALICE, BOB, CAROL}
