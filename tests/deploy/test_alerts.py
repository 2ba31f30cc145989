"""The alert rules, judged by promtool against the cases in alerts_test.yml.

The cases: healthy, stale, never ran, one client failing among many, a failed run, an
exporter gone (beside a healthy host, and alone), two shards (through the Pushgateway,
and as two textfiles on one host), and change-aware runs that skip every key while the
API is down. promtool compares annotations as well as labels; the
cases are about when each alert fires and for whom, so they run against a copy of the
rules without annotations, whose templates `promtool check rules` checks instead.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import ROOT

RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
CASES = Path(__file__).with_name("alerts_test.yml")
ALERTS = {
    "AnalyticsRefreshNoRecentSuccess": "critical",
    "AnalyticsRefreshMetricsMissing": "critical",
    "AnalyticsRefreshRunFailed": "warning",
    "AnalyticsRefreshKeysFailingRepeatedly": "warning",
    "AnalyticsRefreshClientCacheStale": "warning",
    "AnalyticsRefreshKeysOutsidePromise": "warning",
    "AnalyticsRefreshNoRequestSucceeded": "critical",
    "AnalyticsRefreshShareOutsidePromise": "warning",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    import shutil

    path = shutil.which("promtool")
    if not path:
        pytest.skip(
            "promtool is not installed (Debian's prometheus package; "
            "scripts/install-test-tools.sh installs it where it can)"
        )
    return path


def rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def test_rules_are_valid_and_their_templates_parse(promtool):
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_fire_when_and_for_whom_the_cases_say(promtool, tmp_path):
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(document))
    cases = yaml.safe_load(CASES.read_text())
    assert cases["rule_files"] == ["../../deploy/prometheus/alerts.yml"]
    cases["rule_files"] = ["alerts.yml"]
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump(cases))

    result = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_cases_cover_every_alert_and_every_situation():
    cases = yaml.safe_load(CASES.read_text())["tests"]
    names = " | ".join(case["name"] for case in cases)
    for situation in (
        "healthy",
        "stale",
        "never ran",
        "one client failing",
        "a failed run",
        "exporter gone",
        "two shards",
        "API down while no data changes",
    ):
        assert situation in names, situation
    tested = {t["alertname"] for case in cases for t in case["alert_rule_test"]}
    fired = {t["alertname"] for case in cases for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert tested == fired == set(ALERTS)


def test_every_alert_has_its_severity_a_summary_and_what_to_do():
    assert {rule["alert"]: rule["labels"]["severity"] for rule in rules()} == ALERTS
    for rule in rules():
        assert rule["annotations"]["summary"]
        assert "analytics-refresh status" in rule["annotations"]["description"]


def test_alerts_group_by_shard_wherever_they_aggregate():
    for rule in rules():
        for aggregation in ("max by (", "min by (", "sum by ("):
            for clause in rule["expr"].split(aggregation)[1:]:
                labels = clause.split(")", 1)[0]
                if rule["alert"] != "AnalyticsRefreshClientCacheStale":
                    assert "shard" in labels, (rule["alert"], labels)
