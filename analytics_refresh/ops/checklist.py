"""The preflight checklist's lines: a ``Result`` per check, and the exit code a failed
check stands for (the one a run would end with)."""

from __future__ import annotations

from dataclasses import dataclass

from analytics_refresh.errors import ConfigError, DatabaseError, RefreshError

# The exit code a run would end with when a check of this kind fails.
SETTINGS_FAILED = ConfigError.exit_code
DATABASE_FAILED = DatabaseError.exit_code
JOBS_WOULD_FAIL = RefreshError.exit_code


@dataclass(frozen=True)
class Result:
    """The outcome of one check."""

    name: str
    state: str  # ok | warn | fail | skip
    detail: str
    fix: str | None = None
    exit_code: int = 0


def ok(name: str, detail: str) -> Result:
    return Result(name, "ok", detail)


def fail(name: str, detail: str, fix: str, code: int) -> Result:
    return Result(name, "fail", detail, fix, code)
