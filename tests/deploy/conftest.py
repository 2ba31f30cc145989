"""Fixtures for the installer tests: system tools, the real crontab, a throwaway project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The linters come from requirements-dev.txt, beside the Python running the tests.
VENV_BIN = Path(sys.executable).parent
# A space, a quote and a percent sign: each breaks a crontab line that quotes or escapes
# carelessly (cron turns an unescaped % into a newline).
PROJECT_DIR_NAME = "my project's 100% copy"


def require_tool(name: str, package: str) -> str:
    """Return the tool's path; skip where it cannot be installed, fail where it could be."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        pytest.fail(
            f"{name} is missing: run scripts/install-test-tools.sh (make test does), "
            f"or apt-get install {package}"
        )
    pytest.skip(f"{name} is not installed and cannot be here without root and apt-get")


def venv_tool(name: str) -> str:
    path = VENV_BIN / name
    assert path.exists(), f"{name} is missing from {VENV_BIN}: pip install -r requirements-dev.txt"
    return str(path)


class Crontab:
    """One user's real crontab, read and written with the crontab command."""

    def __init__(self, user: str | None = None):
        self.user_args = ["-u", user] if user else []

    def read(self) -> bytes | None:
        """Return the crontab's bytes, or None when the user has none."""
        result = subprocess.run(["crontab", *self.user_args, "-l"], capture_output=True)
        if result.returncode == 0:
            return result.stdout
        assert b"no crontab" in result.stderr.lower(), result.stderr
        return None

    def write(self, content: bytes | None) -> None:
        if content is None:
            # -r fails when there is nothing to remove, which is the state wanted anyway.
            subprocess.run(["crontab", *self.user_args, "-r"], capture_output=True)
        else:
            subprocess.run(["crontab", *self.user_args, "-"], input=content, check=True)


@pytest.fixture
def user_crontab():
    """The current user's real crontab, restored as it was after the test."""
    require_tool("crontab", "cron")
    tab = Crontab()
    saved = tab.read()
    yield tab
    tab.write(saved)


@pytest.fixture
def project(tmp_path) -> Path:
    """A throwaway copy of the project layout that cron_setup.sh accepts.

    The installer and the entry point are the real files; .venv links to the virtualenv
    running the tests (where the project is installed); .env is minimal.
    """
    directory = tmp_path / PROJECT_DIR_NAME
    directory.mkdir()
    for name in ("cron_setup.sh", "analytics_refresh_cron.py"):
        shutil.copy2(ROOT / name, directory / name)
    (directory / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    (directory / ".env").write_text("LOG_LEVEL=INFO\n", encoding="utf-8")
    return directory


def run_setup(project: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the project's cron_setup.sh as a user would (through its shebang)."""
    return subprocess.run(
        [str(project / "cron_setup.sh"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def marker(project: Path) -> str:
    """The comment that ends the line cron_setup.sh installs for ``project``."""
    return "# analytics-refresh-cron: " + str(project.resolve()).replace("%", "\\%")


def our_lines(content: bytes | None, project: Path) -> list[str]:
    text = (content or b"").decode()
    return [line for line in text.splitlines() if line.endswith(marker(project))]
