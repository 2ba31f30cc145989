"""Which planned jobs a run starts, and in what order, from their past successes.

A job whose last success is younger than ``REFRESH_SKIP_FRESH_MINUTES`` is skipped, so a
cron run right after a manual one does not redo it; never one whose data change detection
saw change, nor one whose copy is about to expire: those are not fresh, however recent.
The rest start longest expected first (the last successful duration in
``refresh_jobs``), with jobs never seen before ahead of them all because they could be
the longest: a long job started last is what makes a run's tail, while short ones fill
the gaps the long ones leave.

Longest first has a cost to dashboard users, which ``JobQueue`` pays back. A user's request
that finds every worker busy waits for one to come free; with the longest jobs in every
slot, or with neighbours in that order (of about equal length) started together and so
ending together, that is a long wait. So a quarter of the slots (at least one) take the
shortest jobs from the back of the order instead: a worker comes free every short job.
The two ends meet in the middle of the order, so the run still ends on middling jobs,
not on a long one.
"""

from __future__ import annotations

import collections
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from . import changes, promise, records
from . import statements as sql
from .clock import Deadline
from .outcome import JobRecord
from .plan import Job, Plan
from .records import Key, KeyState
from .settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Schedule:
    """The jobs to start in order, the jobs skipped as fresh, and what each should take."""

    jobs: list[Job] = field(default_factory=list)
    skipped: list[JobRecord] = field(default_factory=list)
    expected: dict[Job, float] = field(default_factory=dict)  # seconds, jobs with history
    change_keys: dict[Job, str] = field(default_factory=dict)  # the data's key at planning
    kinds: dict[Job, str] = field(default_factory=dict)  # changed | expiring | due | unchanged
    change_seen: dict[Job, datetime] = field(default_factory=dict)  # changes, first seen
    unchanged: int = 0  # skipped as unchanged: counted on the run row, no row each
    # The change keys of every key in the run's scope were read: what it did not refresh
    # was current when it started.
    checked_changes: bool = False
    # Why the configured change query could not be used (every job then runs), or None.
    change_error: str | None = None


def schedule(
    jobs: Sequence[Job],
    states: Mapping[Key, KeyState],
    *,
    skip_fresh_minutes: float = 0.0,
    now: datetime | None = None,
    not_fresh: frozenset[Job] | set[Job] = frozenset(),
) -> Schedule:
    """Drop the fresh jobs and order the rest longest expected first (unknown jobs first).

    Jobs in ``not_fresh`` (their data changed, their copy expires) are never skipped.
    """
    result = Schedule()
    fresh_after = None
    if skip_fresh_minutes > 0 and now is not None:
        fresh_after = now - timedelta(minutes=skip_fresh_minutes)
    unknown: list[Job] = []
    known: list[Job] = []
    for job in jobs:
        state = states.get((job.client_id, job.platform))
        if state is None or state.last_success_at is None:
            unknown.append(job)
            continue
        if fresh_after is not None and state.last_success_at > fresh_after and job not in not_fresh:
            result.skipped.append(
                JobRecord(
                    job,
                    "skipped",
                    error=f"refreshed less than {skip_fresh_minutes:g} minutes ago "
                    "(REFRESH_SKIP_FRESH_MINUTES)",
                )
            )
            continue
        if state.last_duration_ms is None:
            unknown.append(job)
            continue
        result.expected[job] = state.last_duration_ms / 1000
        known.append(job)
    # sort() is stable: equal durations keep the plan's order, so a run is reproducible.
    known.sort(key=result.expected.__getitem__, reverse=True)
    result.jobs = unknown + known
    return result


class JobQueue:
    """The scheduled jobs, taken from the front (longest first) into all but a quarter of
    the slots, and from the back (shortest first) into the rest."""

    def __init__(self, jobs: Sequence[Job]):
        self._jobs = collections.deque(jobs)

    def __len__(self) -> int:
        return len(self._jobs)

    @staticmethod
    def front_slots(limit: int) -> int:
        """Return how many of ``limit`` slots take the longest jobs: all but a quarter."""
        return max(1, limit - max(1, limit // 4))

    def take(self, front_in_flight: int, limit: int) -> tuple[Job, bool]:
        """Return the next job to start and whether it came from the front."""
        if front_in_flight >= self.front_slots(limit):
            return self._jobs.pop(), False
        return self._jobs.popleft(), True


def decide(conn, settings: Settings, plan: Plan, deadline: Deadline) -> Schedule:
    """Skip what need not run (unchanged, fresh) and order the rest from the keys' state."""
    if not plan.jobs:
        return Schedule()
    states = records.key_states(conn, plan.jobs)  # only the planned keys' rows
    now = records.database_now(conn)
    try:
        decision = _changes(conn, settings, plan, states, now, deadline)
        error = None
    except changes.ChangeQueryError as exc:
        log.warning(
            "⚠️ REFRESH_CHANGE_SQL could not be used (%s): every job is refreshed this run",
            exc,
        )
        decision, error = None, str(exc)
    jobs = plan.jobs if decision is None else decision.run
    not_fresh = frozenset()
    if decision is not None:
        not_fresh = frozenset(j for j in jobs if decision.kinds[j] in ("changed", "expiring"))
    result = schedule(
        jobs,
        states,
        skip_fresh_minutes=settings.skip_fresh_minutes,
        now=now,
        not_fresh=not_fresh,
    )
    result.change_error = error
    if decision is not None:
        result.kinds, result.change_keys = decision.kinds, decision.keys
        result.change_seen = decision.seen
        result.unchanged = len(decision.unchanged)
        # A run limited to some clients read every key but decided only for its own.
        result.checked_changes = not settings.clients
    return result


def lead_seconds(conn, settings: Settings) -> float:
    """Return how far ahead of its expiry a copy is refreshed: until the next run ends."""
    with conn.cursor() as cur:
        cur.execute(sql.RECENT_RUN_SECONDS, (settings.shard_label,))
        (recent,) = cur.fetchone()
    return promise.refresh_lead(settings, recent)


def _changes(conn, settings, plan, states, now, deadline) -> changes.Decision | None:
    """Decide by the change query when one is configured; None: refresh every job.

    Raises ChangeQueryError when the query cannot be used."""
    if not settings.change_sql:
        return None
    keys = changes.read_keys(conn, settings.change_sql, deadline)
    decision = changes.decide(
        plan.jobs,
        states,
        keys,
        connected=plan.connected,
        now=now,
        max_age_minutes=settings.max_age_minutes,
        lead_seconds=lead_seconds(conn, settings),
    )
    kinds = Counter(decision.kinds.values())
    log.info(
        "Change detection: %d changed, %d expiring, %d due (max age %g min), %d unchanged",
        kinds["changed"],
        kinds["expiring"],
        kinds["due"],
        settings.max_age_minutes,
        kinds["unchanged"],
    )
    # A line per skipped key only when asked for: a quiet run logs what it did, not what
    # it did not have to do.
    if log.isEnabledFor(logging.DEBUG):
        for job in decision.unchanged:
            state = states[(job.client_id, job.platform)]
            since = (state.changed_at or state.last_success_at).astimezone()
            log.debug("⏭ SKIPPED - %s: unchanged since %s", job, f"{since:%Y-%m-%d %H:%M:%S}")
    return decision
