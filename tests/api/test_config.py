"""The API's settings: injected in tests, read from the environment and .env in production.

No test here reads the developer's environment or .env: mappings are passed in, and the
one path that must read the process environment (``create_app()`` under gunicorn) runs
in a child process with an environment and a working directory of the test's making.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dashboard_api import config, create_app, demo
from dashboard_api.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DOWN_URL = "postgresql://postgres@127.0.0.1:9/nothing?connect_timeout=2"
HOSTILE_DOTENV = """\
REFRESH_CONCURRENCY=lots
CACHE_TTL=abc
API_MAX_CONCURRENT_COMPUTES=zero
TESTING=maybe
API_SECRET_KEY=short
DATABASE_URL=postgresql://nobody@127.0.0.1:9/from-dotenv
"""


def child_env(**values: str) -> dict[str, str]:
    """A minimal environment for a child Python: nothing of the developer's settings."""
    return {"PATH": os.defpath, "PYTHONPATH": str(ROOT), "LANG": "C.UTF-8", **values}


def app_settings_in_child(cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Build ``create_app()`` as gunicorn does, in ``cwd``; print its settings as JSON."""
    code = (
        "import json, dashboard_api;"
        "app = dashboard_api.create_app();"
        "print(json.dumps({k: app.config[k] for k in"
        " ('CACHE_TTL', 'API_MAX_CONCURRENT_COMPUTES', 'TESTING')}))"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("word", "value"),
    [
        *[(w, True) for w in ("1", "true", "yes", "on", "TRUE", " On ", "Yes")],
        *[(w, False) for w in ("0", "false", "no", "off", "FALSE", "Off", " NO ")],
    ],
)
def test_booleans_take_the_runners_words(secret, word, value):
    conf = config.load({"DATABASE_URL": DOWN_URL, "API_SECRET_KEY": secret, "TESTING": word})
    assert conf.testing is value


@pytest.mark.parametrize("word", ["maybe", "2", "y", "enabled", "truee", "nein"])
def test_other_boolean_words_are_refused_by_name(secret, word):
    with pytest.raises(ConfigError, match="TESTING") as refused:
        config.load({"DATABASE_URL": DOWN_URL, "API_SECRET_KEY": secret, "TESTING": word})
    assert "0/false/no/off" in str(refused.value)


@pytest.mark.parametrize("raw", ["١٢", "9" * 5000, "-5", "1.5", "0x10", "12 000"])
def test_numbers_are_ascii_digits_only(secret, raw):
    with pytest.raises(ConfigError, match="CACHE_TTL"):
        config.load({"DATABASE_URL": DOWN_URL, "API_SECRET_KEY": secret, "CACHE_TTL": raw})


def test_dotenv_counts_below_the_environment_and_leaves_it_alone(tmp_path, secret):
    (tmp_path / "secret").write_text(secret + "\n")
    (tmp_path / ".env").write_text(
        "CACHE_TTL=60\nDATABASE_URL=postgresql:///from-dotenv\nAPI_TEST_ONLY_MARKER=1\n"
    )
    base = {
        "DATABASE_URL": "postgresql:///from-environment",
        "API_SECRET_KEY_FILE": str(tmp_path / "secret"),
    }

    merged = config.process_environ(cwd=tmp_path, base=base)
    conf = config.load(config.from_environ(merged))

    # A Kubernetes or Docker secret file ends in a newline; the runner strips it, so must
    # the API, or every token would fail to verify.
    assert conf.secret_key == secret
    assert conf.cache_ttl == 60
    assert conf.database_url == "postgresql:///from-environment"  # .env never overrides
    assert "API_TEST_ONLY_MARKER" not in os.environ  # read, never loaded into the process


def test_a_dotenv_line_that_cannot_be_parsed_names_the_file_and_line(tmp_path):
    (tmp_path / ".env").write_text('CACHE_TTL=60\nthis is not a setting\nX="open\n')
    with pytest.raises(ConfigError) as bad:
        config.process_environ(cwd=tmp_path, base={})
    message = str(bad.value)
    assert str(tmp_path / ".env") in message
    assert "line 2, 3" in message


def test_no_dotenv_is_no_settings(tmp_path):
    assert config.process_environ(cwd=tmp_path, base={"A": "1"}) == {"A": "1"}


def test_injected_settings_ignore_a_hostile_dotenv(tmp_path, monkeypatch, secret):
    # What every other API test relies on: create_app(mapping) reads nothing else.
    (tmp_path / ".env").write_text(HOSTILE_DOTENV)
    monkeypatch.chdir(tmp_path)
    app = create_app({"DATABASE_URL": DOWN_URL, "API_SECRET_KEY": secret, "CACHE_TTL": "120"})
    assert app.config["CACHE_TTL"] == 120
    assert app.config["API_MAX_CONCURRENT_COMPUTES"] == (os.cpu_count() or 1)


def test_create_app_without_a_mapping_reads_the_environment_over_dotenv(tmp_path, secret):
    (tmp_path / ".env").write_text("CACHE_TTL=60\nTESTING=on\nAPI_MAX_CONCURRENT_COMPUTES=9\n")
    env = child_env(DATABASE_URL=DOWN_URL, API_SECRET_KEY=secret, API_MAX_CONCURRENT_COMPUTES="3")

    done = app_settings_in_child(tmp_path, env)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "CACHE_TTL": 60,
        "API_MAX_CONCURRENT_COMPUTES": 3,
        "TESTING": True,
    }


def test_create_app_without_a_mapping_names_a_bad_dotenv_value(tmp_path, secret):
    (tmp_path / ".env").write_text(HOSTILE_DOTENV)
    done = app_settings_in_child(tmp_path, child_env(API_SECRET_KEY=secret))
    assert done.returncode != 0
    for name in ("CACHE_TTL", "API_MAX_CONCURRENT_COMPUTES", "TESTING"):
        assert name in done.stderr
    assert secret not in done.stderr


def test_server_settings_come_from_port_and_web_concurrency():
    assert config.server_config({}) == config.ServerConfig("0.0.0.0:5000", 2)
    assert config.server_config({"PORT": "10000", "WEB_CONCURRENCY": "5"}) == (
        config.ServerConfig("0.0.0.0:10000", 5)
    )
    with pytest.raises(ConfigError) as bad:
        config.server_config({"PORT": "70000", "WEB_CONCURRENCY": "lots"})
    assert "PORT" in str(bad.value)
    assert "WEB_CONCURRENCY" in str(bad.value)


def test_demo_loader_takes_its_database_from_the_given_environment(empty_db_url, capsys):
    assert demo.main(["--clients", "1", "--skus", "3", "--orders-per-day", "1"],
                     environ={"DATABASE_URL": empty_db_url}) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "1 connected demo clients" in out
    assert demo.client_id(0) in out
