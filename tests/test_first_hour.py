"""The way from the demo to a deployment, driven as a user would: a working directory of
its own with its own .env, the CLI through ``main(argv)`` reading both, nothing injected."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import psycopg2.extensions
import pytest

from analytics_refresh import names
from analytics_refresh.cli import main
from analytics_refresh.settings import KNOWN_VARIABLES, PREFIXES
from tests.conftest import ROOT, connect_clients
from tests.ops_helpers import PingRecorder

ALICE = "3b619a14-3cd8-49fa-9c24-d8df5e54c452"
BOB = "5f0c3a52-7d5e-4c43-9a4e-0f2d6b1c9e11"


class UserDir:
    """A working directory as a user has it: a .env, and maybe a data folder after."""

    def __init__(self, path: Path):
        self.path = path

    def env(self, **values: str) -> None:
        lines = [
            f"{name}={value!r}" if " " in value else f"{name}={value}"
            for name, value in values.items()
        ]
        (self.path / ".env").write_text("\n".join(lines) + "\n", encoding="utf-8")

    @property
    def dotenv(self) -> str:
        return str(self.path / ".env")

    def log(self) -> str:
        return (self.path / "logs" / "analytics_refresh_cron.log").read_text(encoding="utf-8")


@pytest.fixture
def user(tmp_path, monkeypatch) -> UserDir:
    """A clean working directory: no project variable (nor a near-miss) in the environment."""
    for name in list(os.environ):
        if name in KNOWN_VARIABLES or name in names.misspelt([name], KNOWN_VARIABLES, PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return UserDir(tmp_path)


def closed_port() -> int:
    """A loopback port where nothing listens (just freed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def line_of(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if name in line)


def dbname(url: str) -> str:
    return psycopg2.extensions.parse_dsn(url)["dbname"]


# -- a near-miss of DATABASE_URL never falls back to the embedded database ---------------------
@pytest.mark.parametrize("wrong", ["DATABSE_URL", "DATABASE_UR", "database_url", "DATABASE_URLS"])
def test_a_misspelt_database_url_in_dotenv_stops_check_naming_the_right_name(
    user, db_url, secret, capsys, wrong
):
    user.env(**{wrong: db_url, "API_SECRET_KEY": secret})
    assert main(["check"]) == 3
    captured = capsys.readouterr()
    failed = line_of(captured.out, "✗ Database reachable")
    assert "DATABASE_URL is not set" in failed
    assert f"{wrong} is set in {user.dotenv}: did you mean DATABASE_URL?" in failed
    assert f"unknown variable {wrong} is ignored: did you mean DATABASE_URL?" in captured.err
    assert not (user.path / ".data").exists()  # no embedded server was started


def test_a_misspelt_database_url_stops_a_run_too(user, db_url, secret, capsys):
    user.env(DATABASE_UR=db_url, API_SECRET_KEY=secret)
    assert main(["run"]) == 3
    err = capsys.readouterr().err
    assert "DATABASE_URL is not set" in err
    assert "DATABASE_UR is set in" in err
    assert "did you mean DATABASE_URL?" in user.log()
    assert not (user.path / ".data").exists()


@pytest.mark.parametrize(
    ("wrong", "right"),
    [
        ("REFERSH_CONCURRENCY", "REFRESH_CONCURRENCY"),
        ("REFRESH_CONCURENCY", "REFRESH_CONCURRENCY"),
        ("ANALYTICS_API_ULR", "ANALYTICS_API_URL"),
        ("LOG_LEVL", "LOG_LEVEL"),
        ("HEALTHCHECK_URI", "HEALTHCHECK_URL"),
        ("REFRESH_CHANGE_SQL_FLE", "REFRESH_CHANGE_SQL_FILE"),
    ],
)
def test_a_near_miss_of_any_name_is_named_with_the_right_one(user, secret, capsys, wrong, right):
    user.env(**{wrong: "8", "API_SECRET_KEY": secret})
    assert main(["token", ALICE]) == 0
    err = capsys.readouterr().err
    assert (
        f"unknown variable {wrong} is ignored: did you mean {right}? (set in {user.dotenv})" in err
    )


def test_a_misspelt_secret_name_is_named_in_the_missing_secret_error(user, secret, capsys):
    user.env(API_SECRT_KEY=secret)
    assert main(["token", ALICE]) == 3
    err = capsys.readouterr().err
    assert "API_SECRET_KEY is not set" in err
    assert "API_SECRT_KEY is set: did you mean API_SECRET_KEY?" in err
    assert secret not in err


def test_the_machines_own_variables_are_not_taken_for_typos(user, secret, capsys, monkeypatch):
    for name in ("TEST_DATABASE_URL", "LOGNAME", "PGDATABASE", "DATABASE", "LOGDIR_OLD"):
        monkeypatch.setenv(name, "x")
    user.env(API_SECRET_KEY=secret)
    assert main(["token", ALICE]) == 0
    assert "unknown variable" not in capsys.readouterr().err


# -- the embedded database only where nothing says a deployment is meant -----------------------
@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ({"HEALTHCHECK_URL": "https://hc-ping.com/abc"}, "HEALTHCHECK_URL is set in"),
        (
            {"ANALYTICS_API_URL": "https://api.example.com"},
            "ANALYTICS_API_URL names api.example.com",
        ),
        ({"METRICS_FILE": "metrics/run.prom"}, "METRICS_FILE is set in"),
        ({"METRICS_PUSHGATEWAY_URL": "http://pushgateway:9091"}, "METRICS_PUSHGATEWAY_URL is set"),
        ({"REFRESH_SHARD": "0/2"}, "REFRESH_SHARD is set in"),
    ],
)
def test_production_settings_without_database_url_are_an_error_naming_it(
    user, secret, capsys, setting, named
):
    user.env(API_SECRET_KEY=secret, **setting)
    assert main(["db", "init"]) == 3
    err = capsys.readouterr().err
    assert "DATABASE_URL is not set, and this looks like a real deployment" in err
    assert named in err
    assert "fix: set DATABASE_URL" in err
    assert not (user.path / ".data").exists()


def test_a_scheduled_run_without_database_url_is_an_error(user, secret, capsys):
    user.env(API_SECRET_KEY=secret)  # nothing else: but cron started it
    assert main(["run", "--trigger", "cron"]) == 3
    assert "this is a scheduled run" in capsys.readouterr().err
    assert not (user.path / ".data").exists()


def test_check_names_the_database_it_checked_and_where_it_was_set(
    user, db_url, secret, clients_db, capsys
):
    user.env(
        DATABASE_URL=db_url,
        API_SECRET_KEY=secret,
        ANALYTICS_API_URL=f"http://127.0.0.1:{closed_port()}",
    )
    main(["check"])
    ok = line_of(capsys.readouterr().out, "Database reachable")
    assert ok.startswith("  ✓")
    assert f"database '{dbname(db_url)}'" in ok
    assert f"(DATABASE_URL, set in {user.dotenv})" in ok


@pytest.fixture
def clients_db(db):
    connect_clients(db, {ALICE: ("shopify", "amazon"), BOB: ("amazon",)})
    return db


# -- the change query: one rule for it and its file, checked before a run relies on it -------
@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("SELEC client_id FROM order_lines", "syntax error"),
        ("SELECT client_id, platform FROM client_api_credentials", "expected 3 columns"),
        ("SELECT 'x', 'shopify', 'k'", "client_id is not a UUID"),
        ("SELECT client_id, 'ebay', 'k' FROM client_api_credentials", "platform is not"),
        ("SELECT client_id, platform, 1 FROM no_such_table", "no_such_table"),
        ("DELETE FROM client_api_credentials", "expected one SELECT, got DELETE"),
        ("-- keys\n/* all */ UPDATE client_api_credentials SET status = 'x'", "got UPDATE"),
        ("SELECT client_id, platform, max(updated_at) FROM order_lines", "it failed"),
        ("SELECT client_id, 'shopify', 'k' FROM client_api_credentials", "a second row"),
        # Refused or failed, as long as nothing is written: the count is checked below.
        ("SELECT 1; DELETE FROM client_api_credentials", ""),
    ],
)
def test_a_broken_change_query_fails_check_naming_it(
    user, db_url, secret, clients_db, capsys, query, reason
):
    user.env(DATABASE_URL=db_url, API_SECRET_KEY=secret, REFRESH_CHANGE_SQL=query)
    assert main(["check"]) == 3
    out = capsys.readouterr().out
    failed = line_of(out, "✗ Change query runs")
    assert f"REFRESH_CHANGE_SQL (set in {user.dotenv})" in failed
    assert reason in failed
    assert "every run would refresh every key" in failed
    with clients_db.cursor() as cur:  # read-only: the DELETE deleted nothing
        cur.execute("SELECT count(*) FROM client_api_credentials")
        assert cur.fetchone()[0] == 3


def test_the_reference_change_query_passes_check_with_its_figures(
    user, db_url, secret, clients_db, capsys
):
    path = ROOT / "dashboard_api" / "change_keys.sql"
    user.env(DATABASE_URL=db_url, API_SECRET_KEY=secret, REFRESH_CHANGE_SQL_FILE=str(path))
    main(["check"])
    ok = line_of(capsys.readouterr().out, "Change query runs")
    assert ok.startswith("  ✓ Change query runs: REFRESH_CHANGE_SQL_FILE=")
    assert re.search(r": \d+ keys in \d+ ms \(read-only\), \d+ of the 3 planned keys", ok)


def test_the_query_and_its_file_set_together_are_an_error_wherever_each_is(
    user, db_url, secret, capsys, monkeypatch, tmp_path
):
    query = tmp_path / "keys.sql"
    query.write_text("SELECT client_id, platform, 'k' FROM client_api_credentials")
    user.env(DATABASE_URL=db_url, API_SECRET_KEY=secret, REFRESH_CHANGE_SQL_FILE=str(query))
    monkeypatch.setenv("REFRESH_CHANGE_SQL", "SELECT 1")
    assert main(["run", "--dry-run"]) == 3
    err = capsys.readouterr().err
    assert (
        f"REFRESH_CHANGE_SQL (set in the environment) and REFRESH_CHANGE_SQL_FILE (set in "
        f"{user.dotenv}) are both set" in err
    )


def test_a_run_whose_change_query_failed_says_so_to_the_heartbeat_and_the_metrics(
    user, db_url, secret, clients_db, backend, capsys
):
    monitor = PingRecorder()
    try:
        user.env(
            DATABASE_URL=db_url,
            API_SECRET_KEY=secret,
            ANALYTICS_API_URL=backend.url,
            REFRESH_CHANGE_SQL="SELEC 1",
            HEALTHCHECK_URL=monitor.url,
            METRICS_FILE=str(user.path / "run.prom"),
            REFRESH_INTERVAL_MINUTES="10",
        )
        assert main(["run"]) == 0  # every job refreshed: the dashboards are fresh
        final = monitor.pings[-1]
    finally:
        monitor.stop()
    assert final.path.endswith("/0")
    assert final.body.startswith("warning: the change query failed (")
    assert "syntax error" in final.body.splitlines()[0]
    metrics = (user.path / "run.prom").read_text()
    assert re.search(
        r'^analytics_refresh_last_run_change_query_failed\{shard="none"\} 1\.0$', metrics, re.M
    )
    with clients_db.cursor() as cur:
        cur.execute("SELECT note FROM refresh_runs")
        assert cur.fetchone()[0].startswith("the change query failed (")


# -- settings that follow the schedule --------------------------------------------------------
def test_the_deadline_follows_the_interval_unless_set(user, db_url, secret, capsys):
    user.env(
        DATABASE_URL=db_url,
        API_SECRET_KEY=secret,
        REFRESH_INTERVAL_MINUTES="10",
        REFRESH_CHANGE_SQL="SELECT client_id, platform, 'k' FROM client_api_credentials",
    )
    main(["check"])
    settings = line_of(capsys.readouterr().out, "Settings valid")
    assert settings.startswith("  ✓")
    assert "interval 10 min, deadline 550s" in settings


def test_a_deadline_longer_than_the_interval_is_a_warning(user, db_url, secret, capsys):
    user.env(
        DATABASE_URL=db_url,
        API_SECRET_KEY=secret,
        REFRESH_INTERVAL_MINUTES="10",
        REFRESH_DEADLINE="6600",
        REFRESH_CHANGE_SQL="SELECT client_id, platform, 'k' FROM client_api_credentials",
    )
    main(["check"])
    settings = line_of(capsys.readouterr().out, "Settings valid")
    assert settings.startswith("  ⚠")
    assert "REFRESH_DEADLINE=6600 s is longer than the schedule's interval" in settings
    assert "at most 550" in settings


def test_a_short_schedule_without_a_change_query_is_named_in_check_and_the_run_log(
    user, db_url, secret, clients_db, backend, capsys
):
    user.env(
        DATABASE_URL=db_url,
        API_SECRET_KEY=secret,
        REFRESH_INTERVAL_MINUTES="10",
        ANALYTICS_API_URL=backend.url,
    )
    main(["check"])
    settings = line_of(capsys.readouterr().out, "Settings valid")
    assert settings.startswith("  ⚠")
    assert "REFRESH_INTERVAL_MINUTES=10 but no change query is set" in settings
    assert "12 times the load" in settings
    assert main(["run"]) == 0
    assert "no change query is set" in user.log()


# -- the demo writes only where it was told to ------------------------------------------------
def test_demo_never_writes_into_database_url_without_its_name(
    user, db_url, clients_db, tmp_path, capsys
):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")  # the embedded server cannot start here: the run stops at once
    user.env(DATABASE_URL=db_url, ANALYTICS_REFRESH_DATA_DIR=str(blocked))
    code = main(["demo", "--clients", "1", "--skus", "2", "--orders-per-day", "1"])
    out = capsys.readouterr().out
    assert code == 4  # the embedded database, not DATABASE_URL's
    assert "the demo writes only into a database it creates" in out
    with clients_db.cursor() as cur:
        cur.execute("SELECT count(*) FROM client_api_credentials")
        assert cur.fetchone()[0] == 3
        cur.execute("SELECT count(*) FROM order_lines")
        assert cur.fetchone()[0] == 0


def test_demo_with_another_database_name_writes_nothing(user, db_url, clients_db, capsys):
    user.env(DATABASE_URL=db_url)
    assert main(["demo", "--database", "production"]) == 3
    err = capsys.readouterr().err
    assert "--database production does not match the database DATABASE_URL names" in err
    assert f"pass --database {dbname(db_url)}" in err
    with clients_db.cursor() as cur:
        cur.execute("SELECT count(*) FROM order_lines")
        assert cur.fetchone()[0] == 0


def test_db_seed_loads_the_sample_clients_for_a_real_api(user, empty_db_url, capsys):
    user.env(DATABASE_URL=empty_db_url)
    args = ["db", "seed", "--clients", "2", "--skus", "3", "--orders-per-day", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Reference API tables ready, with 2 connected sample clients" in out
    conn = psycopg2.connect(empty_db_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(DISTINCT client_id) FROM client_api_credentials")
            assert cur.fetchone()[0] == 2
            cur.execute("SELECT count(*) FROM refresh_runs")  # the runner's tables too
            assert cur.fetchone()[0] == 0
    finally:
        conn.close()
    assert main(args) == 0  # idempotent


def test_a_lease_longer_than_the_interval_is_a_warning(user, secret, capsys):
    user.env(API_SECRET_KEY=secret, REFRESH_INTERVAL_MINUTES="5", REFRESH_CHANGE_SQL="SELECT 1")
    assert main(["token", ALICE]) == 0
    err = capsys.readouterr().err
    assert "REFRESH_TIMEOUT=300 s makes a killed run's lease hold for 330 s" in err
    assert "set REFRESH_TIMEOUT to at most 270" in err


def test_the_secret_and_its_file_set_together_are_an_error_for_runner_and_api(
    user, secret, capsys, tmp_path
):
    from dashboard_api.config import ConfigError, from_environ

    path = tmp_path / "secret"
    path.write_text(secret)
    user.env(API_SECRET_KEY=secret, API_SECRET_KEY_FILE=str(path))
    assert main(["token", ALICE]) == 3
    assert "API_SECRET_KEY (set in" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="API_SECRET_KEY and API_SECRET_KEY_FILE are both set"):
        from_environ({"API_SECRET_KEY": secret, "API_SECRET_KEY_FILE": str(path)})


@pytest.mark.parametrize(
    ("wrong", "right"),
    [
        ("SECRET_KEY", "API_SECRET_KEY"),
        ("CONCURRENCY", "REFRESH_CONCURRENCY"),
        ("CHANGE_SQL_FILE", "REFRESH_CHANGE_SQL_FILE"),
    ],
)
def test_a_name_without_its_prefix_in_dotenv_is_named_with_it(user, secret, capsys, wrong, right):
    user.env(**{wrong: "x", "API_SECRET_KEY": secret})
    assert main(["token", ALICE]) == 0
    assert f"unknown variable {wrong} is ignored: did you mean {right}?" in capsys.readouterr().err


def test_another_programs_secret_key_in_the_environment_is_left_alone(
    user, secret, capsys, monkeypatch
):
    monkeypatch.setenv("SECRET_KEY", "django's")
    user.env(API_SECRET_KEY=secret)
    assert main(["token", ALICE]) == 0
    assert "unknown variable" not in capsys.readouterr().err


def test_the_demo_never_pings_the_deployments_monitor_nor_writes_its_metrics(user, db_url, capsys):
    monitor = PingRecorder()
    try:
        user.env(
            DATABASE_URL=db_url,
            HEALTHCHECK_URL=monitor.url,
            METRICS_FILE=str(user.path / "deployment.prom"),
        )
        args = ["demo", "--clients", "1", "--skus", "3", "--orders-per-day", "1"]
        assert main([*args, "--database", dbname(db_url)]) == 0
        assert monitor.pings == []
    finally:
        monitor.stop()
    assert not (user.path / "deployment.prom").exists()
