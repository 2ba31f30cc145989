"""The freshness each mode promises, as numbers from the settings, and the one judgement of
whether a key is within it (status, metrics and the report all use this module).

- classic (no change query): every key is refreshed every run, so a dashboard is at most
  one interval plus a run old (``REFRESH_INTERVAL_MINUTES`` + a run: 2.5 h by default).
- change-aware (``REFRESH_CHANGE_SQL``): a changed key is refreshed within one interval
  plus a run of the change; an unchanged key's copy never expires (it is refreshed ahead of
  its declared expiry); no key is older than the max age plus an interval and a run.
- listener (``analytics-refresh listen``, change-aware runs as its net): a changed key is
  refreshed within ``REFRESH_MAX_DELAY_SECONDS`` plus one refresh of the change; the rest
  as change-aware.

"A run" is what the promise allows one run to take to reach a job: a quarter of the
interval, or the deadline when that is shorter. The lead a copy is refreshed ahead of its
expiry with is one interval plus the longer of that allowance and the recent runs' length,
so the run after next could still come in time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

MODES = ("classic", "change-aware", "listener")
# For `status --help`, which is built before any setting is read.
HELP = """\
the promise of each mode:
  classic       every key is refreshed every run: no dashboard is older than the
                interval (REFRESH_INTERVAL_MINUTES) + a run, 2 h + 30 min by default
  change-aware  (REFRESH_CHANGE_SQL) a change is on its dashboard within the interval
                + a run; an unchanged key's copy is refreshed before its declared expiry,
                and an expired copy counts as stale whatever its age; no dashboard is
                older than REFRESH_MAX_AGE_MINUTES + the interval + a run
  listener      (analytics-refresh listen) a change is on its dashboard within
                REFRESH_MAX_DELAY_SECONDS + one refresh; otherwise as change-aware
a run: a quarter of the interval, or REFRESH_DEADLINE when that is shorter.
A key's age counts from when it was last known current: its last refresh, or the start
of a later change-aware run that found its data unchanged (never past its copy's expiry).
"""
RUN_SHARE = 0.25  # of the interval, allowed to one run in the promise
DEFAULT_MAX_DELAY_SECONDS = 60.0


@dataclass(frozen=True)
class Promise:
    """The bounds one mode promises, in seconds."""

    mode: str
    interval_seconds: float
    run_seconds: float
    max_age_seconds: float  # no dashboard older than this
    staleness_seconds: float  # a change is on the dashboard within this
    keeps_copies: bool  # a copy is refreshed before its declared expiry

    def describe(self) -> str:
        """Return the promise as one sentence for a person."""
        if self.mode == "classic":
            return (
                f"classic: every key is refreshed every run, so no dashboard is older than "
                f"{_span(self.max_age_seconds)} (the interval {_span(self.interval_seconds)} "
                f"+ a run {_span(self.run_seconds)})"
            )
        head = (
            "listener: a change is on its dashboard within"
            if self.mode == "listener"
            else "change-aware: a change is on its dashboard within"
        )
        return (
            f"{head} {_span(self.staleness_seconds)}; an unchanged key's copy is refreshed "
            f"before it expires; no dashboard is older than {_span(self.max_age_seconds)}"
        )


def run_allowance(settings) -> float:
    """Return the seconds the promise allows one run: a quarter interval, or the deadline."""
    return min(settings.deadline, settings.interval_minutes * 60 * RUN_SHARE)


def refresh_lead(settings, recent_run_seconds: float | None = None) -> float:
    """Return how long before its expiry a copy is refreshed: until the next run has ended."""
    run = max(run_allowance(settings), recent_run_seconds or 0.0)
    return settings.interval_minutes * 60 + run


def mode_of(settings) -> str:
    """Return the mode the settings run in (a listener says so itself)."""
    return "change-aware" if settings.change_sql else "classic"


def promise_for(settings, mode: str | None = None) -> Promise:
    """Return the promise of ``mode`` (default: the settings' own) under ``settings``."""
    mode = mode or mode_of(settings)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    interval = settings.interval_minutes * 60
    run = run_allowance(settings)
    if mode == "classic":
        return Promise(mode, interval, run, interval + run, interval + run, False)
    max_age = settings.max_age_minutes * 60 + interval + run
    staleness = interval + run
    if mode == "listener":
        delay = getattr(settings, "max_delay_seconds", DEFAULT_MAX_DELAY_SECONDS)
        staleness = min(staleness, delay + settings.timeout)
    return Promise(mode, interval, run, max_age, staleness, True)


def breach(
    promise: Promise,
    now: datetime,
    *,
    last_success_at: datetime | None,
    current_at: datetime | None = None,
    change_seen_at: datetime | None = None,
    expires_at: datetime | None = None,
) -> str | None:
    """Return why a key is outside the promise at ``now``, or None while it is within.

    ``current_at`` is when it was last known current (a success or a later check; the
    success when None), ``change_seen_at`` when a change not yet refreshed was first seen,
    ``expires_at`` until when its copy holds (None: not declared).
    """
    if last_success_at is None:
        return "never refreshed"
    if promise.keeps_copies and expires_at is not None and expires_at <= now:
        return "its copy expired"
    if change_seen_at is not None:
        waited = (now - change_seen_at).total_seconds()
        if waited > promise.staleness_seconds:
            return f"a change waits for {_span(waited)}"
    age = (now - (current_at or last_success_at)).total_seconds()
    if age > promise.max_age_seconds:
        return f"{_span(age)} old"
    return None


def _span(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 120 or minutes % 60:
        return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h {minutes % 60} min"
    return f"{minutes // 60} h"
