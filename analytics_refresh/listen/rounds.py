"""One round: claimed keys refreshed through the run's job path, recorded as a run.

A round is a ``refresh_runs`` row of trigger ``listen`` with a ``refresh_jobs`` row per key,
written by the run's own claim machinery (its writer, its queue of records, its lease), so
tokens, retries, the concurrency limit, the per-key state and the log lines are exactly a
run's. Its ground is not the run lock but the listener's claims on its keys: once they can
no longer be renewed, no new job or retry starts.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from .. import changes
from ..claim import RunClaim
from ..client import RefreshClient
from ..clock import Deadline
from ..errors import DatabaseError
from ..jobs import JobRunner
from ..key_claims import Claims
from ..outcome import RunFacts, decide
from ..plan import Job
from ..settings import Settings
from ..stop import StopRequest

log = logging.getLogger(__name__)

CONNECTED_OF = """
    SELECT client_id::text, array_agg(platform::text ORDER BY platform)
    FROM client_api_credentials
    WHERE status = 'connected' AND client_id = ANY (%s::uuid[])
    GROUP BY client_id
"""
CLAIMS_LAPSED = (
    "the listener's claims on its keys could not be renewed, so another listener may take "
    "them; no new job or retry starts"
)


class LinkedStop(StopRequest):
    """A round's stop: set by its own claim (claims lost) or by the process's stop."""

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


class RoundClaim(RunClaim):
    """A round's record and lease, as a run's; its ground is the keys' claims, not the lock."""

    def __init__(self, url: str, settings: Settings, deadline: Deadline, stop, claims: Claims):
        super().__init__(url, settings.replace(trigger="listen", shard=None), deadline, stop)
        self.claims = claims

    def claim(self) -> None:
        self.writer.insert_run("running", lease_seconds=self.lease)
        self._confirmed_at = time.monotonic()

    def check(self) -> bool:
        if self.lost is not None:
            return False
        if self.claims.still_held():
            self._confirmed_at = time.monotonic()
            return True
        self._lose(CLAIMS_LAPSED)
        return False

    def release(self) -> None:
        self._done.set()
        self.writer.close()


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
    change_query_failed: bool = False


@dataclass
class RoundResult:
    run_id: str
    outcomes: dict[Job, str]  # succeeded | failed | not_attempted
    seconds: float


def refresh(
    worker: Worker, conn, jobs: Sequence[Job], change_seen: Mapping[Job, datetime] | None = None
) -> RoundResult:
    """Refresh ``jobs`` (claimed by the caller) as one round; return how each ended.

    ``change_seen`` gives each key's first unreflected change, kept with its refresh (the
    report's change-to-dashboard latency).

    Raises DatabaseError when the round's record could not be written: the keys are then
    refreshed again, never taken as covered on a record that does not exist.
    """
    settings = worker.settings
    started = time.monotonic()
    deadline = Deadline(settings.deadline)
    stop = LinkedStop(worker.stop)
    claim = RoundClaim(worker.url, settings, deadline, stop, worker.claims)
    try:
        claim.claim()
        claim.queue_planned(list(jobs), [])
        claim.keep()
        run = JobRunner(
            settings,
            claim=claim,
            client=worker.client,
            limiter=worker.limiter,
            stop=stop,
            deadline=deadline,
            secret=worker.secret,
            change_keys=_change_keys(worker, conn, jobs),
            change_seen=change_seen,
        )
        not_started = run.dispatch(jobs)
        unrecorded = claim.stop_keeping()
        ended = {r.job: r.status for r in run.records}
        outcomes = {job: ended.get(job, "not_attempted") for job in jobs}
        counts = Counter(outcomes.values())
        ending = decide(
            RunFacts(
                counts=counts,
                stop_reason=stop.reason,
                cut_short=not_started > 0 or run.cut_short > 0,
                lock_lost=claim.lost is not None,
                unrecorded=unrecorded,
            )
        )
        claim.finish(
            ending,
            {
                "total": len(jobs),
                "succeeded": counts["succeeded"],
                "failed": counts["failed"],
                "not_attempted": counts["not_attempted"],
                "skipped": 0,
                "unchanged": 0,
                "changed": len(jobs),  # a round refreshes changed keys only
                "due": 0,
                "expiring": 0,
                # A round never reads every key's change: it says nothing of the others.
                "checked_changes": False,
            },
        )
        if unrecorded:
            raise DatabaseError(f"{unrecorded} refreshes of a listener round were not recorded")
        seconds = time.monotonic() - started
        log.info(
            "Listener round: %d successful, %d failed out of %d changed keys [%.1fs, run %s]",
            counts["succeeded"],
            counts["failed"],
            len(jobs),
            seconds,
            claim.run_id,
        )
        return RoundResult(claim.run_id, outcomes, seconds)
    finally:
        claim.release()


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
