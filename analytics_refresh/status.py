"""``analytics-refresh status``: recent runs and the age of every client's cache.

The age of a client x platform is the time since its cache was last known current, read
from ``refresh_state``: its last successful refresh, or a later change-aware run that found
its data unchanged. Which client x platforms should exist follows the run's own planning
rules (plan.py), so a connected client that was never refreshed shows up, as stale. Exit 0
when every one is fresher than ``--max-age``, else 1: a monitoring check and the Docker
``HEALTHCHECK`` in one. A key whose last attempt failed is marked, and the report does not
call itself healthy while any is.
"""

from __future__ import annotations

import functools
import gc
import json
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from . import db, records
from . import statements as sql
from .records import Freshness
from .settings import Settings


@dataclass
class Report:
    """What ``status`` shows."""

    now: datetime
    runs: list[dict]
    keys: list[Freshness]
    max_age_hours: float

    @functools.cached_property
    def stale(self) -> list[Freshness]:
        return [k for k in self.keys if k.is_stale(self.max_age_hours * 3600)]

    @functools.cached_property
    def failing(self) -> list[Freshness]:
        return [k for k in self.keys if k.failing]

    @functools.cached_property
    def failing_repeatedly(self) -> list[Freshness]:
        rows = [k for k in self.keys if k.failing_repeatedly]
        return sorted(rows, key=lambda k: -k.state.consecutive_failures)

    @property
    def healthy(self) -> bool:
        return not self.stale and not self.failing

    @property
    def exit_code(self) -> int:
        return 1 if self.stale else 0


def read_report(settings: Settings, max_age_hours: float, runs: int) -> Report:
    url = db.database_url(settings)
    with db.connection(url) as conn:
        db.require_runner_tables(conn)
        with conn.cursor() as cur:
            cur.execute(sql.UTC)  # times come back in UTC, ready for ISO 8601
        _, recent = records.recent_runs(conn, runs)
        now, keys = records.freshness(conn, settings)
    return Report(now, recent, keys, max_age_hours)


def show_status(settings: Settings, as_json: bool, max_age_hours: float, runs: int) -> int:
    """Print recent runs and cache ages; return 0 when all are fresh, else 1."""
    # A short-lived command that builds hundreds of thousands of objects and frees none
    # of them early: the cycle collector would only walk them again and again.
    gc.disable()
    report = read_report(settings, max_age_hours, runs)
    if as_json:
        # Compact: an indent turns off json's C encoder, seconds at 300,000 keys.
        # One string, one write: json.dump would write it piece by piece.
        sys.stdout.write(json.dumps(as_dict(report), separators=(",", ":")) + "\n")
    else:
        from .console import output_console, print_status

        print_status(output_console(), report)
    return report.exit_code


@functools.lru_cache(maxsize=8192)
def _iso(value: datetime | None) -> str | None:
    # Cached: the keys of one batch of a run share their times to the microsecond.
    if value is None:
        return None
    if value.utcoffset() != _ZERO:
        value = value.astimezone(timezone.utc)
    return value.isoformat()


_ZERO = timedelta(0)


def _hours(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 3600, 4)


def as_dict(report: Report) -> dict:
    max_age = report.max_age_hours * 3600
    return {
        "now": _iso(report.now),
        "max_age_hours": report.max_age_hours,
        "healthy": report.healthy,
        "total": len(report.keys),
        "stale_count": len(report.stale),
        "never_refreshed_count": sum(1 for r in report.keys if r.last_success is None),
        "failing_count": len(report.failing),
        "failing_repeatedly_count": len(report.failing_repeatedly),
        "runs": [
            {
                "run_id": run["run_id"],
                "trigger": run["trigger"],
                "host": run["host"],
                "shard": run["shard"] or None,
                "started_at": _iso(run["started_at"]),
                "finished_at": _iso(run["finished_at"]),
                "duration_seconds": run["duration_seconds"],
                "status": run["status"],
                "exit_code": run["exit_code"],
                "jobs": {
                    "total": run["jobs_total"],
                    "succeeded": run["jobs_succeeded"],
                    "failed": run["jobs_failed"],
                    "not_attempted": run["jobs_not_attempted"],
                    "skipped": run["jobs_skipped"],
                    "unchanged": run["jobs_unchanged"],
                },
                "checked_changes": run["checked_changes"],
                "note": run["note"],
            }
            for run in report.runs
        ],
        "caches": [
            {
                "client_id": r.client_id,
                "platform": r.platform,
                "last_success_at": _iso(r.last_success),
                "age_hours": _hours(r.age_seconds),
                "stale": r.is_stale(max_age),
                "last_verified_at": _iso(r.current_at),
                "last_attempt_at": _iso(r.state.last_attempt_at),
                "last_status": r.state.last_status,
                "last_error": r.state.last_error,
                "consecutive_failures": r.state.consecutive_failures,
                "data_changed_at": _iso(r.state.changed_at),
                "data_changed_hours": _hours(r.changed_seconds),
                "expires_at": _iso(r.state.expires_at),
                "expired": r.expired,
                "change_pending": r.state.pending,
            }
            for r in report.keys
        ],
    }
