"""A flag and its environment variable accept and refuse the same values.

A refused flag is a usage error (exit 2), a refused variable a configuration error (exit
3), and a value one of them accepts the other accepts too, meaning the same thing. Each
case goes through ``main(argv, environ)`` as a user's command line and environment do.
"""

from __future__ import annotations

import uuid

import psycopg2
import psycopg2.extensions
import pytest

from analytics_refresh.cli import main
from analytics_refresh.config.settings import Settings
from analytics_refresh.ops.options import add_run_options, apply_run_options
from tests.conftest import SECRET, connect_clients, log_lines
from tests.runs import ALICE, BOB, CAROL

# Four clients: with --shard 1/4 (or 3/4, ...) each shard holds a different one.
CLIENTS = {
    ALICE: ("shopify", "amazon"),
    BOB: ("shopify",),
    CAROL: ("amazon",),
    "7c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f": ("shopify",),
}


@pytest.fixture(scope="module")
def shared_db_url(pg_server_url, template_db):
    """One database for the module, with connected clients: dry runs only read it."""
    name = f"ar_settings_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(pg_server_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    url = psycopg2.extensions.make_dsn(pg_server_url, dbname=name)
    conn = psycopg2.connect(url)
    conn.autocommit = True
    connect_clients(conn, CLIENTS)
    conn.close()
    yield url
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture
def env(shared_db_url, tmp_path) -> dict:
    return {
        "DATABASE_URL": shared_db_url,
        "API_SECRET_KEY": SECRET,
        "LOG_DIR": str(tmp_path / "logs"),
        "ANALYTICS_API_URL": "http://127.0.0.1:1",  # a dry run calls nothing
    }


def dry_run(argv: list[str], environ: dict, capsys) -> tuple[int, list[str]]:
    """Return the exit code of a dry run and the plan it printed."""
    code = main(["run", "--dry-run", *argv], environ)
    return code, capsys.readouterr().out.splitlines()


def settings_from_flag(flag: list[str], environ: dict) -> Settings:
    """The settings a run gets from ``flag`` on top of ``environ``."""
    from analytics_refresh.ops.options import Parser

    parser = Parser(prog="run")
    add_run_options(parser)
    return apply_run_options(Settings.from_env(environ), parser.parse_args(flag))


# -- run flags and their variables --------------------------------------------------------------
PAIRS = {
    "--concurrency": ("REFRESH_CONCURRENCY", "concurrency"),
    "--deadline": ("REFRESH_DEADLINE", "deadline"),
    "--shard": ("REFRESH_SHARD", "shard"),
    "--platform": ("REFRESH_PLATFORMS", "platforms"),
}
ACCEPTED = [
    ("--concurrency", "1"),
    ("--concurrency", "4"),
    ("--concurrency", "1024"),
    ("--concurrency", " 8 "),
    ("--concurrency", "+16"),
    ("--concurrency", "007"),
    ("--deadline", "1"),
    ("--deadline", "1.5"),
    ("--deadline", "30"),
    ("--deadline", "6600"),
    ("--deadline", "1e3"),
    ("--deadline", "604800"),
    ("--shard", "0/1"),
    ("--shard", "1/4"),
    ("--shard", "3/4"),
    ("--shard", " 2 / 4 "),
    ("--platform", "shopify"),
    ("--platform", "AMAZON"),
    ("--platform", " all "),
    ("--platform", "shopify,amazon"),
    ("--platform", "all,shopify,amazon"),
]
REFUSED = [
    ("--concurrency", "0"),
    ("--concurrency", "1025"),
    ("--concurrency", "-1"),
    ("--concurrency", "lots"),
    ("--concurrency", "4.5"),
    ("--concurrency", "1e3"),
    ("--concurrency", "0x10"),
    ("--deadline", "0"),
    ("--deadline", "0.5"),
    ("--deadline", "-5"),
    ("--deadline", "soon"),
    ("--deadline", "nan"),
    ("--deadline", "inf"),
    ("--deadline", "604801"),
    ("--deadline", "10s"),
    ("--shard", "4/4"),
    ("--shard", "0/0"),
    ("--shard", "1"),
    ("--shard", "a/b"),
    ("--shard", "-1/4"),
    ("--shard", "1/2/3"),
    ("--shard", "1.0/4"),
    ("--platform", "ebay"),
    ("--platform", "shopify,ebay"),
    ("--platform", ","),
    ("--platform", "shop ify"),
]


@pytest.mark.parametrize(("flag", "value"), ACCEPTED)
def test_a_value_the_flag_accepts_the_variable_accepts_alike(env, capsys, flag, value):
    variable, field = PAIRS[flag]
    by_flag, plan_by_flag = dry_run([f"{flag}={value}"], env, capsys)
    by_variable, plan_by_variable = dry_run([], {**env, variable: value}, capsys)
    assert (by_flag, by_variable) == (0, 0)
    # Both mean the same thing: the same settings and the same plan.
    assert getattr(settings_from_flag([f"{flag}={value}"], env), field) == getattr(
        Settings.from_env({**env, variable: value}), field
    )
    assert plan_by_flag == plan_by_variable
    assert plan_by_flag[-1].endswith("jobs planned, none called")


@pytest.mark.parametrize(("flag", "value"), REFUSED)
def test_a_value_the_flag_refuses_the_variable_refuses_alike(env, capsys, flag, value):
    variable, _ = PAIRS[flag]
    assert main(["run", "--dry-run", f"{flag}={value}"], env) == 2
    flag_error = capsys.readouterr().err
    assert main(["run", "--dry-run"], {**env, variable: value}) == 3
    variable_error = capsys.readouterr().err
    # Each names the variable and says what is expected, in the same words.
    expected = flag_error.split(f"{flag}: ", 1)[1].split(f" (as {variable})")[0]
    assert expected.startswith("expected ")
    assert variable in flag_error
    assert f"{variable}={value.strip()!r} is invalid: {expected}" in variable_error


def test_a_flag_overrides_its_variable(env, capsys):
    code, plan = dry_run(
        ["--platform", "amazon", "--shard", "0/1"], {**env, "REFRESH_SHARD": "1/4"}, capsys
    )
    assert code == 0
    assert plan[-1] == "DRY RUN - 2 jobs planned, none called"  # ALICE and CAROL, amazon


def test_the_shard_selects_the_same_clients_either_way(env, capsys):
    seen = set()
    for index in range(4):
        _, by_flag = dry_run([f"--shard={index}/4"], env, capsys)
        _, by_variable = dry_run([], {**env, "REFRESH_SHARD": f"{index}/4"}, capsys)
        assert by_flag == by_variable
        seen.update(line for line in by_flag if "would refresh" in line)
    assert len(seen) == 9  # every job of the unsharded plan, each in exactly one shard


def test_help_names_each_flags_variable(capsys):
    assert main(["run", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for flag, (variable, _) in PAIRS.items():
        assert flag in out
        assert f"env {variable}" in out
    assert "env LOG_LEVEL=DEBUG" in out
    assert "env LOG_LEVEL=WARNING" in out


# -- -v / -q and LOG_LEVEL ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flag", "level"),
    [("-v", "DEBUG"), ("--verbose", "debug"), ("-q", "WARNING"), ("--quiet", "Warning")],
)
def test_verbosity_flags_and_log_level_log_the_same_lines(env, tmp_path, capsys, flag, level):
    by_flag = {**env, "LOG_DIR": str(tmp_path / "flag")}
    by_variable = {**env, "LOG_DIR": str(tmp_path / "variable"), "LOG_LEVEL": level}
    assert main(["run", "--dry-run", flag], by_flag) == 0
    assert main(["run", "--dry-run"], by_variable) == 0

    def shape(lines: list[str]) -> list[str]:
        return [line.split(" [")[0] for line in lines]

    flag_lines = shape(log_lines(by_flag)) if (tmp_path / "flag").exists() else []
    assert flag_lines == shape(log_lines(by_variable))
    starting = any(line.startswith("Starting analytics refresh") for line in flag_lines)
    assert starting is (level.upper() == "DEBUG")


@pytest.mark.parametrize("level", ["debug", "INFO", "Warning", "error", " INFO "])
def test_log_level_is_accepted_in_any_case(env, capsys, level):
    assert dry_run([], {**env, "LOG_LEVEL": level}, capsys)[0] == 0


@pytest.mark.parametrize("level", ["verbose", "5", "WARN", "TRACE", "info,debug"])
def test_an_unknown_log_level_is_refused_by_name(env, capsys, level):
    assert main(["run", "--dry-run"], {**env, "LOG_LEVEL": level}) == 3
    err = capsys.readouterr().err
    assert f"LOG_LEVEL={level!r} is invalid: expected one of DEBUG, INFO, WARNING, ERROR" in err


def test_verbose_and_quiet_together_are_a_usage_error(env):
    assert main(["run", "--dry-run", "-v", "-q"], env) == 2


# -- db prune --days and REFRESH_HISTORY_DAYS ----------------------------------------------------
@pytest.mark.parametrize("days", ["0", "1", "30", " 7 ", "100000"])
def test_prune_days_are_accepted_by_flag_and_variable_alike(env, capsys, days):
    assert main(["db", "prune", f"--days={days}"], env) == 0
    by_flag = capsys.readouterr().out
    assert main(["db", "prune"], {**env, "REFRESH_HISTORY_DAYS": days}) == 0
    by_variable = capsys.readouterr().out
    assert by_flag == by_variable
    if days.strip() == "0":
        assert by_flag.startswith("REFRESH_HISTORY_DAYS is 0: the whole history is kept")
    else:
        assert by_flag.startswith("Pruned ")
        assert f"({days.strip()} days kept)" in by_flag


@pytest.mark.parametrize("days", ["-1", "1.5", "a month", "100001", "1e2", "30d"])
def test_prune_days_are_refused_by_flag_and_variable_alike(env, capsys, days):
    assert main(["db", "prune", f"--days={days}"], env) == 2
    assert "REFRESH_HISTORY_DAYS" in capsys.readouterr().err
    assert main(["db", "prune"], {**env, "REFRESH_HISTORY_DAYS": days}) == 3
    assert f"REFRESH_HISTORY_DAYS={days!r} is invalid" in capsys.readouterr().err


# -- booleans -----------------------------------------------------------------------------------
TRUE_WORDS = ["1", "true", "TRUE", "True", "yes", "YES", "Yes", "on", "ON", "On", " yes "]
FALSE_WORDS = ["0", "false", "FALSE", "False", "no", "NO", "No", "off", "OFF", "Off", " off "]


@pytest.mark.parametrize(
    ("word", "value"), [(w, True) for w in TRUE_WORDS] + [(w, False) for w in FALSE_WORDS]
)
def test_booleans_accept_every_yes_and_no_word_in_any_case(env, capsys, word, value):
    assert Settings.from_env({"REFRESH_ADAPTIVE": word}).adaptive is value
    assert dry_run([], {**env, "REFRESH_ADAPTIVE": word}, capsys)[0] == 0


@pytest.mark.parametrize("word", ["maybe", "2", "y", "n", "enabled", "t", "none"])
def test_booleans_refuse_other_words(env, capsys, word):
    assert main(["run", "--dry-run"], {**env, "REFRESH_ADAPTIVE": word}) == 3
    assert f"REFRESH_ADAPTIVE={word!r} is invalid: expected true or false" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("word", [*TRUE_WORDS, *FALSE_WORDS, "maybe", "2"])
def test_the_api_reads_booleans_as_the_runner_does(word):
    from analytics_refresh.errors import ConfigError
    from dashboard_api import config

    try:
        runner = Settings.from_env({"REFRESH_ADAPTIVE": word}).adaptive
    except ConfigError:
        runner = None
    try:
        api = config.load({"DATABASE_URL": "x", "API_SECRET_KEY": SECRET, "TESTING": word})
    except config.ConfigError:
        api = None
    assert (api.testing if api else None) is runner
