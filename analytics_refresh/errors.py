"""The exceptions the runner raises on purpose, each carrying its exit code.

``exit_code()`` is the one mapping from any exception to the process's exit code;
``process.run_command`` applies it for every command, and ``outcome.decide`` turns it into
a run's status. The docstring of each class is its default message; a driver's own
exception is kept as ``__cause__``.
"""

from __future__ import annotations


class RefreshError(Exception):
    """The refresh run failed."""

    exit_code = 1

    def __init__(self, message: str | None = None, *, hint: str | None = None):
        super().__init__(message or (self.__doc__ or "").strip())
        self.hint = hint

    @property
    def message(self) -> str:
        """The message without the hint."""
        return self.args[0] if self.args else (self.__doc__ or "").strip()

    def __str__(self) -> str:
        return f"{self.message}\n  fix: {self.hint}" if self.hint else self.message


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


class Interrupted(RefreshError):
    """The run was stopped by a signal before it could finish."""

    exit_code = 6


def exit_code(exc: BaseException) -> int:
    """Return the exit code a process ends with when ``exc`` escapes a command."""
    if isinstance(exc, RefreshError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted.exit_code
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else 1
    # A driver error that escaped the database boundary is still the database's problem.
    if type(exc).__module__.startswith("psycopg2"):
        return DatabaseError.exit_code
    return 1


def first_line(exc: BaseException) -> str:
    """Return the first line of an exception's message (driver errors run to many lines)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
