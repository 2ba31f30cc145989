"""cron_setup.sh against the real crontab command: idempotent, careful with other lines.

The crontab it edits is a throwaway user's (tests/deploy/conftest.py: cron_user), never
the crontab of whoever runs the suite; without root these tests skip and say why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.deploy.conftest import ROOT, Crontab, marker, our_lines, run_setup

# Lines a user may already have, each a way a careless rewrite would change something:
# blank lines, trailing blanks, tabs, a literal %, a variable, non-ASCII text, and the
# line of another checkout of this project (which must stay).
OTHER_LINES = (
    b"# m h dom mon dow command\n"
    b"MAILTO=ops@example.com\n"
    b"\n"
    b"*/5 * * * * /usr/bin/backup --tag 'nightly'   \n"
    b"30 3 * * 1\t/usr/bin/report \\%Y \xc3\xa9t\xc3\xa9\n"
    b"0 */2 * * * cd /srv/other && ./run # analytics-refresh-cron: /srv/other\n"
    b"\n"
)


def without_ours(content: bytes, project: Path) -> bytes:
    lines = content.splitlines(keepends=True)
    return b"".join(
        line for line in lines if not line.rstrip(b"\n").endswith(marker(project).encode())
    )


def test_installs_one_line_that_runs_the_venv_python_from_the_project(user_crontab, project):
    user_crontab.write(OTHER_LINES)

    result = run_setup(project)

    assert result.returncode == 0, result.stderr
    [line] = our_lines(user_crontab.read(), project)
    quoted_dir = str(project.resolve()).replace("'", "'\\''").replace("%", "\\%")
    assert line.startswith("0 */2 * * * ")
    assert f"cd '{quoted_dir}' && " in line
    assert f" '{quoted_dir}/.venv/bin/python' analytics_refresh_cron.py" in line
    assert (project / "logs").is_dir()
    # It says what it did and how to look at it.
    assert "crontab -l" in result.stdout
    assert "tail -f" in result.stdout
    assert "logs/analytics_refresh_cron.log" in result.stdout


def test_installing_twice_leaves_one_line_and_every_other_line_byte_for_byte(user_crontab, project):
    user_crontab.write(OTHER_LINES)

    assert run_setup(project).returncode == 0
    first = user_crontab.read()
    assert run_setup(project).returncode == 0
    second = user_crontab.read()

    assert second == first
    assert len(our_lines(second, project)) == 1
    assert without_ours(second, project) == OTHER_LINES


def test_a_new_schedule_replaces_the_line(user_crontab, project):
    user_crontab.write(OTHER_LINES)
    assert run_setup(project).returncode == 0

    assert run_setup(project, "--schedule", "15 1 * * *").returncode == 0

    content = user_crontab.read()
    [line] = our_lines(content, project)
    assert line.startswith("15 1 * * * export REFRESH_INTERVAL_MINUTES=1440 && cd ")
    assert without_ours(content, project) == OTHER_LINES


def test_uninstall_removes_only_this_projects_line(user_crontab, project):
    user_crontab.write(OTHER_LINES)
    assert run_setup(project).returncode == 0

    result = run_setup(project, "--uninstall")

    assert result.returncode == 0, result.stderr
    assert user_crontab.read() == OTHER_LINES
    again = run_setup(project, "--uninstall")
    assert again.returncode == 0
    assert "nothing to remove" in again.stdout
    assert user_crontab.read() == OTHER_LINES


def test_uninstall_leaves_no_crontab_when_there_was_none(user_crontab, project):
    user_crontab.write(None)
    assert run_setup(project).returncode == 0
    assert user_crontab.read() is not None

    assert run_setup(project, "--uninstall").returncode == 0

    assert user_crontab.read() is None


def test_print_shows_the_line_and_changes_nothing(user_crontab, project):
    user_crontab.write(OTHER_LINES)

    printed = run_setup(project, "--print")

    assert printed.returncode == 0, printed.stderr
    assert user_crontab.read() == OTHER_LINES
    assert not (project / "logs").exists()
    # The printed line is exactly the one an install writes.
    assert run_setup(project).returncode == 0
    assert our_lines(user_crontab.read(), project) == [printed.stdout.rstrip("\n")]


@pytest.mark.parametrize(
    ("missing", "fix"),
    [
        (".venv", "python3 -m venv .venv"),
        (".env", "cp .env.example .env"),
    ],
)
def test_refuses_without_venv_or_env_and_says_how_to_fix_it(user_crontab, project, missing, fix):
    user_crontab.write(OTHER_LINES)
    (project / missing).unlink()

    result = run_setup(project)

    assert result.returncode == 1
    assert fix in result.stderr
    assert user_crontab.read() == OTHER_LINES


@pytest.mark.parametrize("schedule", ["* * *", "0 */2 * * * *", "0 %2 * * *", "0 2; * * *"])
def test_rejects_a_malformed_schedule(user_crontab, project, schedule):
    user_crontab.write(OTHER_LINES)

    result = run_setup(project, "--schedule", schedule)

    assert result.returncode == 2
    assert user_crontab.read() == OTHER_LINES


def test_rejects_an_unknown_option(project):
    result = run_setup(project, "--frobnicate")

    assert result.returncode == 2
    assert "unknown option: --frobnicate" in result.stderr


def test_user_option_edits_that_users_crontab_only(cron_user, project):
    """Root installs for the throwaway user; root's own crontab is only ever read."""
    other = Crontab(cron_user.name)
    other.write(OTHER_LINES)
    mine = Crontab()
    before = mine.read()
    try:
        assert run_setup(project, "--user", cron_user.name).returncode == 0
        content = other.read()
        assert len(our_lines(content, project)) == 1
        assert without_ours(content, project) == OTHER_LINES
        assert mine.read() == before
        # The job runs as that user, who must be able to write the log.
        assert (project / "logs").stat().st_uid == cron_user.uid

        assert run_setup(project, "--uninstall", "--user", cron_user.name).returncode == 0
        assert other.read() == OTHER_LINES
    finally:
        other.write(None)


PROBE = """\
import json, os, sys
import analytics_refresh
with open("probe.json", "w") as out:
    json.dump({"cwd": os.getcwd(), "prefix": sys.prefix, "argv": sys.argv}, out)
print("probe ran")
"""


def cron_command(line: str) -> str:
    """The shell command cron runs for a crontab line: cron's % rules applied."""
    command = line.split(None, 5)[5]
    out, i = [], 0
    while i < len(command):
        if command.startswith("\\%", i):
            out.append("%")
            i += 2
        else:
            assert command[i] != "%", f"unescaped % would cut the command short: {line}"
            out.append(command[i])
            i += 1
    return "".join(out)


def test_the_line_works_in_crons_bare_environment(project, tmp_path):
    """Run the printed line the way cron does: /bin/sh, from $HOME, with cron's 4 variables."""
    (project / "analytics_refresh_cron.py").write_text(PROBE, encoding="utf-8")
    (project / "logs").mkdir()
    line = run_setup(project, "--print").stdout.strip()
    home = tmp_path / "home"
    home.mkdir()

    subprocess.run(
        ["/bin/sh", "-c", cron_command(line)],
        cwd=home,
        env={"HOME": str(home), "LOGNAME": "root", "PATH": "/usr/bin:/bin", "SHELL": "/bin/sh"},
        check=True,
        timeout=60,
    )

    probe = json.loads((project / "probe.json").read_text(encoding="utf-8"))
    assert Path(probe["cwd"]).resolve() == project.resolve()
    # The project's venv ran it (it imported the package), not whatever python is on PATH.
    assert Path(probe["prefix"]).resolve() == Path(sys.prefix).resolve()
    assert probe["argv"] == ["analytics_refresh_cron.py"]
    # Output that is not the runner's log lands in logs/, not in cron's mail.
    assert (project / "logs" / "cron_output.log").read_text(encoding="utf-8") == "probe ran\n"


def test_each_run_gets_an_outer_limit_of_its_deadline_plus_a_margin(project):
    (project / ".env").write_text("REFRESH_DEADLINE=100\n", encoding="utf-8")
    line = run_setup(project, "--print").stdout.strip()
    limit = "timeout' --kill-after=60 400 '"  # 100 s + 300 s, then the venv's python
    assert limit in line, line
    assert line.index(limit) < line.index("/.venv/bin/python' analytics_refresh_cron.py")


def test_the_outer_limit_ends_a_run_that_hangs(project, tmp_path):
    """A hung run is stopped by the line itself, in cron's bare environment."""
    (project / "analytics_refresh_cron.py").write_text(
        "import time\nprint('hung', flush=True)\ntime.sleep(600)\n", encoding="utf-8"
    )
    (project / "logs").mkdir()
    (project / ".env").write_text("REFRESH_DEADLINE=1\n", encoding="utf-8")
    line = run_setup(project, "--print").stdout.strip()
    assert "--kill-after=60 301 " in line
    command = cron_command(line).replace("--kill-after=60 301 ", "--kill-after=5 2 ")
    home = tmp_path / "home"
    home.mkdir()
    started = time.monotonic()
    result = subprocess.run(
        ["/bin/sh", "-c", command],
        cwd=home,
        env={"HOME": str(home), "LOGNAME": "root", "PATH": "/usr/bin:/bin", "SHELL": "/bin/sh"},
        timeout=60,
        check=False,
    )
    assert time.monotonic() - started < 10
    assert result.returncode == 124  # timeout's code: the limit ended it
    assert (project / "logs" / "cron_output.log").read_text(encoding="utf-8") == "hung\n"


def test_the_repository_copy_is_executable():
    assert os.access(ROOT / "cron_setup.sh", os.X_OK)
    assert os.access(ROOT / "scripts" / "install-test-tools.sh", os.X_OK)


# -- the schedule's interval, and a short schedule without a change query ----------------------
@pytest.mark.parametrize(
    ("schedule", "interval"),
    [("0 */2 * * *", 120), ("*/10 * * * *", 10), ("5,35 * * * *", 30), ("0 6-18/3 * * *", 720)],
)
def test_the_line_sets_the_schedules_interval(project, schedule, interval):
    printed = run_setup(project, "--print", "--schedule", schedule)
    assert printed.returncode == 0, printed.stderr
    assert f" export REFRESH_INTERVAL_MINUTES={interval} && cd " in printed.stdout


def test_a_short_schedule_without_a_change_query_is_warned_of(project):
    printed = run_setup(project, "--print", "--schedule", "*/10 * * * *")
    assert printed.returncode == 0
    assert "Warning: a run every 10 min but no change query is set" in printed.stderr
    assert "12 times the load" in printed.stderr
    assert "set REFRESH_CHANGE_SQL_FILE" in printed.stderr


def test_a_short_schedule_with_a_change_query_in_dotenv_is_quiet(project):
    (project / ".env").write_text(
        "REFRESH_CHANGE_SQL_FILE=dashboard_api/change_keys.sql\n", encoding="utf-8"
    )
    (project / "dashboard_api").mkdir()
    (project / "dashboard_api" / "change_keys.sql").write_text("SELECT 1", encoding="utf-8")
    printed = run_setup(project, "--print", "--schedule", "*/10 * * * *")
    assert printed.returncode == 0
    assert printed.stderr == ""


def test_the_default_schedule_needs_no_change_query(project):
    printed = run_setup(project, "--print")
    assert (printed.returncode, printed.stderr) == (0, "")


def test_an_interval_in_dotenv_that_differs_from_the_schedule_is_named(project):
    (project / ".env").write_text(
        "REFRESH_INTERVAL_MINUTES=120\nREFRESH_CHANGE_SQL=SELECT 1\n", encoding="utf-8"
    )
    printed = run_setup(project, "--print", "--schedule", "*/15 * * * *")
    assert "REFRESH_INTERVAL_MINUTES=120 in .env or the environment" in printed.stderr
    assert "set REFRESH_INTERVAL_MINUTES=15 in .env" in printed.stderr


def test_installing_sets_the_interval_in_dotenv_too(user_crontab, project):
    (project / ".env").write_text(
        "LOG_LEVEL=INFO\nREFRESH_INTERVAL_MINUTES=120\nREFRESH_CHANGE_SQL=SELECT 1\n",
        encoding="utf-8",
    )
    result = run_setup(project, "--schedule", "*/10 * * * *")
    assert result.returncode == 0, result.stderr
    text = (project / ".env").read_text(encoding="utf-8")
    assert text == "LOG_LEVEL=INFO\nREFRESH_INTERVAL_MINUTES=10\nREFRESH_CHANGE_SQL=SELECT 1\n"
    assert "REFRESH_INTERVAL_MINUTES=10 in" in result.stderr
    assert "Warning: REFRESH_INTERVAL" not in result.stderr  # .env and the line now agree
    again = run_setup(project, "--schedule", "*/10 * * * *").stderr
    assert "REFRESH_INTERVAL_MINUTES=10 in" not in again  # nothing left to change


def test_print_leaves_dotenv_alone(project):
    before = (project / ".env").read_bytes()
    assert run_setup(project, "--print", "--schedule", "*/10 * * * *").returncode == 0
    assert (project / ".env").read_bytes() == before


def test_a_deadline_in_dotenv_longer_than_the_schedule_is_warned_of(project):
    (project / ".env").write_text(
        "REFRESH_DEADLINE=6600\nREFRESH_CHANGE_SQL=SELECT 1\n", encoding="utf-8"
    )
    printed = run_setup(project, "--print", "--schedule", "*/10 * * * *")
    assert printed.returncode == 0
    assert "REFRESH_DEADLINE=6600 s is longer than the schedule's interval" in printed.stderr
