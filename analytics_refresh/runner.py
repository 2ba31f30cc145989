"""One refresh run: lock, plan, call the API for every job, record, decide the exit code.

Once a run's row says ``running``, the row always ends with a final status and exit code,
whatever raises afterwards (the reason in ``note``); only a database that is gone for good
can leave it ``running``, and the next run then marks it ``abandoned`` once its lease
has expired.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from . import db, ordering, prune
from .client import RefreshClient
from .clock import Deadline
from .concurrency import AdaptiveLimit, make_limit
from .errors import ConfigError, DatabaseError, Interrupted, exit_code, first_line
from .history import History, JobRecord
from .jobs import JobRunner, RunParts
from .keeper import Keeper
from .lease import machine_id, take_the_ground
from .lock import RunLock
from .logs import redact
from .plan import Plan, build_plan, stream_connected
from .retry import RetryPolicy
from .run_claims import RunClaims
from .settings import Settings
from .stop import StopRequest
from .summary import extras, summarise_failures

log = logging.getLogger(__name__)

START_LINE = "Starting analytics refresh cron job - AUTOMATED CACHE REFRESH"
DRY_RUN_LISTED_JOBS = 1000


@dataclass
class RunResult:
    """How a run went; ``exit_code`` follows INTERFACE.md section 4."""

    run_id: str | None
    status: str
    exit_code: int
    counts: Counter = field(default_factory=Counter)
    records: list[JobRecord] = field(default_factory=list)
    note: str | None = None
    started_at: float = 0.0
    finished_at: float = 0.0
    retries: int = 0
    changes: Counter = field(default_factory=Counter)  # changed | unchanged | due jobs


@dataclass
class Hooks:
    """What the caller wants to hear while the run goes (heartbeat, progress bar)."""

    on_started: Callable[[str], None] | None = None
    on_job_done: Callable[[JobRecord], None] | None = None


@dataclass
class RunContext:
    """What a run holds once it has taken the ground: settings, connections, its record."""

    settings: Settings
    conn: object  # the planning connection
    secret: str
    history: History
    lock: RunLock
    stop: StopRequest
    deadline: Deadline
    hooks: Hooks
    started: float = field(default_factory=time.time)  # when this run began (wall clock)


def outcome(counts: Counter, stopped: bool) -> tuple[str, int]:
    """Return the run status and exit code for the final job counts."""
    if counts["not_attempted"] or stopped:
        return "interrupted", Interrupted.exit_code
    if counts["failed"]:
        succeeded = counts["succeeded"] + counts["skipped"]
        return ("partial" if succeeded else "failed"), 1
    return "succeeded", 0


def execute_run(
    settings: Settings, *, deadline: Deadline, stop: StopRequest, hooks: Hooks | None = None
) -> RunResult:
    """Do one refresh run as INTERFACE.md describes and return how it went.

    Raises ConfigError (3) or DatabaseError (4) for problems found before the run could be
    recorded, and LockHeld (5) when another run is alive; every other outcome is a result.
    """
    hooks = hooks or Hooks()
    started = time.time()
    log.info(
        "%s (trigger %s%s)",
        START_LINE,
        settings.trigger,
        f", shard {settings.shard}" if settings.shard else "",
    )
    if settings.dry_run:
        return dry_run(settings, deadline)
    secret = settings.require_secret()
    url = db.database_url(settings)
    with db.connection(url, deadline=deadline) as conn:
        db.require_runner_tables(conn)
        history = History(
            url,
            trigger=settings.trigger,
            shard=settings.shard_label,
            deadline=deadline,
            machine=machine_id(),
        )
        lock = RunLock(url, settings.shard, deadline)
        try:
            take_the_ground(history, lock, settings)
            try:
                if hooks.on_started is not None:
                    hooks.on_started(history.run_id)
                context = RunContext(
                    settings, conn, secret, history, lock, stop, deadline, hooks, started
                )
                # Inside the boundary, so the record says what the process exits with.
                with db.boundary(url, deadline):
                    return _run_jobs(context)
            except BaseException as exc:
                _record_failure(history, exc, settings)
                raise
        finally:
            lock.release()
            history.close()


def read_plan(conn, settings: Settings) -> Plan:
    """Read the connected clients and plan the jobs; exit 3 when no --client is connected."""
    db.require_credentials_table(conn)
    plan = build_plan(stream_connected(conn), settings)
    if plan.unknown_clients and len(plan.unknown_clients) == len(settings.clients):
        raise ConfigError(
            "none of the clients given with --client has a connected credential: "
            + ", ".join(plan.unknown_clients),
            hint="check the ids (`analytics-refresh status` lists every connected one)",
        )
    for client_id in plan.unknown_clients:
        log.warning(
            "⚠️ --client %s has no connected credential in client_api_credentials: "
            "nothing to refresh for it",
            client_id,
        )
    log.info("Found %d active clients for analytics refresh", plan.client_count)
    log.info(
        "Processing %d clients × %d platforms = %d refresh jobs",
        plan.client_count,
        len(plan.platforms),
        len(plan.jobs),
    )
    return plan


def dry_run(settings: Settings, deadline: Deadline) -> RunResult:
    """Plan the jobs and print them, one a line, then the count; call nothing."""
    started = time.time()
    url = db.database_url(settings)
    with db.connection(url, deadline=deadline) as conn:
        plan = read_plan(conn, settings)
    out = sys.stdout if sys.stdout is not None else None
    # Every job in the log too, for a plan a person reads; past that, 300,000 lines would
    # cost seconds for nothing, so they go to debug (-v).
    level = logging.INFO if len(plan.jobs) <= DRY_RUN_LISTED_JOBS else logging.DEBUG
    logged = log.isEnabledFor(level)
    for job in plan.jobs:
        line = f"DRY RUN - would refresh {job}"
        if out is not None:
            out.write(line + "\n")
        if logged:
            log.log(level, line, extra={"file_only": True})  # stdout has them already
    if out is not None:
        out.write(f"DRY RUN - {len(plan.jobs)} jobs planned, none called\n")
        out.flush()
    log.info("DRY RUN - %d jobs planned, none called", len(plan.jobs), extra={"file_only": True})
    return RunResult(
        None,
        "succeeded",
        0,
        Counter(planned=len(plan.jobs)),
        started_at=started,
        finished_at=time.time(),
    )


def _run_jobs(ctx: RunContext) -> RunResult:
    settings, history, stop, deadline = ctx.settings, ctx.history, ctx.stop, ctx.deadline
    wall_started = ctx.started
    plan = read_plan(ctx.conn, settings)
    if not plan.jobs:
        log.warning(
            "⚠️ No active clients found: client_api_credentials has no row with "
            "status = 'connected'%s",
            " for the selected clients or shard" if settings.clients or settings.shard else "",
        )
    schedule = ordering.decide(ctx.conn, settings, plan, deadline)
    history.record_planned(plan.jobs, schedule.skipped)
    keeper = Keeper(history, ctx.lock, stop).start()
    client = RefreshClient(settings)
    claims = RunClaims.open(history.url, history.run_id, settings)
    try:
        parts = RunParts(
            client=client,
            policy=RetryPolicy(max_attempts=settings.max_attempts),
            limiter=make_limit(
                settings.concurrency, settings.adaptive, schedule.expected, _learned(history)
            ),
            history=history,
            keeper=keeper,
            stop=stop,
            deadline=deadline,
            secret=ctx.secret,
            timeout=settings.timeout,
            concurrency=settings.concurrency,
            expected=schedule.expected,
            change_keys=schedule.change_keys,
            on_job_done=ctx.hooks.on_job_done,
            claims=claims,
        )
        run = JobRunner(parts)
        run.record_skipped(schedule.skipped)
        not_started = run.dispatch(schedule.jobs)
    finally:
        keeper.close()
        client.close()
        if claims is not None:
            claims.close()
    # Losing the lock after the last job started must not pass unnoticed either.
    keeper.check_lock(now=True)

    counts = Counter(r.status for r in run.records)
    counts["not_attempted"] += not_started
    cut_short = not_started > 0 or run.cut_short > 0
    status, code = outcome(counts, stopped=stop.is_set() and cut_short)
    note = stop.reason if stop.is_set() else None
    if keeper.lock_lost:
        # Exclusivity is gone: the run is incomplete even if every job had started.
        status, code = "interrupted", Interrupted.exit_code
    if history.failures:
        status, code = "failed", DatabaseError.exit_code
        note = f"{history.failures} job records could not be written to refresh_jobs"
        log.error("❌ %s: the record of this run is incomplete (exit 4)", note)
    if not_started:
        log.warning("⏹ %d jobs not attempted: %s", not_started, stop.reason)
    summarise_failures(run.records, settings)
    log.info(
        "Results: %d successful, %d failed out of %d total jobs%s [%.1fs, run %s]",
        counts["succeeded"],
        counts["failed"],
        len(plan.jobs),
        extras(counts, sum(1 for k in schedule.kinds.values() if k == "unchanged"), run.retries),
        time.time() - wall_started,
        history.run_id,
    )
    limit = parts.limiter.limit if isinstance(parts.limiter, AdaptiveLimit) else None
    history.finish_run(status, code, _counts(counts, len(plan.jobs)), note, limit)
    prune.after_run(ctx.conn, settings, stop, deadline)
    return RunResult(
        history.run_id,
        status,
        code,
        counts,
        run.records,
        note,
        wall_started,
        time.time(),
        run.retries,
        Counter(schedule.kinds.values()),
    )


def _learned(history: History) -> int | None:
    try:
        return history.learned_limit()
    except Exception as exc:  # the limit then starts low, as on a first run
        log.debug("No learned concurrency limit (%s)", first_line(exc))
        return None


def _record_failure(history: History, exc: BaseException, settings: Settings) -> None:
    """Give the run's row a final status after an exception; never raise."""
    code = exit_code(exc)
    status = "interrupted" if code == Interrupted.exit_code else "failed"
    note = redact(first_line(exc), settings.secrets)
    try:
        history.flush(final=True)
        history.finish_run(status, code, _counts(Counter()), note)
    except Exception as error:
        log.error(
            "❌ Could not record the end of run %s (%s); the next run will mark it abandoned",
            history.run_id,
            first_line(error),
        )


def _counts(counts: Counter, total: int = 0) -> dict:
    return {
        "total": total,
        "succeeded": counts["succeeded"],
        "failed": counts["failed"],
        "not_attempted": counts["not_attempted"],
        "skipped": counts["skipped"],
    }
