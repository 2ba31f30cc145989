"""The installers pass their platform's linter: shellcheck, hadolint, systemd-analyze verify."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import ROOT, require_tool, venv_tool

SHELL_SCRIPTS = ["cron_setup.sh", "scripts/install-test-tools.sh"]
UNITS = ["analytics-refresh.service", "analytics-refresh.timer"]


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_shellcheck_is_clean(script):
    result = subprocess.run(
        [venv_tool("shellcheck"), "--severity=style", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_scripts_start_strict(script):
    text = (ROOT / script).read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash\n")
    assert re.search(r"^set -euo pipefail$", text, re.M)


# Syntax macOS's bash 3.2 rejects or misreads; the comment says which bash brought it.
BASH4_ONLY = {
    r"\b(declare|local|typeset)\s+-[a-zA-Z]*[An]": "associative arrays / namerefs (bash 4.0/4.3)",
    r"\b(mapfile|readarray|coproc)\b": "mapfile, readarray, coproc (bash 4.0)",
    r"\$\{[^}]*(,,?|\^\^?)\}": "case-changing expansions ${x,,} ${x^^} (bash 4.0)",
    r"\$\{[^}]*@[QEPAaUuLK]\}": "${x@Q}-style transformations (bash 4.4)",
    r"\$\{[A-Za-z_]+\[-\d+\]\}": "negative array indices (bash 4.3)",
    r"\|&|&>>|;;&": "|&, &>> and ;;& (bash 4.0)",
    r"\[\[\s+-v\s": "[[ -v name ]] (bash 4.2)",
    r"\bwait\s+-n\b": "wait -n (bash 4.3)",
    r"\b(globstar|lastpipe)\b": "shopt globstar / lastpipe (bash 4.0/4.2)",
    r"\$(BASHPID|EPOCHSECONDS|EPOCHREALTIME)\b": "bash 4/5 variables",
    r"\{\w+\.\.\w+\.\.\d+\}": "stepped brace ranges (bash 4.0)",
}


def test_cron_setup_uses_no_bash4_only_syntax():
    code = "\n".join(
        line
        for line in (ROOT / "cron_setup.sh").read_text(encoding="utf-8").splitlines()
        if not line.lstrip().startswith("#")
    )
    found = {why for pattern, why in BASH4_ONLY.items() if re.search(pattern, code)}
    assert not found, found


def test_cron_setup_bat_is_well_formed():
    """No cmd.exe here, so check what breaks a batch file silently."""
    raw = (ROOT / "cron_setup.bat").read_bytes()
    # LF-only batch files make cmd.exe misjump to labels.
    assert raw.count(b"\r\n") == raw.count(b"\n")
    text = raw.decode("ascii")
    labels = set(re.findall(r"^:(\w+)\s*$", text, re.M))
    targets = set(re.findall(r"\b(?:goto|call) :?(\w+)", text, re.I))
    assert targets <= labels, targets - labels
    # After delayed expansion is on, a literal ! would be eaten by cmd.exe.
    after = text.split("setlocal EnableDelayedExpansion", 1)[1]
    code = [line for line in after.splitlines() if not line.lower().startswith("rem ")]
    literal = [line for line in code if re.sub(r"!\w+!", "", line).count("!")]
    assert not literal, literal


def test_hadolint_is_clean():
    result = subprocess.run(
        [venv_tool("hadolint"), "--no-color", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def fake_root(tmp_path: Path, *, with_python: bool = True) -> Path:
    """A file-system root holding systemd's own units, ours, and the paths ours name.

    `systemd-analyze verify` checks that ExecStart names an executable; --root lets it find
    /opt/analytics-refresh/.venv/bin/python without installing anything on this machine.
    """
    root = tmp_path / "root"
    system_units = Path("/usr/lib/systemd/system")
    shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(ROOT / "deploy/systemd" / unit, root / "etc/systemd/system" / unit)
    if with_python:
        python = root / "opt/analytics-refresh/.venv/bin/python"
        python.parent.mkdir(parents=True)
        shutil.copy("/bin/true", python)
    return root


def verify(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", *UNITS],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "SYSTEMD_LOG_COLOR": "0"},
    )


def test_systemd_units_verify_clean(tmp_path):
    require_tool("systemd-analyze", "systemd")

    result = verify(fake_root(tmp_path))

    assert result.returncode == 0, result.stderr
    assert (result.stdout + result.stderr).strip() == ""


def test_systemd_verify_would_catch_a_missing_interpreter(tmp_path):
    """Proves the check above is not vacuous: verify really resolves ExecStart here."""
    require_tool("systemd-analyze", "systemd")

    result = verify(fake_root(tmp_path, with_python=False))

    assert result.returncode != 0
    assert "/opt/analytics-refresh/.venv/bin/python" in result.stderr


def test_systemd_service_is_well_hardened(tmp_path):
    """systemd's own exposure score stays in its best band ("OK", under 3.0 of 10)."""
    require_tool("systemd-analyze", "systemd")

    result = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=true",
            f"--root={fake_root(tmp_path)}",
            "--threshold=29",  # tenths: fails at 3.0 and above
            "analytics-refresh.service",
        ],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_COLORS": "0"},
    )

    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
