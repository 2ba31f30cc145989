"""The report's figures, computed in the database from the runner's tables.

The window is ``days`` whole UTC days ending with today (today up to now). Each judged key
(client x platform connected now, as a run would plan it) counts from its first recorded
success or change; a late minute is one in which the promise (bounds.py) is not kept.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

from analytics_refresh.store import db, records
from analytics_refresh.store.plan import Job

from . import queries as q
from .bounds import Bounds, bounds_for
from .grid import GRID_KEYS, Cell, Key, ceil_minute, disconnected, lines, worst_keys

TOP_CLIENTS = 20
TOP_REASONS = 10
WORST_PER_DAY = 3
# A report reads weeks of history in one pass: longer than a run's statements may take,
# and still bounded.
STATEMENT_SECONDS = 300.0


@dataclass
class Day:
    """One UTC day's headline."""

    date: str
    counted_minutes: int
    late_minutes: int
    breaches: int
    worst: list[tuple[Key, int]] = field(default_factory=list)
    latency: dict | None = None  # count, median_s, p95_s, max_s
    ran: int = 0
    unchanged: int = 0

    @property
    def within_promise(self) -> float | None:
        if not self.counted_minutes:
            return None
        return round(1 - self.late_minutes / self.counted_minutes, 6)


@dataclass
class Figures:
    """Everything the report shows."""

    now: datetime
    start: datetime
    bounds: Bounds
    judged: list[Key]
    days: list[Day]
    key_late: dict[Key, int]
    grid: list[tuple[Key, list[Cell]]]
    rest: list[tuple[datetime, int]]  # per hour, other keys late in it
    rest_keys: int
    client_seconds: dict[str, float]
    client_day_seconds: dict[str, dict[str, float]]
    reasons: list[tuple[str, int, int, str]]
    failing_keys: list[tuple[Key, int, datetime, int, str | None]]

    @property
    def keys_judged(self) -> int:
        return len(self.judged)

    @property
    def hours(self) -> int:
        return max(1, -(-int((self.now - self.start).total_seconds()) // 3600))


def collect(conn, settings, days: int, url: str | None = None) -> Figures:
    """Compute every figure of the last ``days`` UTC days, in one transaction (and, given
    the database's ``url``, the backend's seconds on a second connection at once)."""
    jobs = records.expected_jobs(conn, settings)
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute("SET LOCAL TIME ZONE 'UTC'")
            cur.execute("SET LOCAL work_mem = '64MB'")
            cur.execute(
                "SELECT now(), date_trunc('day', now()) - make_interval(days => %s)", (days - 1,)
            )
            now, start = cur.fetchone()
            params = {"lo": start, "hi": now}
            cur.execute(q.RUN_KINDS, params)
            checked, listener = cur.fetchone()
            bounds = bounds_for(settings, checked_runs=checked, listener_runs=listener)
            params.update(
                age_s=bounds.age_seconds,
                change_s=bounds.change_seconds if bounds.change_seconds is not None else 0,
                expiry=bounds.expiry,
                streak=records.FAILING_STREAK,
                limit=TOP_REASONS,
            )
            if bounds.change_seconds is None:
                params["change_s"] = None
            # The backend's seconds on a second connection, while this one judges the keys.
            with ThreadPoolExecutor(max_workers=1) as pool:
                cost = pool.submit(_cost, url, params) if url else None
                _judge(cur, jobs, params)
                if cost is None:
                    cost = _Done(_cost_on(cur, params))
                keys = [(j.client_id, j.platform) for j in jobs]
                figures = _figures(cur, params, bounds, keys, now, start, cost)
    finally:
        conn.rollback()  # the temporary tables go with the transaction
        conn.autocommit = True
    return figures


def _counted(firsts: list[int], day_from: datetime, day_to: datetime) -> int:
    """Return the key-minutes counted in a day: all of it for the keys counting before it,
    the rest of it for those starting in it (``firsts``: sorted start minutes)."""
    m0, m1 = ceil_minute(day_from), ceil_minute(day_to)
    before = bisect.bisect_right(firsts, m0)
    inside = firsts[before : bisect.bisect_left(firsts, m1)]
    return before * (m1 - m0) + sum(m1 - m for m in inside)


class _Done:
    """A result already there, shaped as a future's."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


def _cost_on(cur, params: dict) -> list[tuple]:
    """Return each client's backend seconds and unchanged skips per day: from the day sums
    where `db init` made them and the role may read them, else from every job row of the
    window."""
    cur.execute(q.TABLE_READABLE, ("refresh_job_days",))
    cur.execute(q.COST_DAYS if cur.fetchone()[0] else q.COST, params)
    return cur.fetchall()


def _cost(url: str, params: dict) -> list[tuple]:
    with db.connection(url, statement_ceiling=STATEMENT_SECONDS) as conn, conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
        return _cost_on(cur, params)


def _judge(cur, jobs: list[Job], params: dict) -> None:
    cur.execute(q.CREATE_KEYS)
    cur.execute(q.INSERT_KEYS, ([j.client_id for j in jobs], [j.platform for j in jobs]))
    # The planner takes the filter to keep a third of the window's rows; it keeps a few in a
    # hundred, so the scan is worth splitting among parallel workers.
    cur.execute("SET LOCAL parallel_tuple_cost = 0.001")
    cur.execute(q.ROWS, params)
    cur.execute("SET LOCAL parallel_tuple_cost TO DEFAULT")
    cur.execute(q.TOTALS)
    cur.execute("ANALYZE report_keys, report_totals, report_rows")
    cur.execute(q.FAILURES)
    cur.execute(q.CREATE_PENDING)
    cur.execute(q.PENDING_FROM_FAILURES)
    cur.execute(q.COLUMN_EXISTS, ("refresh_state", "change_pending_at"))
    if cur.fetchone()[0]:
        cur.execute(q.PENDING_FROM_STATE, params)
    cur.execute(q.TABLE_EXISTS, ("refresh_requests",))
    if cur.fetchone()[0]:
        cur.execute(q.PENDING_FROM_REQUESTS, params)
    cur.execute(q.CREATE_GAPS)
    cur.execute("SELECT EXISTS (SELECT 1 FROM report_rows WHERE unknown)")
    if cur.fetchone()[0]:
        cur.execute(q.BEFORE_UNKNOWN, params)
        cur.execute(q.GAPS_OF_UNKNOWN)
    cur.execute(q.KNOWN_GAPS, params)
    cur.execute(q.CREATE_PIECES, params)
    cur.execute(q.KEY_STARTS)
    cur.execute(q.BREACHES)


def _figures(cur, params, bounds, keys: list[Key], now, start, cost) -> Figures:
    judged = len(keys)
    cur.execute(q.START_MINUTES)
    firsts = sorted(m for (m,) in cur.fetchall())
    cur.execute(q.DAY_FIGURES, params)
    days = [
        Day(_date(d), _counted(firsts, d, to), int(late), int(b))
        for d, to, late, b in cur.fetchall()
    ]
    by_date = {d.date: d for d in days}

    key_late: dict[Key, int] = defaultdict(int)
    per_day: dict[str, list[tuple[int, Key]]] = defaultdict(list)
    cur.execute(q.KEY_DAY_LATE, params)
    for client_id, platform, day, minutes in cur:
        key_late[(client_id, platform)] += minutes
        per_day[_date(day)].append((minutes, (client_id, platform)))
    for date, rows in per_day.items():
        rows.sort(key=lambda r: (-r[0], r[1]))
        by_date[date].worst = [(k, m) for m, k in rows[:WORST_PER_DAY]]

    cur.execute(q.LATENCY, params)
    for day, count, median, p95, most in cur.fetchall():
        if _date(day) in by_date:
            by_date[_date(day)].latency = {
                "count": count,
                "median_s": round(median, 3),
                "p95_s": round(p95, 3),
                "max_s": round(most, 3),
            }
    cur.execute(q.SKIPPED, params)
    for day, ran, unchanged in cur.fetchall():
        if day.isoformat() in by_date:
            by_date[day.isoformat()].ran += int(ran)
            by_date[day.isoformat()].unchanged += int(unchanged)

    # Whole milliseconds (the durations are): a sum that is the same in any row order.
    client_ms: dict[str, int] = defaultdict(int)
    client_days: dict[str, dict[str, float]] = defaultdict(dict)
    for client_id, day, seconds, unchanged_rows in cost.result():
        date = day.isoformat()
        if unchanged_rows and date in by_date:
            by_date[date].unchanged += unchanged_rows
        if seconds is not None:
            client_ms[client_id] += round(seconds * 1000)
            client_days[client_id][date] = float(seconds)
    top = sorted(client_ms, key=lambda c: (-client_ms[c], c))[:TOP_CLIENTS]

    cur.execute(q.FAILURE_REASONS, params)
    reasons = cur.fetchall()
    cur.execute(q.FAILING_KEYS, {**params, "limit": GRID_KEYS})
    failing = [((c, p), n, at, streak, err) for c, p, n, at, streak, err in cur.fetchall()]

    grid_keys = worst_keys(key_late, failing, cur)
    grid = lines(cur, params, grid_keys, start, now)
    grid += disconnected(cur, GRID_KEYS - len(grid), start, now)
    rest = []
    if judged > len(grid_keys):
        cur.execute(
            q.REST_HOURS,
            {
                **params,
                "clients": [k[0] for k in grid_keys],
                "platforms": [k[1] for k in grid_keys],
            },
        )
        rest = sorted(cur.fetchall())
    return Figures(
        now=now,
        start=start,
        bounds=bounds,
        judged=keys,
        days=days,
        key_late=dict(key_late),
        grid=grid,
        rest=rest,
        rest_keys=max(0, judged - len(grid_keys)),
        client_seconds={c: ms / 1000 for c, ms in client_ms.items()},
        client_day_seconds={c: client_days[c] for c in top},
        reasons=reasons,
        failing_keys=failing,
    )


def _date(value: datetime) -> str:
    return value.astimezone(timezone.utc).date().isoformat()
