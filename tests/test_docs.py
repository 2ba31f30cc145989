"""The docs say what the code does: every setting named with its true default, and nothing
cited that a user of the repository does not have."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from analytics_refresh.config.settings import API_VARIABLES, SPECIAL_VARIABLES, VARIABLES, Settings
from dashboard_api import config as api_config
from tests.conftest import ROOT

DOCUMENTED = sorted({*VARIABLES, *SPECIAL_VARIABLES} - {"API_SECRET_KEY_FILE"})
# The variables whose value the runner reads by code of its own, and the field each sets.
SPECIAL_FIELDS = {
    "DATABASE_URL": "database_url",
    "API_SECRET_KEY": "secret_key",
    "REFRESH_CHANGE_SQL": "change_sql",
}
# Defaults that are not one value but worked out on the machine, as the README words them.
# Defaults the docs state as a rule rather than one value, with the value the rule gives.
COMPUTED = {
    "CPU count": os.cpu_count() or 1,
    "11/12 of the interval": Settings.from_env({}).deadline,
}
UNSET = object()


def readme_defaults() -> dict[str, str]:
    """Return the default column of README's settings table, by variable."""
    rows = {}
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        match = re.match(r"\| `([A-Z][A-Z0-9_]*)`[^|]*\| ([^|]*) \|", line)
        if match:
            rows[match[1]] = match[2].strip()
    return rows


def documented_value(cell: str):
    """Return the value a default cell states: a literal, UNSET, or a computed value."""
    literal = re.match(r"`([^`]*)`", cell)
    if literal:
        return literal[1]
    if re.match(r"(unset|none)\b", cell):
        return UNSET
    for words, value in COMPUTED.items():
        if cell.startswith(words):
            return ("computed", value)
    raise AssertionError(f"README's default {cell!r} is neither a value nor unset")


def env_example() -> tuple[dict[str, str], set[str]]:
    """Return the set lines of .env.example (name: value) and the names only shown commented."""
    values, commented = {}, set()
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        if match := re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line):
            values[match[1]] = match[2]
        elif match := re.match(r"#\s*([A-Z][A-Z0-9_]*)=", line):
            commented.add(match[1])
    return values, commented - set(values)


def is_runner_default(name: str, value) -> bool:
    """Whether ``value`` given for ``name`` leaves the runner's settings at their defaults."""
    defaults = Settings.from_env({})
    if value is UNSET:
        field = VARIABLES[name].field if name in VARIABLES else SPECIAL_FIELDS[name]
        return getattr(defaults, field) is None
    if isinstance(value, tuple):
        field = VARIABLES[name].field if name in VARIABLES else SPECIAL_FIELDS[name]
        return getattr(defaults, field) == value[1]
    return Settings.from_env({name: value}) == defaults


def is_api_default(name: str, value) -> bool:
    """Whether ``value`` given for ``name`` is the reference API's default."""
    parse, default, _ = api_config.SETTINGS[name]
    if value is UNSET:
        return default is api_config.REQUIRED
    if isinstance(value, tuple):
        return value[1] == default
    return parse(value) == default


def is_default(name: str, value) -> bool:
    if name in api_config.SETTINGS and name not in VARIABLES and name not in SPECIAL_FIELDS:
        return is_api_default(name, value)
    return is_runner_default(name, value)


@pytest.mark.parametrize("name", DOCUMENTED)
def test_every_setting_is_in_the_readme_and_env_example(name):
    assert f"`{name}`" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert name in (ROOT / ".env.example").read_text(encoding="utf-8")


DEFAULTS = readme_defaults()
CHECKED = sorted(
    {*VARIABLES, *SPECIAL_FIELDS, *(n for n in API_VARIABLES if n in api_config.SETTINGS)}
)


@pytest.mark.parametrize("name", CHECKED)
def test_the_readme_states_each_default_the_code_has(name):
    assert name in DEFAULTS, f"README's settings table has no row for {name}"
    value = documented_value(DEFAULTS[name])
    assert is_default(name, value), f"README says {name} defaults to {DEFAULTS[name]!r}"


@pytest.mark.parametrize("name", CHECKED)
def test_env_example_holds_each_default_the_code_has(name):
    # Its header says every value in it is the default: a value a user may copy as it is.
    values, commented = env_example()
    shown = {name, f"{name}_FILE"} & {*values, *commented}  # or its file twin
    assert shown, f".env.example does not show {name}"
    if name in values:
        assert is_default(name, values[name] or UNSET), f".env.example: {name}={values[name]}"
    else:
        # Only shown as an example: then there is no one value to write down.
        value = documented_value(DEFAULTS[name])
        assert value is UNSET or isinstance(value, tuple), (
            f".env.example comments {name} out, but it defaults to {DEFAULTS[name]}"
        )


def test_a_default_named_in_the_prose_is_the_default():
    # "`REFRESH_DEADLINE` (default 6600 s, ...)", "`REFRESH_HISTORY_DAYS` (30)": each such
    # aside in the docs says what the settings hold when the variable is unset.
    docs = [ROOT / "README.md", ROOT / "ANALYTICS_REFRESH_CRON_GUIDE.md"]
    docs += sorted((ROOT / "docs").glob("*.md")) + sorted((ROOT / "deploy").glob("*.md"))
    pattern = re.compile(r"`([A-Z][A-Z0-9_]+)` \((?:default )?([0-9][0-9,.]*)(?: s)?[),]")
    found = [
        (path.name, name, value.replace(",", ""))
        for path in docs
        for name, value in pattern.findall(path.read_text(encoding="utf-8"))
        if name in VARIABLES
    ]
    assert found, "the pattern no longer finds the docs' asides"
    wrong = [(doc, name, value) for doc, name, value in found if not is_default(name, value)]
    assert wrong == []


@pytest.mark.parametrize(
    ("package", "reader"), [("analytics_refresh", "settings.py"), ("dashboard_api", "config.py")]
)
def test_only_the_settings_module_reads_the_environment(package, reader):
    readers = sorted(
        path.name
        for path in (ROOT / package).glob("*.py")
        if any(word in path.read_text(encoding="utf-8") for word in ("os.environ", "os.getenv"))
    )
    assert readers in ([reader], [])


# -- nothing cited from outside the repository --------------------------------------------
SKIPPED_DIRS = {".git", ".venv", ".data", "logs", "node_modules", "__pycache__"}


def repository_files() -> list[Path]:
    """Return the repository's files: git's list when this is a checkout, else the tree."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout.decode()
        files = [ROOT / name for name in listed.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        files = []
    if not files:
        files = [
            path
            for path in ROOT.rglob("*")
            if path.is_file() and not SKIPPED_DIRS & set(path.relative_to(ROOT).parts[:-1])
        ]
    return [path for path in files if path.is_file()]


def texts() -> list[tuple[Path, str]]:
    out = []
    for path in repository_files():
        try:
            out.append((path, path.read_text(encoding="utf-8")))
        except (UnicodeDecodeError, OSError):
            continue  # a binary file cites nothing
    return out


def test_every_document_cited_is_in_the_repository():
    # A user has the repository and nothing else: a document named anywhere in it (code,
    # messages, docs) must be one of its own files, or the pointer leads nowhere.
    names = {path.name for path in repository_files()}
    missing = sorted(
        f"{path.relative_to(ROOT)}: {cited}"
        for path, text in texts()
        for cited in re.findall(r"[\w./-]*\w\.(?:md|rst)\b", text)
        if Path(cited).name not in names
    )
    assert missing == []


def test_every_relative_link_in_the_docs_resolves():
    broken = sorted(
        f"{path.relative_to(ROOT)}: {target}"
        for path, text in texts()
        if path.suffix == ".md"
        for target in re.findall(r"\]\(([^)#\s]+)", text)
        if "://" not in target
        and not target.startswith("mailto:")
        and not (path.parent / target).exists()
    )
    assert broken == []


def test_every_bench_table_is_written_by_a_bench():
    # A figure typed by hand goes stale the day the code changes; bench_report.py rewrites
    # the marked sections from what each benchmark prints.
    inside, loose = False, []
    text = (ROOT / "bench" / "README.md").read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("<!-- bench_report.py:"):
            inside = True
        elif line.startswith("<!-- /bench_report.py:"):
            inside = False
        elif line.startswith("|") and not inside:
            loose.append(f"bench/README.md:{number}: {line[:60]}")
    assert loose == []


def test_every_test_a_doc_names_exists():
    # docs/RELIABILITY.md keeps each promise by "the test named beside it": a renamed or
    # deleted test must not leave the promise pointing at nothing.
    # A file name may stand in several folders (tests/api and tests/faults): any will do.
    tests: dict[str, list[Path]] = {}
    for path in (ROOT / "tests").rglob("test_*.py"):
        tests.setdefault(path.name, []).append(path)
    missing = []
    for doc in [ROOT / "README.md", ROOT / "ANALYTICS_REFRESH_CRON_GUIDE.md", ROOT / "docs"]:
        for path in [doc] if doc.is_file() else sorted(doc.glob("*.md")):
            current = None
            text = path.read_text(encoding="utf-8")
            for file, name in re.findall(r"`(?:[\w/]*/)?(test_\w+\.py)?::(test_\w+)", text):
                current = file or current
                sources = tests.get(current or "", [])
                if not any(f"def {name}(" in p.read_text(encoding="utf-8") for p in sources):
                    missing.append(f"{path.name}: {current}::{name}")
    assert missing == []
