"""Status and the metrics at many keys: counted in the database, the stale ones named by name."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from analytics_refresh.cli import main
from analytics_refresh.plan import shard_of

WORST = "analytics_refresh_worst_key_last_current_timestamp_seconds"


def build_fleet(db, clients: int, *, start: int = 1, age_minutes: float = 10) -> list[str]:
    """Connect ``clients`` clients on both platforms, every key refreshed minutes ago."""
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO client_api_credentials (client_id, platform, status) "
            "SELECT md5('fleet:' || i)::uuid, p, 'connected' "
            "FROM generate_series(%s, %s) AS i, unnest(ARRAY['shopify', 'amazon']) AS p",
            (start, start + clients - 1),
        )
        cur.execute(
            "INSERT INTO refresh_state (client_id, platform, last_attempt_at, last_status, "
            " consecutive_failures, last_success_at, verified_at) "
            "SELECT md5('fleet:' || i)::uuid, p, t, 'succeeded', 0, t, t "
            "FROM generate_series(%s, %s) AS i, unnest(ARRAY['shopify', 'amazon', 'all']) AS p, "
            " (SELECT now() - make_interval(mins => %s)) AS x(t)",
            (start, start + clients - 1, age_minutes),
        )
        cur.execute(
            "SELECT md5('fleet:' || i)::uuid::text FROM generate_series(%s, %s) AS i",
            (start, start + clients - 1),
        )
        return [row[0] for row in cur.fetchall()]


def make_stale(db, keys: list[tuple[str, str]], hours: float) -> None:
    """Age the last success of ``keys``, as a key no run has refreshed for ``hours``."""
    with db.cursor() as cur:  # one statement: the same now() for every key
        cur.execute(
            "UPDATE refresh_state AS s SET last_success_at = now() - make_interval(secs => %s) "
            "FROM unnest(%s::uuid[], %s::text[]) AS k(client_id, platform) "
            "WHERE s.client_id = k.client_id AND s.platform = k.platform",
            (hours * 3600, [c for c, _ in keys], [p for _, p in keys]),
        )


def forget(db, client: str, platform: str) -> None:
    with db.cursor() as cur:
        cur.execute(
            "DELETE FROM refresh_state WHERE client_id = %s AND platform = %s", (client, platform)
        )


def samples(path: Path) -> list:
    text = path.read_text(encoding="utf-8")
    return [s for f in text_string_to_metric_families(text) for s in f.samples]


def worst_keys(path: Path) -> dict[tuple[str, str], float]:
    return {
        (s.labels["client_id"], s.labels["platform"]): s.value
        for s in samples(path)
        if s.name == WORST
    }


def status_json(env: dict, capsys, *flags: str) -> dict:
    capsys.readouterr()
    main(["status", "--json", *flags], env)
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def fleet(db) -> list[str]:
    return build_fleet(db, 2000)


def test_a_few_stale_keys_among_thousands_are_named_first(run_env, db, fleet, tmp_path, capsys):
    never = (fleet[1500], "amazon")
    stale = [(fleet[700], "all"), (fleet[3], "shopify"), (fleet[1999], "amazon")]
    forget(db, *never)
    make_stale(db, stale[:1], 30)
    make_stale(db, stale[1:], 6)
    expected = [never, stale[0], *sorted(stale[1:])]  # never, then stalest; ties by client
    env = {**run_env, "METRICS_FILE": str(tmp_path / "refresh.prom")}

    assert main(["run", "--client", fleet[0]], env) == 0  # a one-client run writes the file

    named = worst_keys(tmp_path / "refresh.prom")
    assert len(named) == 20  # METRICS_WORST_KEYS
    assert named[never] == 0
    oldest = sorted(named, key=lambda k: named[k])[:4]
    assert oldest[0] == never
    assert set(oldest[1:]) == set(stale)
    assert named[stale[0]] < min(named[k] for k in stale[1:])

    report = status_json(env, capsys)
    assert [(k["client_id"], k["platform"]) for k in report["worst"][:4]] == expected
    assert report["worst"][4]["stale"] is False
    assert (report["total"], report["stale_count"], report["never_refreshed_count"]) == (
        6000,
        4,
        1,
    )
    listed = status_json(env, capsys, "--stale-only")["caches"]
    assert [(k["client_id"], k["platform"]) for k in listed] == expected

    capsys.readouterr()
    assert main(["status"], env) == 1
    text = capsys.readouterr().out
    for client, platform in expected:
        assert any(client in line and platform in line for line in text.splitlines())
    assert "✗ 4 of 6000 client × platforms are older than 2.5 h (1 never refreshed)" in text


def test_the_metrics_and_the_summary_do_not_grow_with_the_clients(run_env, db, tmp_path, capsys):
    small, large = tmp_path / "small.prom", tmp_path / "large.prom"
    clients = build_fleet(db, 30)
    assert main(["run", "--client", clients[0]], {**run_env, "METRICS_FILE": str(small)}) == 0
    small_summary = len(json.dumps(status_json(run_env, capsys)))
    build_fleet(db, 3000, start=31)
    assert main(["run", "--client", clients[0]], {**run_env, "METRICS_FILE": str(large)}) == 0
    large_summary = len(json.dumps(status_json(run_env, capsys)))

    assert len(samples(large)) == len(samples(small)) < 200
    assert large.stat().st_size < small.stat().st_size * 1.05
    assert large_summary < small_summary * 1.05
    keys = {s.labels.get("platform"): s.value for s in samples(large)}
    assert {s.value for s in samples(large) if s.name == "analytics_refresh_keys"} == {3030}
    assert set(keys) >= {"shopify", "amazon", "all"}


def test_the_metrics_file_passes_promtool(run_env, db, tmp_path):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool is not installed (Debian's prometheus package)")
    clients = build_fleet(db, 50)
    forget(db, clients[7], "all")
    path = tmp_path / "refresh.prom"
    assert main(["run", "--client", clients[0]], {**run_env, "METRICS_FILE": str(path)}) == 0
    done = subprocess.run(
        [promtool, "check", "metrics"],
        input=path.read_text(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout + done.stderr == ""  # no lint finding either


def test_a_shard_counts_and_names_only_its_own_keys(run_env, db, tmp_path, capsys):
    clients = build_fleet(db, 120)
    make_stale(db, [(c, "shopify") for c in clients], 10)  # every shard has stale keys
    for index in range(3):
        mine = {c for c in clients if shard_of(c, 3) == index}
        env = {**run_env, "REFRESH_SHARD": f"{index}/3"}
        report = status_json(env, capsys, "--keys")
        assert report["total"] == 3 * len(mine)
        assert {k["client_id"] for k in report["caches"]} == mine
        assert report["stale_count"] == len(mine)

    env = {**run_env, "METRICS_FILE": str(tmp_path / "m.prom"), "METRICS_WORST_KEYS": "500"}
    assert main(["run", "--shard", "1/3"], env) == 0
    named = worst_keys(tmp_path / "m.shard-1-of-3.prom")
    assert {c for c, _ in named} == {c for c in clients if shard_of(c, 3) == 1}


def test_worst_keys_setting(run_env, db, tmp_path, capsys):
    clients = build_fleet(db, 10)
    path = tmp_path / "refresh.prom"
    env = {**run_env, "METRICS_FILE": str(path), "METRICS_WORST_KEYS": "0"}
    assert main(["run", "--client", clients[0]], env) == 0
    assert worst_keys(path) == {}
    assert main(["run", "--client", clients[0]], {**env, "METRICS_WORST_KEYS": "5"}) == 0
    assert len(worst_keys(path)) == 5
    capsys.readouterr()
    assert main(["run"], {**env, "METRICS_WORST_KEYS": "many"}) == 3
    err = capsys.readouterr().err
    assert "METRICS_WORST_KEYS" in err
    assert "many" in err


def test_a_one_client_run_finds_its_rows_however_the_table_spells_the_id(run_env, db, backend):
    build_fleet(db, 50)
    wanted = "3b619a14-3cd8-49fa-9c24-d8df5e54c452"
    with db.cursor() as cur:  # an application table that keeps ids as text, as typed
        cur.execute("ALTER TABLE client_api_credentials ALTER COLUMN client_id TYPE text")
        cur.execute(
            "INSERT INTO client_api_credentials (client_id, platform, status) VALUES "
            "(%s, 'shopify', 'connected'), (%s, 'amazon', 'connected')",
            (wanted.upper(), "{" + wanted.replace("-", "") + "}"),
        )
    assert main(["run", "--client", wanted], run_env) == 0
    sent = sorted((r.query["client_id"], r.query["platform"]) for r in backend.refreshes())
    assert sent == [(wanted, "all"), (wanted, "amazon"), (wanted, "shopify")]


def test_status_expects_the_keys_a_run_plans_from_an_untidy_text_table(
    run_env, db, backend, capsys
):
    alice, bob = "3b619a14-3cd8-49fa-9c24-d8df5e54c452", "5f0c3a52-7d5e-4c43-9a4e-0f2d6b1c9e11"
    with db.cursor() as cur:  # an application's own table: text ids, as typed
        cur.execute("DROP TABLE client_api_credentials")
        cur.execute(
            "CREATE TABLE client_api_credentials (client_id text, platform text, status text)"
        )
        cur.executemany(
            "INSERT INTO client_api_credentials VALUES (%s, %s, %s)",
            [
                (alice.upper(), "shopify", "connected"),
                (f"urn:uuid:{bob}", "amazon", "connected"),
                ("not-a-uuid", "shopify", "connected"),
                (alice, "ebay", "connected"),
                ("{" + bob.replace("-", "") + "}", "shopify", "disconnected"),
            ],
        )
    report = status_json(run_env, capsys, "--keys")
    listed = sorted((k["client_id"], k["platform"]) for k in report["caches"])
    assert main(["run"], run_env) == 0
    planned = sorted((r.query["client_id"], r.query["platform"]) for r in backend.refreshes())
    assert (
        listed
        == planned
        == sorted([(alice, "shopify"), (alice, "all"), (bob, "amazon"), (bob, "all")])
    )
    assert status_json(run_env, capsys)["stale_count"] == 0  # and now all are current


def add_checking_run(db, shard: str, minutes_ago: float, wrote: list[tuple[str, str]]) -> None:
    """Record a finished change-checking run of ``shard`` that wrote rows for ``wrote``."""
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO refresh_runs (run_id, trigger, host, shard, started_at, finished_at,"
            " status, exit_code, checked_changes) VALUES (gen_random_uuid(), 'cron', 'h', %s,"
            " now() - make_interval(mins => %s), now() - make_interval(mins => %s - 1),"
            " 'succeeded', 0, true) RETURNING run_id",
            (shard, minutes_ago, minutes_ago),
        )
        (run_id,) = cur.fetchone()
        for client, platform in wrote:
            cur.execute(
                "INSERT INTO refresh_jobs (run_id, client_id, platform, status) "
                "VALUES (%s, %s, %s, 'failed')",
                (run_id, client, platform),
            )


def test_the_database_and_the_run_agree_when_each_key_was_last_current(run_env, db, capsys):
    from analytics_refresh import key_freshness, records
    from analytics_refresh.settings import Settings

    clients = build_fleet(db, 60, age_minutes=300)
    with db.cursor() as cur:  # change-aware keys; one copy expired before a check, one lives
        cur.execute("UPDATE refresh_state SET change_key = 'k'")
        cur.execute(
            "UPDATE refresh_state SET expires_at = now() - interval '3 hours' WHERE client_id = %s",
            (clients[0],),
        )
        cur.execute(
            "UPDATE refresh_state SET expires_at = now() + interval '1 hour' WHERE client_id = %s",
            (clients[1],),
        )
    shard_1_of_2 = [c for c in clients if shard_of(c, 2) == 1]
    add_checking_run(db, "", 120, [(clients[2], "shopify")])
    add_checking_run(db, "1/2", 30, [(shard_1_of_2[0], "amazon")])
    add_checking_run(db, "0/2", 200, [])

    settings = Settings()
    in_sql = {
        (k.client_id, k.platform): k.current_at
        for k in key_freshness.stream(db, settings, max_age_seconds=9000)
    }
    in_python = {key: s.current_at for key, s in records.key_states(db).items()}
    assert in_sql == in_python
    # The cases are all there: confirmed by either run, pending, capped by the expiry.
    assert len(set(in_sql.values())) >= 4
    report = status_json(run_env, capsys)
    assert report["stale_count"] >= 3  # the expired copies and the pending key
