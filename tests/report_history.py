"""Histories with known breaches, written straight into the test database, and an
independent judge of them: minute by minute, from the rows, as the report's guide defines
lateness (a minute is late when the key is late at its first second: older than the age
bound, a change waiting longer than its bound, or its copy expired)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

MINUTE = timedelta(minutes=1)


@dataclass
class Refresh:
    at: datetime
    status: str = "succeeded"
    duration_ms: int = 1000
    change_at: datetime | None = None
    expires_at: datetime | None = None
    error: str | None = None


@dataclass
class KeyHistory:
    client_id: str
    platform: str
    refreshes: list[Refresh] = field(default_factory=list)
    pending_change: datetime | None = None  # a change no refresh has covered yet


def database_minute(db) -> datetime:
    with db.cursor() as cur:
        cur.execute("SELECT date_trunc('minute', now())")
        return cur.fetchone()[0].astimezone(timezone.utc)


def write(db, keys: list[KeyHistory], *, trigger: str = "cron", checked: bool = False) -> None:
    """Write one run row per distinct refresh time and a job row per refresh."""
    with db.cursor() as cur:
        runs: dict[datetime, str] = {}
        for key in keys:
            for r in key.refreshes:
                if r.at not in runs:
                    runs[r.at] = str(uuid.uuid4())
                    cur.execute(
                        "INSERT INTO refresh_runs (run_id, trigger, host, started_at, "
                        "finished_at, status, exit_code, jobs_total, jobs_succeeded, "
                        "checked_changes) "
                        "VALUES (%s, %s, 'test', %s, %s, 'succeeded', 0, 1, 1, %s)",
                        (runs[r.at], trigger, r.at - MINUTE, r.at, checked),
                    )
                cur.execute(
                    "INSERT INTO refresh_jobs (run_id, client_id, platform, status, attempts, "
                    "duration_ms, error, finished_at, change_at, expires_at) "
                    "VALUES (%s, %s, %s, %s, 1, %s, %s, %s, %s, %s)",
                    (
                        runs[r.at],
                        key.client_id,
                        key.platform,
                        r.status,
                        r.duration_ms,
                        r.error,
                        r.at,
                        r.change_at,
                        r.expires_at,
                    ),
                )


def judge(
    key: KeyHistory,
    *,
    start: datetime,
    now: datetime,
    age: timedelta,
    change: timedelta | None,
    expiry: bool,
) -> dict[str, list[int]]:
    """Return, per UTC day, [counted minutes, late minutes, breaches begun]."""
    wins = sorted((r for r in key.refreshes if r.status == "succeeded"), key=lambda r: r.at)
    changes = [(r.change_at, r.at) for r in wins if r.change_at is not None]
    if key.pending_change is not None:
        changes.append((key.pending_change, None))
    failed = [(r.change_at, r.at) for r in key.refreshes if r.status == "failed" and r.change_at]
    for seen, at in failed:
        if not any(w.at > at for w in wins):
            changes.append((seen, None))
    firsts = [w.at for w in wins] + [c for c, _ in changes]
    first = min(firsts) if firsts else None
    days: dict[str, list[int]] = {}
    was_late = False
    t = start
    while t < now:
        day = days.setdefault(t.date().isoformat(), [0, 0, 0])
        late = False
        if first is not None and t >= first:
            day[0] += 1
            last = max((w for w in wins if w.at <= t), default=None, key=lambda w: w.at)
            if last is not None and t - last.at > age:
                late = True
            if expiry and last is not None and last.expires_at and t >= last.expires_at:
                late = True
            if change is not None:
                for seen, covered in changes:
                    if t > seen + change and (covered is None or t < covered):
                        late = True
        if late:
            day[1] += 1
            if not was_late:
                day[2] += 1
        was_late = late
        t += MINUTE
    return days
