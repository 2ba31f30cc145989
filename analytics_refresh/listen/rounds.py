"""One round: claimed keys refreshed through the run's job path, recorded as a run.

A round is a ``refresh_runs`` row of trigger ``listen`` with a ``refresh_jobs`` row per key,
written by the run's own History and Keeper, so tokens, retries, the concurrency limit,
the per-key state and the log lines are exactly a run's. Its "lock" is the listener's
claims: once they can no longer be renewed, no new job or retry starts.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from .. import changes
from ..client import RefreshClient
from ..clock import Deadline
from ..history import History
from ..jobs import JobRunner, RunParts
from ..keeper import Keeper
from ..key_claims import Claims
from ..lease import machine_id
from ..plan import Job
from ..retry import RetryPolicy
from ..runner import outcome
from ..settings import Settings
from ..stop import StopRequest

log = logging.getLogger(__name__)

CONNECTED_OF = """
    SELECT client_id::text, array_agg(platform::text ORDER BY platform)
    FROM client_api_credentials
    WHERE status = 'connected' AND client_id = ANY (%s::uuid[])
    GROUP BY client_id
"""


class LinkedStop(StopRequest):
    """A round's stop: set by its own keeper (claims lost) or by the process's stop."""

    def __init__(self, parent: StopRequest):
        super().__init__()
        self.parent = parent

    def is_set(self) -> bool:
        if self.parent.is_set() and not self._event.is_set():
            self.request(self.parent.reason or "stopped")
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        end = time.monotonic() + max(seconds, 0.0)
        while not self.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return False
            self._event.wait(min(left, 0.2))
        return True


@dataclass
class Worker:
    """What every round of one listener shares: settings, the HTTP client, the limit."""

    settings: Settings
    url: str
    secret: str
    client: RefreshClient
    limiter: object
    claims: Claims
    stop: StopRequest
    machine: str = field(default_factory=machine_id)
    change_query_failed: bool = False


@dataclass
class RoundResult:
    run_id: str
    outcomes: dict[Job, str]  # succeeded | failed | not_attempted
    seconds: float


def refresh(worker: Worker, conn, jobs: Sequence[Job]) -> RoundResult:
    """Refresh ``jobs`` (claimed by the caller) as one round; return how each ended."""
    settings = worker.settings
    started = time.monotonic()
    deadline = Deadline(settings.deadline)
    history = History(worker.url, trigger="listen", deadline=deadline, machine=worker.machine)
    stop = LinkedStop(worker.stop)
    keeper = None
    try:
        history.record_run("running")
        history.record_planned(jobs)
        keeper = Keeper(history, worker.claims, stop).start()
        parts = RunParts(
            client=worker.client,
            policy=RetryPolicy(max_attempts=settings.max_attempts),
            limiter=worker.limiter,
            history=history,
            keeper=keeper,
            stop=stop,
            deadline=deadline,
            secret=worker.secret,
            timeout=settings.timeout,
            concurrency=settings.concurrency,
            change_keys=_change_keys(worker, conn, jobs),
        )
        run = JobRunner(parts)
        not_started = run.dispatch(jobs)
        keeper.close()
        keeper = None
        ended = {r.job: r.status for r in run.records}
        outcomes = {job: ended.get(job, "not_attempted") for job in jobs}
        counts = Counter(outcomes.values())
        status, code = outcome(counts, stopped=stop.is_set() and (not_started or run.cut_short))
        history.finish_run(
            status,
            code,
            {
                "total": len(jobs),
                "succeeded": counts["succeeded"],
                "failed": counts["failed"],
                "not_attempted": counts["not_attempted"],
                "skipped": 0,
            },
            stop.reason if stop.is_set() else None,
        )
        seconds = time.monotonic() - started
        log.info(
            "Listener round: %d successful, %d failed out of %d changed keys [%.1fs, run %s]",
            counts["succeeded"],
            counts["failed"],
            len(jobs),
            seconds,
            history.run_id,
        )
        return RoundResult(history.run_id, outcomes, seconds)
    finally:
        if keeper is not None:
            keeper.close()
        history.close()


def _change_keys(worker: Worker, conn, jobs: Sequence[Job]) -> dict[Job, str]:
    """Read the change keys the round's jobs have now (with REFRESH_CHANGE_SQL), so that a
    change-aware run afterwards finds these keys unchanged instead of refreshing them again."""
    query = worker.settings.change_sql
    if not query:
        return {}
    try:
        keys = changes.read_keys(conn, query)
    except changes.ChangeQueryError as exc:
        if not worker.change_query_failed:
            log.warning(
                "⚠️ The change query failed for the listener (%s): no change key stored", exc
            )
        worker.change_query_failed = True
        return {}
    worker.change_query_failed = False
    with conn.cursor() as cur:
        cur.execute(CONNECTED_OF, (sorted({j.client_id for j in jobs}),))
        connected = dict(cur.fetchall())
    found = {}
    for job in jobs:
        key = changes.job_key(job, keys, connected.get(job.client_id, ()))
        if key is not None:
            found[job] = key
    return found
