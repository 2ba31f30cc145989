"""One refresh run: claim the ground, plan, call the API for every job, record, end.

Once a run's row says ``running``, the row always ends with a final status and exit code,
as ``outcome.decide`` says, whatever raises afterwards (the reason in ``note``); only a
database that is gone for good can leave it ``running``, and the next run then marks it
``abandoned`` once its lease has expired.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

from . import db, ordering, prune
from .claim import RunClaim
from .client import RefreshClient
from .clock import Deadline
from .concurrency import AdaptiveLimit, make_limit
from .dry_run import dry_run, read_plan
from .errors import exit_code, first_line
from .jobs import JobRunner
from .logs import redact
from .outcome import Ending, Hooks, RunFacts, RunResult, decide
from .run_claims import RunClaims
from .settings import Settings
from .stop import StopRequest
from .summary import extras, summarise_failures

log = logging.getLogger(__name__)

START_LINE = "Starting analytics refresh cron job - AUTOMATED CACHE REFRESH"


def execute_run(
    settings: Settings, *, deadline: Deadline, stop: StopRequest, hooks: Hooks | None = None
) -> RunResult:
    """Do one refresh run and return how it went.

    Raises ConfigError (3) or DatabaseError (4) for problems found before the run could be
    recorded, and LockHeld (5) when another run is alive; every other outcome is a result.
    """
    hooks = hooks or Hooks()
    log.info(
        "%s (trigger %s%s)",
        START_LINE,
        settings.trigger,
        f", shard {settings.shard}" if settings.shard else "",
    )
    if settings.dry_run:
        return dry_run(settings, deadline)
    started = time.time()
    secret = settings.require_secret()
    url = db.database_url(settings)
    with db.connection(url, deadline=deadline) as conn:
        db.require_runner_tables(conn)
        claim = RunClaim(url, settings, deadline, stop)
        try:
            claim.claim()
            try:
                claim.keep()
                if hooks.on_started is not None:
                    hooks.on_started(claim.run_id)
                # Inside the boundary, so the record says what the process exits with.
                with db.boundary(url, deadline):
                    return _run_jobs(settings, conn, claim, secret, stop, deadline, hooks, started)
            except BaseException as exc:
                _record_failure(claim, exc, settings)
                raise
        finally:
            claim.release()


def _run_jobs(settings, conn, claim: RunClaim, secret, stop, deadline, hooks, started) -> RunResult:
    plan = read_plan(conn, settings)
    if not plan.jobs:
        log.warning(
            "⚠️ No active clients found: client_api_credentials has no row with "
            "status = 'connected'%s",
            " for the selected clients or shard" if settings.clients or settings.shard else "",
        )
    schedule = ordering.decide(conn, settings, plan, deadline)
    # Rows for the jobs it runs and the ones skipped as fresh; none for the unchanged keys,
    # which the run row counts: a quiet run writes in proportion to what it refreshes.
    claim.queue_planned([*schedule.jobs, *(r.job for r in schedule.skipped)], schedule.skipped)
    client = RefreshClient(settings)
    key_claims = RunClaims.open(claim.writer.url, claim.run_id, settings, deadline)
    limiter = make_limit(
        settings.concurrency, settings.adaptive, schedule.expected, _learned(claim)
    )
    run = JobRunner(
        settings,
        claim=claim,
        client=client,
        limiter=limiter,
        stop=stop,
        deadline=deadline,
        secret=secret,
        change_keys=schedule.change_keys,
        change_seen=schedule.change_seen,
        on_job_done=hooks.on_job_done,
        key_claims=key_claims,
    )
    try:
        run.count_skipped(schedule.skipped)
        not_started = run.dispatch(schedule.jobs)
    finally:
        client.close()
        if key_claims is not None:
            key_claims.close()
        unrecorded = claim.stop_keeping()
    # Losing the lock after the last job started must not pass unnoticed either.
    claim.check()

    counts = Counter(r.status for r in run.records)
    counts["not_attempted"] += not_started
    counts["unchanged"] = schedule.unchanged
    facts = RunFacts(
        counts=counts,
        stop_reason=stop.reason,
        cut_short=not_started > 0 or run.cut_short > 0,
        lock_lost=claim.lost is not None,
        unrecorded=unrecorded,
        change_error=schedule.change_error,
    )
    ending = decide(facts)
    if unrecorded:
        log.error("❌ %s: the record of this run is incomplete (exit 4)", ending.note)
    if not_started:
        log.warning("⏹ %d jobs not attempted: %s", not_started, stop.reason)
    summarise_failures(run.records, settings)
    log.info(
        "Results: %d successful, %d failed out of %d total jobs%s [%.1fs, run %s]",
        counts["succeeded"],
        counts["failed"],
        len(plan.jobs),
        extras(counts, schedule.unchanged, run.retries),
        time.time() - started,
        claim.run_id,
    )
    limit = limiter.limit if isinstance(limiter, AdaptiveLimit) else None
    claim.finish(ending, _counts(counts, len(plan.jobs), schedule), limit)
    prune.after_run(conn, settings, stop, deadline)
    return RunResult.ended(
        claim.run_id,
        ending,
        counts=counts,
        records=run.records,
        started_at=started,
        finished_at=time.time(),
        retries=run.retries,
        changes=Counter(schedule.kinds.values()),
        change_error=schedule.change_error,
        facts=facts,
    )


def _learned(claim: RunClaim) -> int | None:
    try:
        return claim.writer.learned_limit()
    except Exception as exc:  # the limit then starts low, as on a first run
        log.debug("No learned concurrency limit (%s)", first_line(exc))
        return None


def _record_failure(claim: RunClaim, exc: BaseException, settings: Settings) -> None:
    """Give the run's row a final status after an exception; never raise."""
    ending: Ending = decide(
        RunFacts(error_code=exit_code(exc), error_note=redact(first_line(exc), settings.secrets))
    )
    try:
        claim.stop_keeping()
        claim.finish(ending, _counts(Counter()))
    except Exception as error:  # a bug on the way out: the row is left to the next run
        log.error(
            "❌ Could not record the end of run %s (%s); the next run will mark it abandoned",
            claim.run_id,
            first_line(error),
        )


def _counts(counts: Counter, total: int = 0, schedule: ordering.Schedule | None = None) -> dict:
    kinds = Counter(schedule.kinds.values()) if schedule is not None else Counter()
    return {
        "total": total,
        "succeeded": counts["succeeded"],
        "failed": counts["failed"],
        "not_attempted": counts["not_attempted"],
        "skipped": counts["skipped"],
        "unchanged": counts["unchanged"],
        "changed": kinds["changed"],
        "due": kinds["due"],
        "expiring": kinds["expiring"],
        "checked_changes": bool(schedule is not None and schedule.checked_changes),
    }
