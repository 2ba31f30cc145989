"""``analytics-refresh status``: recent runs and how fresh the caches are, counted in SQL.

The age of a client x platform is the time since its cache was last known current
(``sql/key_freshness.sql``, shared with the metrics); which keys should exist follows the
run's own planning rules, so a connected client that was never refreshed shows up, as
stale. The counts and the worst keys come from aggregate queries, so the summary costs the
same at 300,000 keys as at 3; the per-key list is there on request (``--keys``, with
``--stale-only`` and ``--limit``), streamed. Exit 0 when every key is fresher than
``--max-age``, else 1: a monitoring check and the Docker ``HEALTHCHECK`` in one.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from analytics_refresh.config.settings import Settings
from analytics_refresh.listen import overview
from analytics_refresh.store import db, key_freshness, records
from analytics_refresh.store import statements as sql
from analytics_refresh.store.key_freshness import KeyRow, Summary

# The worst keys a summary names: --json's "worst", and the text table's rows.
WORST_SHOWN = 20
SHOWN_ROWS = 50
STREAKS_SHOWN = 20
# Rows of the streamed list written at a time: one write per row would cost more than JSON.
WRITE_ROWS = 1000


@dataclass
class Report:
    """What ``status`` shows."""

    runs: list[dict]
    summary: Summary
    max_age_hours: float
    promise_seconds: float
    listen: dict | None = None  # live listeners and pending keys (listen/overview.py)

    @property
    def now(self) -> datetime:
        return self.summary.now

    def count(self, name: str) -> int:
        return self.summary.total(name)

    @property
    def total(self) -> int:
        return self.count("keys")

    @property
    def healthy(self) -> bool:
        return not self.count("stale") and not self.count("failing")

    @property
    def exit_code(self) -> int:
        return 1 if self.count("stale") else 0


def _session(conn) -> None:
    db.require_runner_tables(conn)
    with conn.cursor() as cur:
        cur.execute(sql.UTC)  # times come back in UTC, ready for ISO 8601


def read_report(settings: Settings, max_age_hours: float, runs: int, worst: int) -> Report:
    """Return the recent runs and the keys' summary, read in one connection."""
    with db.connection(db.database_url(settings)) as conn:
        _session(conn)
        return _report(conn, settings, max_age_hours, runs, worst)


def _report(conn, settings: Settings, max_age_hours: float, runs: int, worst: int) -> Report:
    _, recent = records.recent_runs(conn, runs)
    summary = key_freshness.read(
        conn, settings, worst=worst, streaks=STREAKS_SHOWN, max_age_seconds=max_age_hours * 3600
    )
    listen = overview.read(conn, settings.platforms)
    return Report(recent, summary, max_age_hours, key_freshness.promise_seconds(settings), listen)


@dataclass(frozen=True)
class KeyList:
    """Which keys to list one by one: none, every one, or the stale ones; at most ``limit``."""

    wanted: bool = False
    stale_only: bool = False
    limit: int | None = None


def show_status(
    settings: Settings,
    as_json: bool,
    max_age_hours: float,
    runs: int,
    keys: KeyList = KeyList(),
) -> int:
    """Print recent runs and cache ages; return 0 when all are fresh, else 1."""
    worst = WORST_SHOWN if as_json else SHOWN_ROWS
    with db.connection(db.database_url(settings)) as conn:
        _session(conn)
        report = _report(conn, settings, max_age_hours, runs, worst)
        rows = None
        if keys.wanted:
            rows = key_freshness.stream(
                conn,
                settings,
                max_age_seconds=max_age_hours * 3600,
                stale_only=keys.stale_only,
                limit=keys.limit,
            )
        if as_json:
            write_json(sys.stdout, report, rows)
        else:
            from analytics_refresh.ui.console import output_console, print_status

            print_status(output_console(), report, rows)
            for line in overview.describe(report.listen):
                print(line)
    return report.exit_code


def write_json(out, report: Report, rows: Iterable[KeyRow] | None) -> None:
    """Write the summary as one JSON line, with the key list streamed into it when asked."""
    # Compact: an indent turns off json's C encoder.
    text = json.dumps(as_dict(report), separators=(",", ":"))
    if rows is None:
        out.write(text + "\n")
        return
    out.write(text[:-1] + ',"caches":[')
    batch: list[str] = []
    first = True
    for row in rows:
        batch.append(json.dumps(key_dict(row), separators=(",", ":")))
        if len(batch) >= WRITE_ROWS:
            out.write(("" if first else ",") + ",".join(batch))
            first, batch = False, []
    if batch:
        out.write(("" if first else ",") + ",".join(batch))
    out.write("]}\n")


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


def _listeners(listen: dict | None) -> list[dict]:
    if not listen:
        return []
    return [{**item, "started_at": _iso(item["started_at"])} for item in listen["listeners"]]


def key_dict(r: KeyRow) -> dict:
    """Return one key as --json lists it."""
    return {
        "client_id": r.client_id,
        "platform": r.platform,
        "last_success_at": _iso(r.last_success_at),
        "age_hours": _hours(r.age_seconds),
        "stale": r.stale,
        "last_verified_at": _iso(r.current_at),
        "last_attempt_at": _iso(r.last_attempt_at),
        "last_status": r.last_status,
        "last_error": r.last_error,
        "consecutive_failures": r.consecutive_failures,
        "data_changed_at": _iso(r.changed_at),
        "data_changed_hours": _hours(r.changed_seconds),
        "expires_at": _iso(r.expires_at),
        "expired": r.expired,
        "change_pending": r.pending,
    }


def _run_dict(run: dict) -> dict:
    return {
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


def _age_hours(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else _hours(max(0.0, (now - then).total_seconds()))


def as_dict(report: Report) -> dict:
    """Return the summary as --json writes it: its size does not grow with the keys."""
    now = report.now
    return {
        "now": _iso(now),
        "max_age_hours": report.max_age_hours,
        "promise_hours": _hours(report.promise_seconds),
        "healthy": report.healthy,
        "total": report.total,
        "stale_count": report.count("stale"),
        "never_refreshed_count": report.count("never"),
        "failing_count": report.count("failing"),
        "failing_repeatedly_count": report.count("failing_repeatedly"),
        "outside_promise_count": report.count("outside_promise"),
        "listeners": _listeners(report.listen),
        "pending_keys": report.listen["pending_keys"] if report.listen else None,
        "oldest_pending_seconds": (
            report.listen["oldest_pending_seconds"] if report.listen else None
        ),
        "platforms": {
            p.platform: {
                "total": p.keys,
                "stale_count": p.stale,
                "never_refreshed_count": p.never,
                "failing_count": p.failing,
                "failing_repeatedly_count": p.failing_repeatedly,
                "outside_promise_count": p.outside_promise,
                "oldest_age_hours": _age_hours(now, p.oldest_current_at),
                "newest_age_hours": _age_hours(now, p.newest_current_at),
            }
            for p in report.summary.platforms.values()
        },
        "runs": [_run_dict(run) for run in report.runs],
        "worst": [key_dict(r) for r in report.summary.worst],
        "failing_repeatedly": [key_dict(r) for r in report.summary.streaks],
    }
