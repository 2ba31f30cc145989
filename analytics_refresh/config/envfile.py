"""The ``.env`` file: reading it, strictly, merging it under the process environment, and
saying where each variable was set.

The messages of every check name the file or "the environment", so a user knows which of
the two to edit.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from analytics_refresh.errors import ConfigError


class Environment(dict):
    """The variables a command reads, knowing which came from ``.env`` (for messages)."""

    dotenv_path: Path | None = None
    dotenv_names: frozenset[str] = frozenset()


def dotenv_names(environ: Mapping[str, str]) -> frozenset[str]:
    """Return the names of ``environ`` that came from ``.env``."""
    return getattr(environ, "dotenv_names", frozenset())


def change_source(environ: Mapping[str, str], where: Callable[[str], str]) -> str:
    """Name the variable the change query came from, and where it was set."""
    path = environ.get("REFRESH_CHANGE_SQL_FILE", "").strip()
    if path:
        return f"REFRESH_CHANGE_SQL_FILE={path} (set in {where('REFRESH_CHANGE_SQL_FILE')})"
    return f"REFRESH_CHANGE_SQL (set in {where('REFRESH_CHANGE_SQL')})"


def origin_of(environ: Mapping[str, str]) -> Callable[[str], str]:
    """Return a function naming where a variable of ``environ`` was set."""
    from_file = dotenv_names(environ)
    path = getattr(environ, "dotenv_path", None)
    return lambda name: str(path) if name in from_file else "the environment"


def read_dotenv(path: Path) -> dict[str, str]:
    """Return the variables of a ``.env`` file, or raise ConfigError at its first bad line."""
    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise ConfigError(f"{path} cannot be read: {reason}") from exc
    bad = [b.original.line for b in parse_stream(io.StringIO(text)) if b.error]
    if bad:
        lines = ", ".join(str(n) for n in bad[:5])
        raise ConfigError(
            f"{path}: line {lines} cannot be parsed (expected NAME=value)",
            hint="quote values with spaces or '#', close every quote; .env.example shows "
            "each variable",
        )
    values = dotenv_values(stream=io.StringIO(text), interpolate=True)
    return {k: v for k, v in values.items() if v is not None}


def load_environment(
    environ: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Mapping[str, str]:
    """Return the environment to read settings from.

    A given ``environ`` is used as it is (tests, embedding). Otherwise ``.env`` in the
    working directory is read, and the process environment wins over it, so a scheduler's
    settings are never undone. A ``.env`` line that cannot be parsed is a configuration
    error naming the file and the line: skipping it would run with a default instead.
    """
    if environ is not None:
        return environ
    path = (cwd or Path.cwd()) / ".env"
    from_file = read_dotenv(path)
    merged = Environment(from_file)
    merged.update(os.environ)
    merged.dotenv_path = path
    merged.dotenv_names = frozenset(set(from_file) - set(os.environ))
    return merged


def given_environment(environ: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """Return ``environ``, or the process environment as it is, before ``.env`` is read."""
    return os.environ if environ is None else environ
