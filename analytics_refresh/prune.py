"""Bounded history: delete finished runs older than ``REFRESH_HISTORY_DAYS`` with their jobs.

In small batches, each its own short transaction, so no lock is held long enough to slow a
run writing its own rows beside it. Never a running run, never ``refresh_state``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from . import db
from . import statements as sql
from .errors import first_line
from .settings import Settings

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
    db.bound(conn, STATEMENT_SECONDS)
    with conn.cursor() as cur:
        cur.execute(sql.SET_LOCK_TIMEOUT, {"ms": str(int(LOCK_WAIT_SECONDS * 1000))})
        while True:
            if budget_seconds is not None and time.monotonic() - started > budget_seconds:
                result.complete = False
                break
            cur.execute(sql.PRUNE_CANDIDATES, {"days": days, "limit": RUNS_PER_BATCH})
            ids = [row[0] for row in cur.fetchall()]
            if not ids:
                break
            while True:
                cur.execute(sql.PRUNE_JOBS, {"ids": ids, "limit": JOB_ROWS_PER_BATCH})
                result.jobs += cur.rowcount
                if cur.rowcount < JOB_ROWS_PER_BATCH:
                    break
            cur.execute(sql.PRUNE_RUNS, {"ids": ids})
            result.runs += cur.rowcount
    return result


def after_run(conn, settings: Settings) -> None:
    if not settings.history_days:
        return
    try:
        removed = prune(conn, settings.history_days, budget_seconds=AFTER_RUN_SECONDS)
    except Exception as exc:  # pruning never changes how the run went
        log.warning("⚠️ Could not prune old history (%s)", first_line(exc))
        return
    if removed.runs:
        log.info("Pruned %s", removed)
