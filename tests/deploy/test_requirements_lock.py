"""The locks pin everything installed, with hashes, and keep up with the requirement lists.

requirements.txt (runtime) and requirements-dev.txt (plus the tools) are the lists people
edit; requirements.lock (the image) and requirements-dev.lock (`make install`) are made
from them by the command in each lock's header. A list changed without its lock fails here.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.conftest import ROOT

LOCKS = {"requirements.lock": "requirements.txt", "requirements-dev.lock": "requirements-dev.txt"}


def listed(name: str) -> dict[str, Requirement]:
    """The requirements a list names, its -r includes followed."""
    found: dict[str, Requirement] = {}
    for raw in (ROOT / name).read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            found.update(listed(line[3:].strip()))
            continue
        requirement = Requirement(line)
        found[canonicalize_name(requirement.name)] = requirement
    return found


class Entry:
    def __init__(self, text: str):
        head, *rest = text.split("\n")
        spec = head.rstrip(" \\")
        self.requirement = Requirement(spec)
        self.name = canonicalize_name(self.requirement.name)
        [self.version] = [s.version for s in self.requirement.specifier if s.operator == "=="]
        self.hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", text)
        self.via = re.findall(r"#\s+(?:via\s+)?(-r \S+|[\w.-]+)\s*$", "\n".join(rest), re.M)
        self.marker = self.requirement.marker or Marker("python_version >= '0'")


def entries(lock: str) -> list[Entry]:
    text = (ROOT / lock).read_text(encoding="utf-8")
    blocks = re.split(
        r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2] if text.startswith("#") else text
    )
    return [Entry(block) for block in blocks if block.strip() and not block.startswith("#")]


@pytest.mark.parametrize(("lock", "source"), LOCKS.items())
def test_every_listed_requirement_is_pinned_and_locked_at_that_version(lock, source):
    locked: dict[str, set[str]] = {}
    for entry in entries(lock):
        locked.setdefault(entry.name, set()).add(entry.version)
    for name, requirement in listed(source).items():
        pins = [s.version for s in requirement.specifier if s.operator == "=="]
        assert len(pins) == 1, f"{source}: pin {requirement} to one version (==)"
        assert locked.get(name) == set(pins), (
            f"{lock} has {name} {sorted(locked.get(name, []))}, {source} says {pins[0]}: "
            f"regenerate the locks with the command at the top of {lock}"
        )


@pytest.mark.parametrize(("lock", "source"), LOCKS.items())
def test_every_locked_package_has_hashes_and_a_reason_to_be_there(lock, source):
    names = {e.name for e in entries(lock)}
    wanted = set(listed(source))
    for entry in entries(lock):
        assert entry.hashes, f"{lock}: {entry.name} has no --hash"
        reasons = {canonicalize_name(v) for v in entry.via if v != "via" and v[0] != "-"}
        direct = any(v.startswith("-r ") for v in entry.via)
        # Only what a list names, or what a locked package pulls in, belongs in the lock.
        assert (direct and entry.name in wanted) or (reasons & names), (
            f"{lock}: {entry.name} is no longer required by {source}: regenerate the lock"
        )


def test_the_locks_agree_on_every_package_the_image_installs():
    dev = {(e.name, str(e.marker)): e.version for e in entries("requirements-dev.lock")}
    for entry in entries("requirements.lock"):
        assert dev.get((entry.name, str(entry.marker))) == entry.version, entry.name


@pytest.mark.parametrize("lock", LOCKS)
def test_the_lock_says_how_it_was_made(lock):
    header = (ROOT / lock).read_text(encoding="utf-8").split("\n", 2)[1]
    command = shlex.split(header.lstrip("# "))
    assert command[:3] == ["uv", "pip", "compile"]
    assert LOCKS[lock] in command
    assert "--generate-hashes" in command
    assert command[command.index("-o") + 1] == lock


def test_the_image_and_make_install_install_from_the_locks_with_hashes():
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "pip install --require-hashes --requirement requirements.lock" in dockerfile
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "pip install --quiet --require-hashes -r requirements-dev.lock" in makefile


def test_the_lock_covers_this_python(tmp_path):
    """Each package pinned for this interpreter resolves to exactly one version."""
    for lock in LOCKS:
        seen: dict[str, str] = {}
        for entry in entries(lock):
            if entry.marker.evaluate():
                assert entry.name not in seen, f"{lock}: {entry.name} twice for this Python"
                seen[entry.name] = entry.version
        assert seen


def test_the_parser_reads_every_entry():
    text = Path(ROOT / "requirements.lock").read_text(encoding="utf-8")
    assert len(entries("requirements.lock")) == len(re.findall(r"^[A-Za-z0-9][^ ]*==", text, re.M))
