"""The scheduling guide describes every installer, and its commands match the files."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.deploy.conftest import ROOT, run_setup

GUIDE = ROOT / "ANALYTICS_REFRESH_CRON_GUIDE.md"

INSTALLER_FILES = [
    "cron_setup.sh",
    "cron_setup.bat",
    "docker-cron",
    "Dockerfile",
    ".dockerignore",
    "compose.yaml",
    "render.yaml",
    "deploy/systemd/analytics-refresh.service",
    "deploy/systemd/analytics-refresh.timer",
    "deploy/kubernetes/cronjob.yaml",
    "deploy/kubernetes/configmap.yaml",
    "deploy/kubernetes/secret.example.yaml",
    "deploy/kubernetes/cronjob-sharded.yaml",
    "deploy/kubernetes/pushgateway.yaml",
    "deploy/kubernetes/dashboard-api.yaml",
    "requirements.lock",
    "deploy/SCHEDULE.md",
    "scripts/install-test-tools.sh",
]


def guide() -> str:
    return GUIDE.read_text(encoding="utf-8")


def code_blocks() -> str:
    return "\n".join(re.findall(r"```\w*\n(.*?)```", guide(), re.S))


@pytest.mark.parametrize("path", INSTALLER_FILES)
def test_every_installer_file_exists_and_is_described(path):
    assert (ROOT / path).is_file()
    assert f"`{path}`" in guide() or f"({path})" in guide()


def test_every_platform_section_says_how_to_install_check_run_read_and_remove():
    sections = re.split(r"^### ", guide(), flags=re.M)
    platforms = [s for s in sections if "**Install" in s]
    assert len(platforms) == 7
    for section in platforms:
        for step in (
            "**Install",
            "**Check it is installed",
            "**Run it now",
            "**See its log",
            "**Remove it",
        ):
            assert step in section, (section.splitlines()[0], step)


def test_cron_setup_options_in_the_guide_exist(project):
    help_text = run_setup(project, "--help").stdout
    used = set(re.findall(r"cron_setup\.sh (--[a-z]+)", guide()))
    assert used >= {"--print", "--uninstall", "--schedule", "--user"}
    for option in used:
        assert option in help_text


def test_windows_commands_name_the_task_the_bat_creates():
    bat = (ROOT / "cron_setup.bat").read_text(encoding="ascii")
    task = re.search(r'^set "TASK_NAME=(\w+)"', bat, re.M)[1]
    for name in re.findall(r"/TN (\S+)", guide()):
        assert name == task
    for switch in re.findall(r"cron_setup\.bat (/\w+)", guide()):
        assert f'"{switch}"' in bat


def test_kubernetes_and_systemd_commands_name_what_the_manifests_define():
    blocks = code_blocks()
    cronjob = yaml.safe_load((ROOT / "deploy/kubernetes/cronjob.yaml").read_text())
    secret = yaml.safe_load((ROOT / "deploy/kubernetes/secret.example.yaml").read_text())
    assert f"cronjob/{cronjob['metadata']['name']} " in blocks
    assert f"kubectl delete secret {secret['metadata']['name']}" in blocks
    service = (ROOT / "deploy/systemd/analytics-refresh.service").read_text()
    for setting in ("User", "WorkingDirectory", "EnvironmentFile"):
        value = re.search(rf"^{setting}=(.+)$", service, re.M)[1]
        assert value in blocks, f"the guide's systemd steps do not set up {setting}={value}"


def test_compose_commands_name_its_services():
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    for name in re.findall(r"docker compose (?:exec|logs -f) (\S+)", code_blocks()):
        assert name in services


def test_the_guides_cron_environment_command_runs_the_installed_line(project):
    """The guide's way to reproduce cron's environment by hand really runs the job."""
    [command] = re.findall(r"^(env -i .*?\n.*?)$", code_blocks(), re.M)
    (project / "analytics_refresh_cron.py").write_text(
        "import os\nprint('ran from', os.getcwd())\n", encoding="utf-8"
    )
    (project / "logs").mkdir()

    subprocess.run(["bash", "-c", command], cwd=project, check=True, timeout=60)

    output = (project / "logs" / "cron_output.log").read_text(encoding="utf-8")
    assert output == f"ran from {project.resolve()}\n"
