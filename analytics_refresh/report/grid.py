"""The status grid's lines: the worst keys, hour by hour, each hour's state and reason."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from . import queries as q

GRID_KEYS = 50
HOUR = timedelta(hours=1)

Key = tuple[str, str]


@dataclass
class Cell:
    """A run of hours of one grid line in the same state."""

    start: datetime
    hours: int
    state: str  # current | late | failing | never | disconnected | (rest: a share)
    reason: str = ""


def worst_keys(key_late, failing, cur) -> list[Key]:
    """Return the grid's keys: the latest first, then the failing, then the others."""
    ranked = sorted(key_late, key=lambda k: (-key_late[k], k))[:GRID_KEYS]
    for key, *_ in failing:
        if len(ranked) < GRID_KEYS and key not in ranked:
            ranked.append(key)
    if len(ranked) < GRID_KEYS:
        cur.execute(
            "SELECT client_id::text, platform FROM report_starts ORDER BY 1, 2 LIMIT %s",
            (GRID_KEYS * 2,),
        )
        for key in cur.fetchall():
            if len(ranked) < GRID_KEYS and key not in ranked:
                ranked.append(tuple(key))
    return ranked


def disconnected(cur, room: int, start: datetime, now: datetime):
    """Return grid lines for keys the record knows that are not connected now."""
    if room <= 0:
        return []
    cur.execute(q.DISCONNECTED, (room,))
    hours = max(1, -(-int((now - start).total_seconds()) // 3600))
    cell = Cell(start, hours, "disconnected", "not connected now: not counted")
    return [((c, p), [cell]) for c, p in cur.fetchall()]


def lines(cur, params, keys: list[Key], start: datetime, now: datetime):
    if not keys:
        return []
    arrays = {**params, "clients": [k[0] for k in keys], "platforms": [k[1] for k in keys]}
    cur.execute(q.KEY_PIECES, arrays)
    pieces: dict[Key, list] = defaultdict(list)
    for client_id, platform, late_from, late_to, reason, prev_at in cur.fetchall():
        pieces[(client_id, platform)].append((late_from, late_to, reason, prev_at))
    cur.execute(q.KEY_STARTS_OF, arrays)
    starts = {(c, p): at for c, p, at in cur.fetchall()}
    cur.execute(q.FAILURE_HOURS, arrays)
    failures = {(c, p, h): err for c, p, h, err in cur.fetchall()}
    hours = max(1, -(-int((now - start).total_seconds()) // 3600))
    return [
        (key, _cells(key, pieces[key], starts.get(key), failures, start, now, hours))
        for key in keys
    ]


def _cells(key, pieces, start_at, failures, start, now, hours) -> list[Cell]:
    cells: list[Cell] = []
    index = 0
    for h in range(hours):
        hour = start + h * HOUR
        end = min(hour + HOUR, now)
        late = 0
        reason = ""
        while index < len(pieces) and pieces[index][1] <= hour:
            index += 1
        for late_from, late_to, why, _prev in pieces[index:]:
            if late_from >= end:
                break
            late += _minutes(max(late_from, hour), min(late_to, end))
            reason = reason or why
        if start_at is None or start_at >= end:
            state, text = "never", "never refreshed"
        elif late:
            state, text = "late", f"late {late} min ({REASONS[reason]})"
        elif (key[0], key[1], hour) in failures:
            state, text = "failing", f"refresh failed: {failures[(key[0], key[1], hour)]}"
        else:
            state, text = "current", "within the promise"
        # Quiet hours in a row are one cell; a late or failing hour keeps its own reason.
        if cells and cells[-1].state == state and state in ("current", "never"):
            cells[-1].hours += 1
        else:
            cells.append(Cell(hour, 1, state, text))
    return cells


REASONS = {
    "age": "no refresh within the promised age",
    "expired": "its copy had expired",
    "change": "a change not shown within the promised time",
}


def _minutes(a: datetime, b: datetime) -> int:
    if b <= a:
        return 0
    return ceil_minute(b) - ceil_minute(a)


def ceil_minute(t: datetime) -> int:
    """Return the first minute (since the epoch) that begins at or after ``t``."""
    seconds = t.timestamp()
    return -int(-seconds // 60)
