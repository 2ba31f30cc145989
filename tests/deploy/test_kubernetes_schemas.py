"""Every Kubernetes manifest passes the API schema of every version it claims to support.

Each manifest names its versions in a `# Kubernetes versions: 1.A to 1.B` comment; the
guide's Kubernetes section repeats the range. kubernetes-validate carries the OpenAPI
schemas of each release and checks offline, strictly: an unknown or misplaced field fails
as a required one that is missing does.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import ROOT

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is in requirements-dev.txt"
)

from kubernetes_validate.utils import all_versions, major_minor  # noqa: E402

MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
CLAIM = re.compile(r"^# Kubernetes versions: 1\.(\d+) to 1\.(\d+)\b", re.M)


def claimed_versions(path: Path) -> list[str]:
    claims = CLAIM.findall(path.read_text(encoding="utf-8"))
    assert len(claims) == 1, f"{path.name}: expected one '# Kubernetes versions: 1.A to 1.B'"
    low, high = map(int, claims[0])
    return [f"1.{minor}" for minor in range(low, high + 1)]


def resources(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def test_there_are_manifests_and_the_schemas_cover_their_versions():
    assert {p.name for p in MANIFESTS} >= {"cronjob.yaml", "cronjob-sharded.yaml"}
    shipped = {major_minor(v) for v in all_versions()}
    for path in MANIFESTS:
        missing = set(claimed_versions(path)) - shipped
        assert not missing, f"kubernetes-validate has no schema for {missing} ({path.name})"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_strictly_for_every_claimed_version(path):
    failures = []
    for version in claimed_versions(path):
        for resource in resources(path):
            try:
                kubernetes_validate.validate(resource, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                where = ".".join(str(p) for p in error.path)
                failures.append(f"{version} {resource['kind']}: {where}: {error.message}")
    assert not failures, "\n".join(failures)


def test_the_validation_really_rejects_a_broken_manifest():
    """The sharded CronJob without onPodConditions' status fails where the schema needs it."""
    [cronjob] = resources(ROOT / "deploy" / "kubernetes" / "cronjob-sharded.yaml")
    rule = cronjob["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]["rules"][0]
    del rule["onPodConditions"][0]["status"]
    with pytest.raises(kubernetes_validate.ValidationError, match="status"):
        kubernetes_validate.validate(cronjob, "1.30", strict=True)


def test_the_guide_states_the_versions_the_manifests_claim():
    guide = (ROOT / "ANALYTICS_REFRESH_CRON_GUIDE.md").read_text(encoding="utf-8")
    for path in MANIFESTS:
        versions = claimed_versions(path)
        assert f"{versions[0]} to {versions[-1]}" in guide, path.name
