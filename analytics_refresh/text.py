"""Any text from outside, made safe to store and to log: plain, printable, one line."""

from __future__ import annotations

import re

# C0 and C1 controls (NUL, newlines, ANSI escapes' ESC...), DEL, and lone surrogates, which
# neither UTF-8 nor PostgreSQL can hold.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape(match: re.Match) -> str:
    char = match.group()
    code = ord(char)
    if char == "\n":
        return "\\n"
    if char == "\t":
        return "\\t"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def plain(text: str, limit: int | None = None) -> str:
    """Return ``text`` with control characters and lone surrogates escaped, cut at ``limit``."""
    if limit is not None and len(text) > limit * 4:
        text = text[: limit * 4]  # escaping at most quadruples a character
    safe = _UNSAFE.sub(_escape, text)
    if limit is not None and len(safe) > limit:
        safe = safe[: limit - 1] + "…"
    return safe


def plain_bytes(data: bytes, limit: int | None = None) -> str:
    """Decode bytes of unknown encoding as UTF-8 where valid, then make them plain."""
    return plain(data.decode("utf-8", errors="backslashreplace"), limit)


INT4_MAX = 2**31 - 1


def int4(value) -> int | None:
    """Return ``value`` if it fits a PostgreSQL integer column, else None (never a crash)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if -INT4_MAX - 1 <= value <= INT4_MAX else None
