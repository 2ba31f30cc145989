"""Every installer accepts the 10-minute schedule that change detection runs on.

deploy/SCHEDULE.md's second section gives each scheduler's way to say `*/10 * * * *`;
each way is taken from there, applied as a user would, and parsed by something that
understands that scheduler's syntax.
"""

from __future__ import annotations

import json
import re
import subprocess
from datetime import timedelta

import pytest
import yaml

from tests.deploy.conftest import ROOT, require_tool, run_setup
from tests.deploy.test_deploy_lint import fake_root, verify
from tests.deploy.test_schedule import DAY, day_of, fields, schtasks_times


def section() -> str:
    text = (ROOT / "deploy" / "SCHEDULE.md").read_text(encoding="utf-8")
    return text.split("## A shorter schedule", 1)[1]


def short_expression() -> str:
    return re.search(r"^\| short expression \| `([^`]+)` \|$", section(), re.M)[1]


def way(scheduler: str) -> str:
    """The `how` cell of a scheduler's row."""
    return re.search(rf"^\| {re.escape(scheduler)}[^|]* \| (.+) \|$", section(), re.M)[1]


def spans(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


def expected() -> list:
    return day_of(short_expression())


def test_the_short_schedule_runs_144_times_a_day_at_the_documented_times():
    assert len(expected()) == 144
    assert expected()[:3] == [DAY, DAY + timedelta(minutes=10), DAY + timedelta(minutes=20)]
    assert "144 runs a day" in section()


def test_cron_setup_installs_it(project):
    [command] = [s for s in spans(way("crontab")) if s.startswith("./cron_setup.sh ")]
    schedule = re.fullmatch(r"\./cron_setup\.sh --schedule '([^']+)'", command)[1]

    printed = run_setup(project, "--print", "--schedule", schedule)

    assert printed.returncode == 0, printed.stderr
    assert day_of(fields(printed.stdout)) == expected()


def test_task_scheduler_runs_it():
    [command] = [s for s in spans(way("Windows Task Scheduler")) if s.startswith("cron_setup")]
    minutes = int(re.fullmatch(r"cron_setup\.bat /every (\d+)", command)[1])
    bat = (ROOT / "cron_setup.bat").read_text(encoding="ascii")
    # The bat's /every branch, with the documented minutes in place of %EVERY%.
    schedule = re.search(r'^set "SCHEDULE=(/SC MINUTE /MO %EVERY% /ST \d\d:\d\d)"', bat, re.M)[1]
    match = re.fullmatch(
        r"/SC MINUTE /MO (\S+) /ST (\d\d):(\d\d)", schedule.replace("%EVERY%", str(minutes))
    )
    first = DAY.replace(hour=int(match[2]), minute=int(match[3]))
    times = [first + timedelta(minutes=k * int(match[1])) for k in range(24 * 60 // minutes)]
    assert times == expected()
    assert schtasks_times(2, "00:00") != times  # the default stays every two hours
    assert f"/SC MINUTE /MO {minutes} /ST 00:00" in way("Windows Task Scheduler")


def test_supercronic_runs_it_with_the_images_own_command():
    [line] = [s for s in spans(way("supercronic")) if s.startswith(short_expression())]
    assert day_of(fields(line)) == expected()
    shipped = [
        entry
        for entry in (ROOT / "docker-cron").read_text(encoding="utf-8").splitlines()
        if entry.strip() and not entry.startswith("#")
    ]
    assert line.split(None, 5)[5] == shipped[0].split(None, 5)[5]


def test_systemd_timer_override_elapses_at_the_same_times(tmp_path):
    require_tool("systemd-analyze", "systemd")
    override = re.search(r"```ini\n(.*?)```", section(), re.S)[1]
    calendars = re.findall(r"^OnCalendar=(.*)$", override, re.M)
    assert calendars[0] == ""  # clears the shipped calendar first
    [calendar] = calendars[1:]
    assert f"OnCalendar={calendar}" in way("systemd timer")

    result = subprocess.run(
        [
            "systemd-analyze",
            "calendar",
            "--iterations=144",
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
    assert [e for e in elapses] == [t.strftime("%Y-%m-%d %H:%M:%S") for t in expected()]

    # The drop-in, installed beside the units, verifies clean.
    root = fake_root(tmp_path)
    dropin = root / "etc/systemd/system/analytics-refresh.timer.d"
    dropin.mkdir()
    (dropin / "override.conf").write_text(override, encoding="utf-8")
    verified = verify(root)
    assert verified.returncode == 0, verified.stderr
    assert (verified.stdout + verified.stderr).strip() == ""


@pytest.mark.parametrize("manifest", ["cronjob.yaml", "cronjob-sharded.yaml"])
def test_kubernetes_cronjob_takes_it(manifest):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    [patch] = [s for s in spans(way("Kubernetes CronJob")) if s.startswith("kubectl patch")]
    body = json.loads(re.search(r"--patch '(\{.*\})'", patch)[1])
    assert f'schedule: "{short_expression()}"' in way("Kubernetes CronJob")
    path = ROOT / "deploy" / "kubernetes" / manifest
    cronjob = yaml.safe_load(path.read_text(encoding="utf-8"))
    cronjob["spec"].update(body["spec"])

    assert day_of(cronjob["spec"]["schedule"]) == expected()
    assert cronjob["spec"]["startingDeadlineSeconds"] < 600  # below the 10-minute interval
    kubernetes_validate.validate(cronjob, "1.37", strict=True)


def test_render_takes_it():
    assert f'schedule: "{short_expression()}"' in way("Render cron job")
    blueprint = yaml.safe_load((ROOT / "render.yaml").read_text(encoding="utf-8"))
    [cron] = [s for s in blueprint["services"] if s["type"] == "cron"]
    cron["schedule"] = short_expression()
    assert day_of(cron["schedule"]) == expected()
