"""One refresh run: lock, plan, call the API for every job, record, decide the exit code."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from . import db, ordering
from .errors import DatabaseError, RefreshError, first_line
from .history import History, JobRecord
from .jobs import JobRunner, StopRequest
from .lock import RunLock
from .plan import Plan, build_plan, stream_connected
from .settings import Settings

log = logging.getLogger(__name__)

START_LINE = "Starting analytics refresh cron job - AUTOMATED CACHE REFRESH"
__all__ = ["RunResult", "StopRequest", "execute_run"]

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

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def outcome(counts: Counter, stopped: bool) -> tuple[str, int]:
    """Return the run status and exit code for the final job counts."""
    if counts["not_attempted"] or stopped:
        return "interrupted", 6
    if counts["failed"]:
        succeeded = counts["succeeded"] + counts["skipped"]
        return ("partial" if succeeded else "failed"), 1
    return "succeeded", 0


def execute_run(
    settings: Settings,
    *,
    stop: StopRequest | None = None,
    on_job_done: Callable[[JobRecord], None] | None = None,
    on_started: Callable[[str], None] | None = None,
) -> RunResult:
    """Do one refresh run as INTERFACE.md describes and return how it went.

    Raises RefreshError subclasses for configuration (3) and database (4) problems found
    before the run could be recorded; every other outcome is a RunResult.
    """
    stop = stop or StopRequest()
    wall_started = time.time()
    log.info(
        "%s (trigger %s%s)",
        START_LINE,
        settings.trigger,
        f", shard {settings.shard}" if settings.shard else "",
    )
    if not settings.dry_run:
        settings.require_secret()
    url = db.database_url(settings)
    with db.connection(url) as conn:
        db.require_runner_tables(conn)
        if settings.dry_run:
            plan = read_plan(conn, settings)
            # Every job is listed for a plan a person can read; past that, listing 300,000
            # lines would cost seconds for nothing, so they go to debug (-v).
            level = logging.INFO if len(plan.jobs) <= DRY_RUN_LISTED_JOBS else logging.DEBUG
            if level == logging.DEBUG:
                log.info("DRY RUN - %d jobs planned; -v lists each one", len(plan.jobs))
            if log.isEnabledFor(level):
                for job in plan.jobs:
                    log.log(level, "DRY RUN - would refresh %s", job)
            return RunResult(
                None,
                "succeeded",
                0,
                Counter(planned=len(plan.jobs)),
                started_at=wall_started,
                finished_at=time.time(),
            )

        shard = str(settings.shard) if settings.shard else ""
        history = History(url, trigger=settings.trigger, shard=shard)
        lock = RunLock(url, settings.shard)
        if not lock.acquire():
            note = "another refresh run holds the lock"
            log.warning(
                "⏭ Another refresh run holds the lock%s; this run does nothing (exit 5)",
                f" for shard {shard}" if shard else "",
            )
            history.record_run("skipped", exit_code=5, note=note)
            history.close()
            return RunResult(
                history.run_id,
                "skipped",
                5,
                note=note,
                started_at=wall_started,
                finished_at=time.time(),
            )
        try:
            history.record_run("running")
            if on_started is not None:
                on_started(history.run_id)
            for old in history.mark_abandoned():
                log.warning("Run %s was left running by a run that died; marked abandoned", old)
            return _run_jobs(settings, conn, url, history, lock, stop, on_job_done, wall_started)
        finally:
            lock.release()
            history.close()


def read_plan(conn, settings: Settings) -> Plan:
    if db.missing_tables(conn, ("client_api_credentials",)):
        raise DatabaseError(
            "table client_api_credentials is missing: there is no list of connected clients",
            hint="point DATABASE_URL at the application's database, or create the table "
            "with `analytics-refresh db init --with-api-schema`",
        )
    plan = build_plan(stream_connected(conn), settings)
    log.info("Found %d active clients for analytics refresh", plan.client_count)
    log.info(
        "Processing %d clients × %d platforms = %d refresh jobs",
        plan.client_count,
        len(plan.platforms),
        len(plan.jobs),
    )
    return plan


def _run_jobs(
    settings,
    conn,
    url,
    history: History,
    lock: RunLock,
    stop: StopRequest,
    on_job_done,
    wall_started: float,
) -> RunResult:
    run = None
    try:
        plan = read_plan(conn, settings)
        if not plan.jobs:
            log.warning(
                "⚠️ No active clients found: client_api_credentials has no row with "
                "status = 'connected'%s",
                " for the selected clients or shard" if settings.clients or settings.shard else "",
            )
        schedule = _schedule(conn, settings, history, plan)
        history.record_planned(plan.jobs, schedule.skipped)
        run = JobRunner(settings, url, history, lock, stop, on_job_done, expected=schedule.expected)
        run.record_skipped(schedule.skipped)
        not_started = run.dispatch(schedule.jobs)
    except RefreshError as exc:
        history.finish_run("failed", exc.exit_code, _counts(Counter()), first_line(exc))
        raise
    finally:
        if run is not None:
            run.client.close()

    counts = Counter(r.status for r in run.records)
    counts["not_attempted"] += not_started
    cut_short = not_started > 0 or run.cut_short > 0
    status, exit_code = outcome(counts, stopped=stop.is_set() and cut_short)
    if run.lock_lost:
        # Exclusivity is gone: the run is incomplete even if every job had started.
        status, exit_code = "interrupted", 6
    note = stop.reason if stop.is_set() else None
    if not_started:
        log.warning("⏹ %d jobs not attempted: %s", not_started, stop.reason)
    elapsed = time.time() - wall_started
    extras = [
        f"{counts[k]} {label}"
        for k, label in (("skipped", "skipped as fresh"), ("not_attempted", "not attempted"))
        if counts[k]
    ]
    log.info(
        "Results: %d successful, %d failed out of %d total jobs%s [%.1fs, run %s]",
        counts["succeeded"],
        counts["failed"],
        len(plan.jobs),
        f" ({', '.join(extras)})" if extras else "",
        elapsed,
        history.run_id,
    )
    try:
        history.finish_run(status, exit_code, _counts(counts, len(plan.jobs)), note)
    except Exception as exc:
        raise DatabaseError(
            f"could not record the end of run {history.run_id}: {first_line(exc)}"
        ) from exc
    return RunResult(
        history.run_id,
        status,
        exit_code,
        counts,
        run.records,
        note,
        wall_started,
        time.time(),
        run.retries,
    )


def _schedule(conn, settings: Settings, history: History, plan: Plan) -> ordering.Schedule:
    """Skip the fresh jobs and order the rest from past successes (plan order without)."""
    if not plan.jobs:
        return ordering.Schedule()
    try:
        last = history.last_successes()
        now = ordering.database_now(conn)
    except Exception as exc:
        # Ordering and skipping only make the run better; without them it still refreshes.
        log.warning(
            "Could not read past successes (%s): every job runs, in plan order",
            first_line(exc),
        )
        return ordering.Schedule(jobs=list(plan.jobs))
    return ordering.schedule(
        plan.jobs, last, skip_fresh_minutes=settings.skip_fresh_minutes, now=now
    )


def _counts(counts: Counter, total: int = 0) -> dict:
    return {
        "total": total,
        "succeeded": counts["succeeded"],
        "failed": counts["failed"],
        "not_attempted": counts["not_attempted"],
        "skipped": counts["skipped"],
    }
