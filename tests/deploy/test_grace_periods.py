"""Every platform waits longer after SIGTERM than one request may take.

On SIGTERM the runner starts no new job, lets the requests in flight finish (each bounded
by REFRESH_TIMEOUT) and records the run as interrupted. A platform that kills it sooner
loses that record. Each manifest's grace is compared with the REFRESH_TIMEOUT that
manifest gives its runner (or the default, 300 s), with time left to write the record.
"""

from __future__ import annotations

import re

import pytest
import yaml

from tests.deploy.conftest import ROOT

REFRESH_TIMEOUT_DEFAULT = 300.0  # README's settings table
RECORD_MARGIN = 10.0  # seconds to record the run once the last request is over


def load(path: str):
    return list(yaml.safe_load_all((ROOT / path).read_text(encoding="utf-8")))


def kubernetes_timeout() -> float:
    [configmap] = load("deploy/kubernetes/configmap.yaml")
    return float(configmap["data"].get("REFRESH_TIMEOUT", REFRESH_TIMEOUT_DEFAULT))


def duration(text: str) -> float:
    """A compose (Go) or systemd duration such as 330s, 5m30s, 5min 30s, in seconds."""
    units = {"h": 3600, "m": 60, "min": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|min|h|m|s)(?![a-z])", str(text))
    assert parts, text
    return sum(float(n) * units[u] for n, u in parts)


def pod_specs():
    for path in sorted((ROOT / "deploy/kubernetes").glob("*.yaml")):
        for doc in load(path.relative_to(ROOT).as_posix()):
            if not doc:
                continue
            spec = doc.get("spec", {})
            template = spec.get("jobTemplate", {}).get("spec", spec).get("template")
            # Only the pods that run this project (the image with the refresh's settings).
            if template and "analytics-refresh-config" in str(template["spec"]):
                yield path.name, template["spec"]


@pytest.mark.parametrize(("name", "pod"), list(pod_specs()), ids=[n for n, _ in pod_specs()])
def test_kubernetes_grace_is_above_refresh_timeout(name, pod):
    grace = pod.get("terminationGracePeriodSeconds", 30)  # Kubernetes' default
    assert grace >= kubernetes_timeout() + RECORD_MARGIN, name


def test_every_refresh_cronjob_is_checked():
    names = {name for name, _ in pod_specs()}
    assert {"cronjob.yaml", "cronjob-sharded.yaml"} <= names


def test_compose_stop_grace_is_above_refresh_timeout():
    [compose] = load("compose.yaml")
    cron = compose["services"]["cron"]
    timeout = float(cron["environment"].get("REFRESH_TIMEOUT", REFRESH_TIMEOUT_DEFAULT))
    assert duration(cron["stop_grace_period"]) >= timeout + RECORD_MARGIN


def test_render_shutdown_delay_is_above_refresh_timeout():
    [blueprint] = load("render.yaml")
    [cron] = [s for s in blueprint["services"] if s["type"] == "cron"]
    settings = {
        v["key"]: v.get("value") for group in blueprint["envVarGroups"] for v in group["envVars"]
    }
    timeout = float(settings.get("REFRESH_TIMEOUT") or REFRESH_TIMEOUT_DEFAULT)
    delay = cron["maxShutdownDelaySeconds"]
    assert 1 <= delay <= 300  # Render's bounds
    assert delay >= timeout + RECORD_MARGIN


def test_systemd_stop_timeout_is_above_refresh_timeout():
    text = (ROOT / "deploy/systemd/analytics-refresh.service").read_text(encoding="utf-8")
    environment = dict(re.findall(r"^Environment=\"?(\w+)=([^\"\s]*)", text, re.M))
    timeout = float(environment.get("REFRESH_TIMEOUT", REFRESH_TIMEOUT_DEFAULT))
    [stop] = re.findall(r"^TimeoutStopSec=(.+)$", text, re.M)
    assert duration(stop) >= timeout + RECORD_MARGIN


def test_the_duration_parser():
    assert duration("330s") == 330
    assert duration("5m30s") == 330
    assert duration("5min 30s") == 330
    assert duration("1h") == 3600
