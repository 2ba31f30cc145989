"""Typed values read from an environment, every problem collected before one error.

settings.py reads each variable through a ``Reader``: a bad value adds a line naming the
variable and what it expects, never a secret's value, and ``raise_problems`` reports them
all at once so a user fixes them in one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from analytics_refresh.config.envfile import origin_of
from analytics_refresh.config.urls import check_database_url, display_url
from analytics_refresh.errors import ConfigError

MIN_SECRET_LENGTH = 32


class Reader:
    """Reads typed values and collects every problem before raising once."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ
        self.problems: list[str] = []

    def text(self, name: str) -> str:
        return self.environ.get(name, "").strip()

    def parsed(self, name: str, parse: Callable[[str], Any]) -> Any:
        raw = self.text(name)
        if not raw:
            return None
        try:
            return parse(raw)
        except ValueError as exc:
            shown = f"={display_url(raw)!r}" if len(raw) <= 200 else ""
            self.problems.append(f"{name}{shown} is invalid: {exc}")
            return None

    def database_url(self) -> str | None:
        """Read DATABASE_URL; a bad one is reported without any part of its value, which
        may hold a password."""
        value = self.text("DATABASE_URL")
        if not value:
            return None
        problem = check_database_url(value)
        if problem:
            self.problems.append(f"DATABASE_URL is invalid: {problem}")
            return None
        return value

    def secret(self, name: str) -> str | None:
        """Read a secret from ``NAME``, or from the file ``NAME_FILE`` names (Docker secrets)."""
        return self.text_or_file(name)

    def text_or_file(self, name: str) -> str | None:
        """Read ``NAME``, or the contents of the file ``NAME_FILE`` names.

        Setting both, in any mix of the environment and ``.env``, is an error: whichever
        won, the other would be ignored without a word.
        """
        value = self.text(name)
        file_name = self.text(f"{name}_FILE")
        if value and file_name:
            where = origin_of(self.environ)
            self.problems.append(
                f"{name} (set in {where(name)}) and {name}_FILE (set in "
                f"{where(name + '_FILE')}) are both set: expected one of them; unset the other"
            )
            return None
        if not value and file_name:
            try:
                value = Path(file_name).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or "not UTF-8 text"
                self.problems.append(f"{name}_FILE={file_name!r} cannot be read: {reason}")
        return value or None

    def check_secret_length(self, name: str, secret: str | None) -> None:
        # The value itself never appears in the message: only its length.
        if secret is not None and len(secret) < MIN_SECRET_LENGTH:
            self.problems.append(
                f"{name} is too short: expected at least {MIN_SECRET_LENGTH} "
                f"characters, got {len(secret)}"
            )

    def raise_problems(self) -> None:
        if self.problems:
            lines = "\n  ".join(self.problems)
            raise ConfigError(f"invalid configuration:\n  {lines}")
