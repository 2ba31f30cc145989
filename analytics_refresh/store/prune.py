"""Bounded history: delete finished runs older than ``REFRESH_HISTORY_DAYS`` with their jobs.

In small batches, each its own short transaction, so no lock is held long enough to slow a
run writing its own rows beside it. Never a running run, never ``refresh_state``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from analytics_refresh.config.settings import Settings
from analytics_refresh.errors import first_line
from analytics_refresh.store import db
from analytics_refresh.store import statements as sql

log = logging.getLogger(__name__)

RUNS_PER_BATCH = 20
# After a run, pruning gets this long; what is left waits for the next run.
AFTER_RUN_SECONDS = 20.0
JOB_ROWS_PER_BATCH = 5000
# A prune statement that would wait on a lock gives up at once and tries the next time.
LOCK_WAIT_SECONDS = 2.0
STATEMENT_SECONDS = 30.0


@dataclass
class Pruned:
    runs: int = 0
    jobs: int = 0
    complete: bool = True

    def __str__(self) -> str:
        more = "" if self.complete else "; more remain for the next prune"
        return f"{self.runs} runs and {self.jobs} job rows older than the history period{more}"


def prune(conn, days: int, *, budget_seconds: float | None = None) -> Pruned:
    """Delete runs that finished more than ``days`` days ago; return what was removed."""
    result = Pruned()
    if days <= 0:
        return result
    started = time.monotonic()
    db.bound(conn, min(STATEMENT_SECONDS, budget_seconds or STATEMENT_SECONDS))
    with conn.cursor() as cur:
        cur.execute(sql.SET_LOCK_TIMEOUT, {"ms": str(int(LOCK_WAIT_SECONDS * 1000))})
        while True:
            if _spent(started, budget_seconds):
                result.complete = False
                break
            cur.execute(sql.PRUNE_CANDIDATES, {"days": days, "limit": RUNS_PER_BATCH})
            ids = [row[0] for row in cur.fetchall()]
            if not ids:
                break
            while not _spent(started, budget_seconds):
                cur.execute(sql.PRUNE_JOBS, {"ids": ids, "limit": JOB_ROWS_PER_BATCH})
                result.jobs += cur.rowcount
                if cur.rowcount < JOB_ROWS_PER_BATCH:
                    cur.execute(sql.PRUNE_RUNS, {"ids": ids})
                    result.runs += cur.rowcount
                    break
    return result


def _spent(started: float, budget_seconds: float | None) -> bool:
    return budget_seconds is not None and time.monotonic() - started > budget_seconds


def after_run(conn, settings: Settings, stop, deadline) -> None:
    """Prune after a run, within what its deadline leaves and never after a stop request."""
    remaining = deadline.remaining()
    if not settings.history_days or stop.is_set() or remaining < 5:
        return
    budget = min(AFTER_RUN_SECONDS, remaining - 2)
    try:
        removed = prune(conn, settings.history_days, budget_seconds=budget)
    except Exception as exc:  # pruning never changes how the run went
        log.warning("⚠️ Could not prune old history (%s)", first_line(exc))
        return
    if removed.runs or removed.jobs:
        log.info("Pruned %s", removed)
