"""Executing the jobs of a run: retries, the deadline, stop requests, the record of each."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import api_key_auth

from .client import Attempt, RefreshClient, Verdict
from .concurrency import AdaptiveLimit, make_limit
from .errors import first_line
from .history import History, JobRecord
from .lock import RunLock
from .ordering import JobQueue
from .plan import Job
from .retry import RetryPolicy
from .settings import Settings

log = logging.getLogger(__name__)

TOKEN_TTL_SECONDS = 10 * 60
# A request may start with less time than this before the deadline: it would only time out.
MIN_REQUEST_SECONDS = 1.0
# How often the dispatcher looks at the stop flag, the deadline and the lock while it waits
# for a free slot; an adaptive limit also looks at the requests still out that often.
POLL_SECONDS = 0.5
ADAPTIVE_POLL_SECONDS = 0.05
# What the limiter is told when a request raised instead of answering.
NO_ANSWER = Attempt(Verdict.FAIL, error="internal error")


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


class JobRunner:
    """State shared by the dispatcher and the worker threads of one run."""

    def __init__(
        self,
        settings: Settings,
        url: str,
        history: History,
        lock: RunLock,
        stop: StopRequest,
        on_job_done: Callable[[JobRecord], None] | None,
        expected: Mapping[Job, float] | None = None,
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
        # Seconds each job took last time: the adaptive limit's yardstick, the queue's order.
        self.expected: Mapping[Job, float] = expected or {}
        self.limiter = make_limit(settings.concurrency, settings.adaptive, self.expected)
        adaptive = isinstance(self.limiter, AdaptiveLimit)
        self.poll_seconds = ADAPTIVE_POLL_SECONDS if adaptive else POLL_SECONDS
        self.started = time.monotonic()
        self.deadline_at = self.started + settings.deadline
        self.records: list[JobRecord] = []
        self.retries = 0
        # Jobs whose next attempt a stop request cancelled: the run is then incomplete.
        self.cut_short = 0
        self.lock_lost = False
        self.history_failures = 0
        self._mutex = threading.Lock()
        self._slots = threading.Condition()
        self._active = 0  # jobs in flight
        self._front = 0  # of which from the front of the order (ordering.JobQueue)

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
            self.lock_lost = True
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
                attempt = self.request(job, token, read_timeout)
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
                    with self._mutex:
                        self.cut_short += 1
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

    def request(self, job: Job, token: str, read_timeout: float) -> Attempt:
        """Make one attempt and tell the limiter how it went."""
        limit = self.limiter.limit
        ticket = self.limiter.begin(job)
        attempt = NO_ANSWER
        try:
            attempt = self.client.refresh(job, token, read_timeout)
        finally:
            self.limiter.observe(ticket, attempt)
        if self.limiter.limit > limit:
            with self._slots:
                self._slots.notify_all()
        return attempt

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
                extra=record.log_fields(),
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
                extra=record.log_fields(),
            )
        self.save(record)
        return record

    def save(self, record: JobRecord) -> None:
        try:
            self.history.record_job(record)
        except Exception as exc:
            with self._mutex:
                self.history_failures += 1
            log.error("Could not record %s in refresh_jobs: %s", record.job, first_line(exc))
        with self._mutex:
            self.records.append(record)
        if self.on_job_done is not None:
            self.on_job_done(record)

    # -- the run --------------------------------------------------------------------------
    def record_skipped(self, records: Sequence[JobRecord]) -> None:
        """Log and count jobs skipped as fresh (their rows are written with the plan)."""
        minutes = self.settings.skip_fresh_minutes
        for record in records:
            log.info(
                "⏭ SKIPPED - %s: refreshed less than %g minutes ago (REFRESH_SKIP_FRESH_MINUTES)",
                record.job,
                minutes,
                extra=record.log_fields(),
            )
            with self._mutex:
                self.records.append(record)
            if self.on_job_done is not None:
                self.on_job_done(record)

    def dispatch(self, jobs: Sequence[Job]) -> int:
        """Run ``jobs`` in order within the concurrency limit; return how many never started."""
        queue = JobQueue(jobs)
        with ThreadPoolExecutor(
            max_workers=self.settings.concurrency, thread_name_prefix="refresh"
        ) as pool:
            while queue:
                with self._slots:
                    # The limit may fall below the jobs in flight: wait until enough finish.
                    self.limiter.check()
                    while self._active >= self.limiter.limit and not self.stop.is_set():
                        # The limit, not a lack of jobs, holds the run back: the limiter
                        # may raise it (a job waiting out a Retry-After holds a slot with
                        # no request in flight, so the requests alone cannot tell).
                        self.limiter.blocked()
                        self._slots.wait(self.poll_seconds)
                        self.limiter.check()
                if self.stop_reason() is not None:
                    break
                with self._slots:
                    job, front = queue.take(self._front, self.limiter.limit)
                    self._active += 1
                    self._front += front
                pool.submit(self._run_one, job, front)
            with self._slots:
                in_flight = self._active
            if self.stop.is_set() and in_flight:
                log.warning(
                    "⏹ Stopping: %s; waiting for %d jobs in flight to finish",
                    self.stop.reason,
                    in_flight,
                )
        if isinstance(self.limiter, AdaptiveLimit):
            log.debug(
                "Concurrency limit ended at %d (ceiling %d) after %d changes",
                self.limiter.limit,
                self.limiter.ceiling,
                self.limiter.changes,
            )
        return len(queue)

    def _run_one(self, job: Job, front: bool) -> None:
        try:
            self.execute(job)
        finally:
            with self._slots:
                self._active -= 1
                self._front -= front
                self._slots.notify_all()


def _n(value: int | None) -> str:
    return "?" if value is None else str(value)
