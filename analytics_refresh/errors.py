"""The exceptions the runner raises on purpose, each carrying its exit code.

The CLI turns these into exit codes in one place (``cli.main``). The docstring of each
class is its default message; a driver's own exception is kept as ``__cause__``.
"""

from __future__ import annotations


class RefreshError(Exception):
    """The refresh run failed."""

    exit_code = 1

    def __init__(self, message: str | None = None, *, hint: str | None = None):
        super().__init__(message or (self.__doc__ or "").strip())
        self.hint = hint

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}\n  fix: {self.hint}" if self.hint else text


class UsageError(RefreshError):
    """Bad command line."""

    exit_code = 2


class ConfigError(RefreshError):
    """A setting is missing or invalid."""

    exit_code = 3


class DatabaseError(RefreshError):
    """The database is unreachable or the runner's tables are missing."""

    exit_code = 4


class LockHeld(RefreshError):
    """Another refresh run holds the lock; this one did nothing."""

    exit_code = 5


class LockLost(RefreshError):
    """The database session holding the run lock was lost; exclusivity is no longer certain."""

    exit_code = 6


def first_line(exc: BaseException) -> str:
    """Return the first line of an exception's message (driver errors run to many lines)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
