"""Any text from outside, made safe to store and to log: plain, printable, one line."""

from __future__ import annotations


def _escape(char: str) -> str:
    code = ord(char)
    if char == "\n":
        return "\\n"
    if char == "\t":
        return "\\t"
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def plain(text: str, limit: int | None = None) -> str:
    """Return ``text`` with every unprintable character escaped, cut at ``limit``.

    Control characters (NUL, newlines, ANSI escapes), line and paragraph separators, lone
    surrogates (which neither UTF-8 nor PostgreSQL can hold) and other unprintable
    characters become backslash escapes: one line of plain text, whatever came in.
    """
    if limit is not None and len(text) > limit * 10:
        text = text[: limit * 10]  # escaping at most multiplies a character by ten
    if not text.isprintable():
        text = "".join(c if c.isprintable() else _escape(c) for c in text)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


INT4_MAX = 2**31 - 1


def int4(value) -> int | None:
    """Return ``value`` if it fits a PostgreSQL integer column, else None (never a crash)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if -INT4_MAX - 1 <= value <= INT4_MAX else None
