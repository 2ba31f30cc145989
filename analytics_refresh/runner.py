"""One refresh run: lock, plan, call the API for every job, record, decide the exit code."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import api_key_auth

from . import db
from .client import Attempt, RefreshClient, Verdict
from .concurrency import FixedLimit
from .errors import DatabaseError, RefreshError
from .history import History, JobRecord
from .lock import RunLock
from .plan import Job, Plan, build_plan, stream_connected
from .retry import RetryPolicy
from .settings import Settings

log = logging.getLogger(__name__)

START_LINE = "Starting analytics refresh cron job - AUTOMATED CACHE REFRESH"
TOKEN_TTL_SECONDS = 10 * 60
# A request may start with less time than this before the deadline: it would only time out.
MIN_REQUEST_SECONDS = 1.0


class StopRequest:
    """Set by a signal handler (or a test): no new job starts once it is set."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    def request(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        return self._event.wait(max(seconds, 0.0))


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


class Run:
    """State shared by the dispatcher and the worker threads of one run."""

    def __init__(
        self,
        settings: Settings,
        url: str,
        history: History,
        lock: RunLock,
        stop: StopRequest,
        on_job_done: Callable[[JobRecord], None] | None,
    ):
        self.settings = settings
        self.secret = settings.require_secret()
        self.url = url
        self.history = history
        self.lock = lock
        self.stop = stop
        self.on_job_done = on_job_done
        self.client = RefreshClient(settings)
        self.policy = RetryPolicy(max_attempts=settings.max_attempts)
        self.limiter = FixedLimit(settings.concurrency)
        self.started = time.monotonic()
        self.deadline_at = self.started + settings.deadline
        self.records: list[JobRecord] = []
        self.retries = 0
        self.history_failures = 0
        self._mutex = threading.Lock()

    # -- when to stop --------------------------------------------------------------------
    def remaining(self) -> float:
        return self.deadline_at - time.monotonic()

    def stop_reason(self) -> str | None:
        """Return why no new job may start, or None while jobs may start."""
        if self.stop.is_set():
            return self.stop.reason
        if self.remaining() < MIN_REQUEST_SECONDS:
            self.stop.request(f"deadline of {self.settings.deadline:g}s reached")
            return self.stop.reason
        if not self.lock.still_held():
            self.stop.request(
                "the database session holding the run lock was lost, so another run could "
                "start; exclusivity cannot be guaranteed"
            )
            return self.stop.reason
        return None

    # -- one job --------------------------------------------------------------------------
    def mint(self, job: Job) -> str:
        return api_key_auth.mint_client_token(
            job.client_id, self.secret, ttl_seconds=TOKEN_TTL_SECONDS
        )

    def execute(self, job: Job) -> JobRecord:
        """Refresh one job with retries; never raises."""
        started = time.monotonic()
        attempts, reminted = 0, False
        try:
            token = self.mint(job)
            while True:
                attempts += 1
                read_timeout = max(
                    MIN_REQUEST_SECONDS, min(self.settings.timeout, self.remaining())
                )
                attempt = self.client.refresh(job, token, read_timeout)
                self.limiter.observe(job, attempt.elapsed, attempt.verdict)
                if attempt.verdict is Verdict.SUCCESS:
                    return self.finish(job, "succeeded", attempts, started, attempt)
                if attempt.verdict is Verdict.REAUTH and not reminted:
                    # The token may have expired in a long backoff: mint once and try again.
                    token, reminted = self.mint(job), True
                    self.count_retry()
                    continue
                if attempt.verdict is not Verdict.RETRY or not self.policy.should_retry(attempts):
                    return self.finish(job, "failed", attempts, started, attempt)
                delay = self.policy.delay(attempts, attempt.retry_after)
                if delay > self.remaining() - MIN_REQUEST_SECONDS:
                    return self.finish(
                        job,
                        "failed",
                        attempts,
                        started,
                        attempt,
                        "no time left before the deadline to retry",
                    )
                if self.stop.wait(delay):
                    return self.finish(
                        job,
                        "failed",
                        attempts,
                        started,
                        attempt,
                        f"not retried: {self.stop.reason}",
                    )
                self.count_retry()
        except Exception as exc:  # a bug must cost one job, never the run
            log.exception("Unexpected error refreshing %s", job)
            return self.finish(
                job,
                "failed",
                attempts,
                started,
                Attempt(Verdict.FAIL, error=f"internal error: {type(exc).__name__}"),
            )

    def count_retry(self) -> None:
        with self._mutex:
            self.retries += 1

    def finish(
        self,
        job: Job,
        status: str,
        attempts: int,
        started: float,
        attempt: Attempt,
        note: str | None = None,
    ) -> JobRecord:
        seconds = time.monotonic() - started
        error = None
        if status != "succeeded":
            error = "; ".join(x for x in (attempt.error, attempt.detail, note) if x)
        record = JobRecord(
            job,
            status,
            attempts,
            attempt.http_status,
            round(seconds * 1000),
            attempt.platform_count,
            attempt.sku_count,
            error,
        )
        detail = f"[{seconds:.2f}s, attempt {attempts}]"
        if status == "succeeded":
            log.info(
                "✅ SUCCESS - %s: %s platforms, %s SKUs %s",
                job,
                _n(attempt.platform_count),
                _n(attempt.sku_count),
                detail,
                extra=_fields(record),
            )
        else:
            words = "attempt" if attempts == 1 else "attempts"
            extra = "; ".join(x for x in (attempt.detail, note) if x)
            log.error(
                "❌ FAILED - %s: %s after %d %s%s [%.2fs]",
                job,
                attempt.error or "failed",
                attempts,
                words,
                f" - {extra}" if extra else "",
                seconds,
                extra=_fields(record),
            )
        self.save(record)
        return record

    def save(self, record: JobRecord) -> None:
        try:
            self.history.record_job(record)
        except Exception as exc:
            with self._mutex:
                self.history_failures += 1
            log.error("Could not record %s in refresh_jobs: %s", record.job, _first_line(exc))
        with self._mutex:
            self.records.append(record)
        if self.on_job_done is not None:
            self.on_job_done(record)

    # -- the run --------------------------------------------------------------------------
    def dispatch(self, jobs: list[Job]) -> int:
        """Run ``jobs`` within the concurrency limit; return how many never started."""
        started = 0
        in_flight: set[Future] = set()
        with ThreadPoolExecutor(
            max_workers=self.settings.concurrency, thread_name_prefix="refresh"
        ) as pool:
            for job in jobs:
                while len(in_flight) >= self.limiter.limit and not self.stop.is_set():
                    _, in_flight = wait(in_flight, timeout=0.5, return_when=FIRST_COMPLETED)
                if self.stop_reason() is not None:
                    break
                in_flight.add(pool.submit(self.execute, job))
                started += 1
            if self.stop.is_set() and in_flight:
                log.warning(
                    "⏹ Stopping: %s; waiting for %d jobs in flight to finish",
                    self.stop.reason,
                    len(in_flight),
                )
        return len(jobs) - started


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
            for job in plan.jobs:
                log.info("DRY RUN - would refresh %s", job)
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
        history.record_planned(plan.jobs)
        run = Run(settings, url, history, lock, stop, on_job_done)
        not_started = run.dispatch(plan.jobs)
    except RefreshError as exc:
        history.finish_run("failed", exc.exit_code, _counts(Counter()), _first_line(exc))
        raise
    finally:
        if run is not None:
            run.client.close()

    counts = Counter(r.status for r in run.records)
    counts["not_attempted"] += not_started
    status, exit_code = outcome(counts, stopped=stop.is_set() and not_started > 0)
    if stop.is_set() and "lock" in (stop.reason or ""):
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
            f"could not record the end of run {history.run_id}: {_first_line(exc)}"
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


def _counts(counts: Counter, total: int = 0) -> dict:
    return {
        "total": total,
        "succeeded": counts["succeeded"],
        "failed": counts["failed"],
        "not_attempted": counts["not_attempted"],
        "skipped": counts["skipped"],
    }


def _n(value: int | None) -> str:
    return "?" if value is None else str(value)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _fields(record: JobRecord) -> dict:
    return {
        "client_id": record.job.client_id,
        "platform": record.job.platform,
        "status": record.status,
        "attempts": record.attempts,
        "http_status": record.http_status,
        "duration_ms": record.duration_ms,
    }
