"""Settings, usage errors, the token command and logging: main(argv) as users call it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import api_key_auth
from analytics_refresh.cli import main
from analytics_refresh.errors import ConfigError
from analytics_refresh.settings import Settings
from tests.conftest import connect_clients

ROOT = Path(__file__).resolve().parent.parent
CLIENT = "3b619a14-3cd8-49fa-9c24-d8df5e54c452"


def test_missing_secret_exits_3_naming_it(run_env, capsys):
    env = {k: v for k, v in run_env.items() if k != "API_SECRET_KEY"}
    assert main(["run"], env) == 3
    assert "API_SECRET_KEY is not set" in capsys.readouterr().err


def test_short_secret_exits_3_without_echoing_it(run_env, capsys):
    assert main(["run"], {**run_env, "API_SECRET_KEY": "tooshort-abc"}) == 3
    err = capsys.readouterr().err
    assert "API_SECRET_KEY is too short: expected at least 32 characters, got 12" in err
    assert "tooshort-abc" not in err


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("REFRESH_CONCURRENCY", "lots", "expected a whole number"),
        ("REFRESH_CONCURRENCY", "0", "between 1 and 1024"),
        ("REFRESH_TIMEOUT", "-1", "between 0.1 and"),
        ("REFRESH_PLATFORMS", "shopify,ebay", "subset of shopify,amazon,all"),
        ("ANALYTICS_API_URL", "localhost:5000", "http:// or https:// URL"),
        ("LOG_FORMAT", "xml", "one of text, json"),
        ("REFRESH_ADAPTIVE", "maybe", "true or false"),
        ("REFRESH_SHARD", "3/2", "0 <= INDEX < COUNT"),
        ("REFRESH_CA_BUNDLE", "/nonexistent/ca.pem", "CA bundle"),
    ],
)
def test_bad_setting_is_named_with_what_is_expected(run_env, capsys, name, value, expected):
    assert main(["run"], {**run_env, name: value}) == 3
    err = capsys.readouterr().err
    assert name in err
    assert expected in err


def test_malformed_database_url_exits_3_without_its_password(run_env, capsys):
    env = {**run_env, "DATABASE_URL": "analytics:S3cretPW@db.example.com:5432/analytics"}
    assert main(["run"], env) == 3
    err = capsys.readouterr().err
    assert "DATABASE_URL is invalid" in err
    assert "S3cretPW" not in err


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"REFRESH_CONCURRENCY": "x", "REFRESH_MAX_ATTEMPTS": "0"})
    assert "REFRESH_CONCURRENCY" in str(info.value)
    assert "REFRESH_MAX_ATTEMPTS" in str(info.value)


def test_secret_file_twin(tmp_path, secret):
    path = tmp_path / "secret"
    path.write_text(secret + "\n")
    assert Settings.from_env({"API_SECRET_KEY_FILE": str(path)}).secret_key == secret


def test_defaults_match_the_contract():
    settings = Settings.from_env({})
    assert settings.endpoint_url == "http://127.0.0.1:5000/api/dashboard/inventory-analytics"
    assert (settings.concurrency, settings.timeout, settings.max_attempts) == (4, 300, 3)
    assert settings.deadline == 6600
    assert settings.platforms == ("shopify", "amazon", "all")
    assert settings.log_file == Path("logs/analytics_refresh_cron.log")
    assert "secret" not in repr(Settings.from_env({"API_SECRET_KEY": "s" * 40}))


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--bogus"],
        ["run", "--client", "not-a-uuid"],
        ["run", "--concurrency", "0"],
        ["run", "--concurrency", "5000"],
        ["run", "--platform", "ebay"],
        ["nonsense"],
        [],
        ["token", "x"],
    ],
)
def test_usage_errors_exit_2(argv, run_env):
    assert main(argv, run_env) == 2


def test_help_exits_0(capsys):
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--deadline" in out
    assert "REFRESH_CONCURRENCY" in out


def test_token_command_prints_a_verifiable_token(run_env, capsys, secret):
    assert main(["token", CLIENT, "--ttl", "60"], run_env) == 0
    token = capsys.readouterr().out.strip()
    claims = api_key_auth.verify_client_token(token, secret, client_id=CLIENT)
    assert claims["exp"] - claims["iat"] == 60
    assert main(["token", CLIENT, "--ttl", "3600"], run_env) == 2  # past the 15-minute cap


def test_dotenv_never_overrides_the_environment(tmp_path, monkeypatch, capsys, secret):
    (tmp_path / ".env").write_text(f"API_SECRET_KEY={secret}\nREFRESH_CONCURRENCY=7\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REFRESH_CONCURRENCY", "lots")
    monkeypatch.delenv("API_SECRET_KEY", raising=False)
    assert main(["token", CLIENT]) == 3  # the real environment's bad value wins
    assert "REFRESH_CONCURRENCY='lots'" in capsys.readouterr().err
    monkeypatch.setenv("REFRESH_CONCURRENCY", "2")
    assert main(["token", CLIENT]) == 0  # the secret came from .env
    assert "API_SECRET_KEY" not in os.environ  # read, never written into the environment


def test_json_log_format_writes_one_object_a_line(run_env, db, backend, capsys):
    connect_clients(db, {CLIENT: ("shopify",)})
    assert main(["run", "--platform", "shopify"], {**run_env, "LOG_FORMAT": "json"}) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert records[0]["message"].startswith("Starting analytics refresh cron job")
    done = [r for r in records if r.get("status") == "succeeded"]
    assert done[0]["client_id"] == CLIENT
    assert done[0]["platform"] == "shopify"
    assert records[-1]["message"].startswith("Results: 1 successful, 0 failed out of 1")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through directory permissions")
def test_unwritable_log_dir_falls_back_to_stderr(run_env, db, backend, capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    connect_clients(db, {CLIENT: ("shopify",)})
    env = {**run_env, "LOG_DIR": str(locked / "logs")}
    assert main(["run", "--platform", "shopify"], env) == 0
    err = capsys.readouterr().err
    assert "cannot write the log file" in err
    assert "Results: 1 successful" in err


def test_log_path_that_is_a_file_falls_back_to_stderr(run_env, db, backend, capsys, tmp_path):
    # Works as root too: a regular file where the log directory should be.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    connect_clients(db, {CLIENT: ("shopify",)})
    env = {**run_env, "LOG_DIR": str(blocker)}
    assert main(["run", "--platform", "shopify"], env) == 0
    err = capsys.readouterr().err
    assert "cannot write the log file" in err
    assert "Results: 1 successful, 0 failed out of 1 total jobs" in err


def test_a_non_utf8_console_loses_no_line(run_env, db, backend, tmp_path):
    # Redirected output on Windows is cp1252, where ✅ cannot be encoded.
    connect_clients(db, {CLIENT: ("shopify",)})
    env = {**os.environ, **run_env, "LOG_FORMAT": "json", "PYTHONIOENCODING": "cp1252"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "analytics_refresh_cron.py"), "--platform", "shopify"],
        env=env,
        cwd=tmp_path,  # as cron runs it: never the checkout, whatever .env it holds
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert b"Logging error" not in done.stderr
    messages = [json.loads(line)["message"] for line in done.stdout.decode("cp1252").splitlines()]
    assert any("SUCCESS - " + CLIENT in message for message in messages)
