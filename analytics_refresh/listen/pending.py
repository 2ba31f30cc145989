"""What is pending, and when each key is due: the coalescing rule.

A key is due once its changes have been quiet for ``settle`` seconds, or once its first
unreflected change has waited ``max_delay`` seconds, whichever comes first. So a burst
of changes to one key is one refresh, and a key that never goes quiet is still refreshed
at least every ``max_delay`` seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from analytics_refresh.store import freshness_sql
from analytics_refresh.store.plan import Job

from . import queries as sql


@dataclass(frozen=True)
class Pending:
    """One pending key as read at ``seen`` (a monotonic reading)."""

    job: Job
    quiet_for: float  # seconds since its newest change
    waiting_for: float  # seconds since its first unreflected change
    held_for: float | None  # seconds its current claim (or failure pause) still holds
    holder: str | None
    seen: float
    first_at: datetime | None = None  # the first unreflected change, as the database has it

    def due_in(self, settle: float, max_delay: float) -> float:
        """Seconds from ``seen`` until the key is due (<= 0: due now), ignoring claims."""
        return min(settle - self.quiet_for, max_delay - self.waiting_for)

    def free_in(self) -> float:
        """Seconds from ``seen`` until no claim or pause holds the key."""
        return max(0.0, self.held_for or 0.0)

    @property
    def first_change(self) -> float:
        """The first unreflected change, as a monotonic reading."""
        return self.seen - self.waiting_for


def read(conn, platforms) -> list[Pending]:
    """Return every pending key of the configured platforms."""
    seen = time.monotonic()
    with conn.cursor() as cur:
        # The application's table may keep its ids as text: read them as the plan does.
        query = freshness_sql.with_client_ids(sql.PENDING, conn)
        cur.execute(query, {"platforms": list(platforms)})
        rows = cur.fetchall()
    return [
        Pending(Job(c, p), q, w, h, holder, seen, first) for c, p, q, w, h, holder, first in rows
    ]


@dataclass
class Plan:
    """The keys to claim now, and how long until the next one comes due or frees."""

    due: list[Pending]
    wake_in: float | None  # None: nothing pending that this listener could take later
    oldest: float  # seconds the oldest first unreflected change has waited (0: none)


def plan(pending: list[Pending], settle: float, max_delay: float) -> Plan:
    """Split pending keys into those due now and the time until the next."""
    due, later = [], []
    for key in pending:
        wait = max(key.due_in(settle, max_delay), key.free_in())
        if wait <= 0:
            due.append(key)
        else:
            later.append(wait)
    oldest = max((k.waiting_for for k in pending), default=0.0)
    # Oldest first: under a backlog the longest-waiting changes go out first.
    due.sort(key=lambda k: -k.waiting_for)
    return Plan(due, min(later) if later else None, oldest)
