"""The parsers of setting values: each takes the raw text and returns the value, or raises
ValueError("expected ...") saying what it wants. settings.py applies them to variables and
flags alike."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

PLATFORMS = ("shopify", "amazon", "all")


def number(kind: type, low: float | None = None, high: float | None = None) -> Callable:
    """Return a parser of ``kind`` (int or float) between ``low`` and ``high``."""

    def parse(raw: str):
        try:
            value = kind(raw.strip())
        except ValueError:
            expected = "a whole number" if kind is int else "a number"
            raise ValueError(f"expected {expected}") from None
        if (
            value != value
            or (low is not None and value < low)
            or (high is not None and value > high)
        ):
            bounds = f"at least {low:g}" if high is None else f"between {low:g} and {high:g}"
            raise ValueError(f"expected a value {bounds}")
        return value

    return parse


def choice(choices: tuple[str, ...], *, upper: bool = False) -> Callable:
    def parse(raw: str) -> str:
        value = raw.strip().upper() if upper else raw.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse


def boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false (also 1/0, yes/no, on/off)")


def parse_platforms(text: str) -> tuple[str, ...]:
    """Parse a comma-separated platform list, keeping the canonical order."""
    names = {part.strip().lower() for part in text.split(",") if part.strip()}
    if not names or names - set(PLATFORMS):
        raise ValueError(f"expected a comma-separated subset of {','.join(PLATFORMS)}")
    return tuple(p for p in PLATFORMS if p in names)


def path_text(text: str) -> str:
    if not text.startswith("/"):
        raise ValueError("expected a path starting with /")
    return text


def existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise ValueError("expected the path of a readable CA bundle file")
    return path
