"""The listener's deployments: each keeps the scheduled run beside it as the net."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from analytics_refresh.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
UNIT = "analytics-refresh-listen.service"
# Longer than one request may take after SIGTERM, so the stop is recorded, not killed.
GRACE = Settings().timeout


def _unit() -> dict[str, str]:
    values = {}
    for line in (ROOT / "deploy/systemd" / UNIT).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values.setdefault(key, value)
    return values


def test_systemd_unit_restarts_always_and_verifies(tmp_path):
    unit = _unit()
    assert unit["Restart"] == "always"
    assert unit["ExecStart"].endswith("analytics-refresh listen")
    assert float(unit["TimeoutStopSec"].rstrip("s")) > GRACE
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(ROOT / "deploy/systemd" / UNIT, root / "etc/systemd/system" / UNIT)
    program = root / "opt/analytics-refresh/.venv/bin/analytics-refresh"
    program.parent.mkdir(parents=True)
    shutil.copy("/bin/true", program)
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", UNIT],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "SYSTEMD_LOG_COLOR": "0"},
    )
    assert result.returncode == 0, result.stderr
    assert (result.stdout + result.stderr).strip() == ""
    assert (ROOT / "deploy/systemd/analytics-refresh.timer").exists()  # the net stays


def test_kubernetes_deployment_runs_two_probed_replicas_beside_the_cronjob():
    [deployment] = yaml.safe_load_all((ROOT / "deploy/kubernetes/listener.yaml").read_text())
    assert deployment["kind"] == "Deployment"
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > GRACE
    [container] = pod["containers"]
    assert container["command"] == ["analytics-refresh", "listen"]
    alive = {e["name"]: e["value"] for e in container["env"]}["REFRESH_ALIVE_FILE"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert alive in " ".join(container[probe]["exec"]["command"])
    [cronjob] = yaml.safe_load_all((ROOT / "deploy/kubernetes/cronjob.yaml").read_text())
    assert cronjob["kind"] == "CronJob"


def test_compose_listener_restarts_always_beside_the_scheduler():
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    listener = services["listener"]
    assert listener["command"] == ["analytics-refresh", "listen"]
    assert listener["restart"] == "always"
    assert int(listener["stop_grace_period"].rstrip("s")) > GRACE
    alive = listener["environment"]["REFRESH_ALIVE_FILE"]
    assert alive in " ".join(listener["healthcheck"]["test"])
    assert "cron" in services


def test_render_runs_a_listener_worker_beside_the_cron_job():
    services = yaml.safe_load((ROOT / "render.yaml").read_text())["services"]
    kinds = {s["type"]: s for s in services}
    assert kinds["worker"]["dockerCommand"] == "analytics-refresh listen"
    assert kinds["worker"]["maxShutdownDelaySeconds"] <= 300  # Render's most
    assert "schedule" in kinds["cron"]
