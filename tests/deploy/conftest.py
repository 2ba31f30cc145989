"""Fixtures for the installer tests: system tools, a throwaway user and its crontab, a
throwaway project."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
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


@dataclass(frozen=True)
class CronUser:
    """A throwaway user, created for the session, whose crontab the tests may change."""

    name: str
    uid: int
    gid: int
    home: Path

    def env(self) -> dict[str, str]:
        """The environment of a login of this user (no root-only paths in it)."""
        return {
            "HOME": str(self.home),
            "USER": self.name,
            "LOGNAME": self.name,
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "TMPDIR": str(self.home),
            "LANG": "C.UTF-8",
        }


def _run_quietly(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="session")
def cron_user():
    """A throwaway user for the crontab tests, removed (with its crontab) at the end.

    The crontab tests change a real crontab; never the one of whoever runs the suite. As
    root they act as this user; anyone else cannot create one, so they skip.
    """
    require_tool("crontab", "cron")
    if os.geteuid() != 0:
        pytest.skip(
            "the crontab tests run as a throwaway user, which only root can create; "
            "they never touch your own crontab"
        )
    useradd = require_tool("useradd", "passwd")
    userdel = require_tool("userdel", "passwd")
    home = Path(tempfile.mkdtemp(prefix="analytics-refresh-cron-user-"))
    name = f"arcron{uuid.uuid4().hex[:10]}"
    created = None
    for _ in range(20):  # useradd fails while another process holds /etc/passwd's lock
        created = _run_quietly(
            useradd, "--system", "--user-group", "--no-create-home",
            "--home-dir", str(home), "--shell", "/bin/sh", name,
        )  # fmt: skip
        if created.returncode == 0:
            break
        time.sleep(0.2)
    if created is None or created.returncode != 0:
        shutil.rmtree(home, ignore_errors=True)
        pytest.fail(f"useradd {name} failed: {created.stderr if created else ''}")
    entry = pwd.getpwnam(name)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    try:
        yield CronUser(name, entry.pw_uid, entry.pw_gid, home)
    finally:
        _run_quietly("crontab", "-u", name, "-r")
        for _ in range(20):
            if _run_quietly(userdel, name).returncode in (0, 6):  # 6: no such user
                break
            time.sleep(0.2)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def cron_user_venv(cron_user) -> Path:
    """A virtualenv the throwaway user can run, holding this suite's packages.

    The suite's own venv may sit on an interpreter under a directory only root can enter
    (pyenv in /root). The system python3, when it is the same version, makes a venv that
    reads the suite's site-packages (the project's editable install included).
    """
    system_python = shutil.which("python3", path="/usr/bin:/bin")
    if not system_python:
        pytest.skip("no system python3 for the throwaway user's venv")
    version = _run_quietly(system_python, "-c", "import sys; print(sys.version_info[:2])")
    if version.stdout.strip() != str(tuple(sys.version_info[:2])):
        pytest.skip(f"the system python3 is not Python {sys.version_info[:2]}, as the suite's is")
    venv = cron_user.home / "venv"
    created = _run_quietly(system_python, "-m", "venv", "--without-pip", str(venv))
    assert created.returncode == 0, created.stderr
    [site_packages] = venv.glob("lib/python3*/site-packages")
    [suite_site] = {p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix)}
    (site_packages / "analytics_refresh_suite.pth").write_text(
        f"import site; site.addsitedir({suite_site!r})\n", encoding="utf-8"
    )
    for path in [venv, *venv.rglob("*")]:
        os.lchown(path, cron_user.uid, cron_user.gid)
    probe = subprocess.run(
        [str(venv / "bin/python"), "-c", "import analytics_refresh, psycopg2, requests"],
        user=cron_user.uid,
        group=cron_user.gid,
        extra_groups=[],
        env=cron_user.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"the throwaway user cannot import the project: {probe.stderr[-300:]}")
    return venv


@pytest.fixture
def user_crontab(cron_user) -> Crontab:
    """The throwaway user's real crontab, empty before and after the test."""
    tab = Crontab(cron_user.name)
    tab.write(None)
    yield tab
    tab.write(None)


def _project_layout(directory: Path, venv: Path) -> None:
    directory.mkdir()
    for name in ("cron_setup.sh", "analytics_refresh_cron.py"):
        shutil.copy2(ROOT / name, directory / name)
    (directory / ".venv").symlink_to(venv, target_is_directory=True)
    (directory / ".env").write_text("LOG_LEVEL=INFO\n", encoding="utf-8")


@pytest.fixture
def project(request, tmp_path) -> Path:
    """A throwaway copy of the project layout that cron_setup.sh accepts.

    The installer and the entry point are the real files; .env is minimal. For a test that
    changes a crontab (it asks for user_crontab), the copy belongs to the throwaway user,
    in a directory that user can reach, with a venv it can run, and run_setup runs
    cron_setup.sh as that user. Otherwise it is root's (or yours), and .venv links to the
    virtualenv running the tests.
    """
    if "user_crontab" not in request.fixturenames:
        directory = tmp_path / PROJECT_DIR_NAME
        _project_layout(directory, Path(sys.prefix))
        yield directory
        return
    user = request.getfixturevalue("cron_user")
    venv = request.getfixturevalue("cron_user_venv")
    base = Path(tempfile.mkdtemp(prefix="analytics-refresh-cron-project-"))
    directory = base / PROJECT_DIR_NAME
    _project_layout(directory, venv)
    for path in [base, *base.rglob("*")]:
        os.lchown(path, user.uid, user.gid)
    try:
        yield directory
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run_setup(project: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the project's cron_setup.sh as its owner would (through its shebang)."""
    owner = project.stat().st_uid
    as_owner: dict = {}
    if owner != os.geteuid():
        entry = pwd.getpwuid(owner)
        user = CronUser(entry.pw_name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))
        as_owner = {"user": owner, "group": entry.pw_gid, "extra_groups": [], "env": user.env()}
    return subprocess.run(
        [str(project / "cron_setup.sh"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **as_owner,
    )


def marker(project: Path) -> str:
    """The comment that ends the line cron_setup.sh installs for ``project``."""
    return "# analytics-refresh-cron: " + str(project.resolve()).replace("%", "\\%")


def our_lines(content: bytes | None, project: Path) -> list[str]:
    text = (content or b"").decode()
    return [line for line in text.splitlines() if line.endswith(marker(project))]
