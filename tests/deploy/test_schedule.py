"""Every installer and manifest runs the job at the same twelve times a day.

The schedule is documented once, in deploy/SCHEDULE.md. Each scheduler spells it in its
own syntax, so each is parsed by something that understands that syntax (croniter for
cron expressions, systemd-analyze for the timer, the schtasks rules for the .bat) and
compared by the times it yields, not by its text.
"""

from __future__ import annotations

import re
import subprocess
from datetime import datetime, timedelta

import pytest
import yaml
from croniter import croniter

from tests.deploy.conftest import ROOT, require_tool, run_setup

DAY = datetime(2024, 3, 31)  # any day; times are compared as UTC wall-clock times


def schedule_doc() -> str:
    return (ROOT / "deploy" / "SCHEDULE.md").read_text(encoding="utf-8")


def canonical() -> str:
    match = re.search(r"^\| expression \| `([^`]+)` \|$", schedule_doc(), re.M)
    assert match, "deploy/SCHEDULE.md lost its '| expression | `...` |' row"
    return match[1]


def day_of(expression: str) -> list[datetime]:
    """The times a cron expression fires during DAY."""
    it = croniter(expression, DAY - timedelta(seconds=1))
    times = []
    while (t := it.get_next(datetime)) < DAY + timedelta(days=1):
        times.append(t)
    return times


def expected() -> list[datetime]:
    return day_of(canonical())


def test_the_documented_expression_fires_at_the_documented_times():
    listed = re.search(r"^\| runs at \| (.+) \|$", schedule_doc(), re.M)[1]
    assert [t.strftime("%H:%M") for t in expected()] == listed.split(", ")
    assert len(expected()) == 12
    assert re.search(r"^\| time zone \| `UTC` \|$", schedule_doc(), re.M)


def cron_lines(text: str) -> list[str]:
    """The job lines of a crontab: not comments, blank lines or VAR=value settings."""
    return [
        line
        for line in text.splitlines()
        if line.strip()
        and not line.lstrip().startswith("#")
        and not re.match(r"^\s*[A-Za-z_]+\s*=", line)
    ]


def fields(line: str) -> str:
    return " ".join(line.split()[:5])


def test_cron_setup_sh_installs_the_schedule(project):
    default = re.search(r"^DEFAULT_SCHEDULE='([^']+)'$", (ROOT / "cron_setup.sh").read_text(), re.M)
    assert default, "cron_setup.sh lost its DEFAULT_SCHEDULE='...' line"
    printed = run_setup(project, "--print")
    assert printed.returncode == 0, printed.stderr

    assert day_of(default[1]) == expected()
    assert day_of(fields(printed.stdout)) == expected()


def test_docker_cron_runs_on_the_schedule():
    [line] = cron_lines((ROOT / "docker-cron").read_text(encoding="utf-8"))
    assert day_of(fields(line)) == expected()
    assert "analytics_refresh_cron.py" in line


def test_kubernetes_cronjob_runs_on_the_schedule_in_utc():
    job = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "cronjob.yaml").read_text())
    assert day_of(job["spec"]["schedule"]) == expected()
    assert job["spec"]["timeZone"] in ("Etc/UTC", "UTC")


def test_render_cron_job_runs_on_the_schedule():
    blueprint = yaml.safe_load((ROOT / "render.yaml").read_text())
    [cron] = [s for s in blueprint["services"] if s["type"] == "cron"]
    assert day_of(cron["schedule"]) == expected()


def test_systemd_timer_elapses_at_the_same_times():
    require_tool("systemd-analyze", "systemd")
    timer = (ROOT / "deploy" / "systemd" / "analytics-refresh.timer").read_text()
    [calendar] = re.findall(r"^OnCalendar=(.+)$", timer, re.M)

    result = subprocess.run(
        [
            "systemd-analyze",
            "calendar",
            "--iterations=12",
            f"--base-time={(DAY - timedelta(seconds=1)):%Y-%m-%d %H:%M:%S} UTC",
            calendar,
        ],
        env={"TZ": "UTC", "PATH": "/usr/bin:/bin", "SYSTEMD_PAGER": "cat"},
        capture_output=True,
        text=True,
        check=True,
    )

    elapses = re.findall(
        r"(?:Next elapse|Iter\. #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", result.stdout
    )
    assert [datetime.fromisoformat(e) for e in elapses] == expected(), result.stdout


def schtasks_times(hourly_every: int, start: str) -> list[datetime]:
    """The times a /SC HOURLY /MO n /ST hh:mm task runs on one day: from /ST, every n hours."""
    hour, minute = map(int, start.split(":"))
    first = DAY.replace(hour=hour, minute=minute)
    return [first + timedelta(hours=k * hourly_every) for k in range(24 // hourly_every)]


def test_windows_task_runs_at_the_same_times():
    bat = (ROOT / "cron_setup.bat").read_text(encoding="ascii")
    # The default schedule, set before the options are read (/every replaces it).
    default = re.search(r'^set "SCHEDULE=/SC HOURLY /MO (\d+) /ST (\d\d:\d\d)"', bat, re.M)
    assert default, 'expected set "SCHEDULE=/SC HOURLY /MO n /ST hh:mm" in cron_setup.bat'
    assert schtasks_times(int(default[1]), default[2]) == expected()
    creates = [line for line in bat.splitlines() if re.match(r"\s*schtasks /Create ", line)]
    assert creates, "cron_setup.bat no longer runs schtasks /Create"
    for create in creates:
        assert " !SCHEDULE! " in create, create
        assert "/F" in create.split()  # replaces the task instead of failing on a second run
    assert len(re.findall(r'^set "SCHEDULE=', bat, re.M)) == 2  # the default and /every


@pytest.mark.parametrize(
    "path",
    ["cron_setup.sh", "cron_setup.bat", "docker-cron", "render.yaml", "compose.yaml"],
)
def test_no_other_schedule_hides_in_the_repository_files(path):
    """A second, stale expression in a comment or an example would mislead a reader."""
    text = (ROOT / path).read_text(encoding="utf-8")
    found = set(re.findall(r"(?<![\w*/])((?:[\d*/,-]+ ){4}[\d*/,-]+)(?= )", text))
    assert found <= {canonical()}, found
