"""Doing the jobs of a run: retries, the concurrency limit, and the record of each.

Whether a job or a retry may start is the gate's answer (gate.py); how each ended is
queued on the run's claim, which writes it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import api_key_auth

from .claim import RunClaim
from .client import Attempt, RefreshClient, Verdict
from .clock import Deadline
from .concurrency import AdaptiveLimit
from .gate import MIN_REQUEST_SECONDS, may_start, time_to_retry
from .ordering import JobQueue
from .outcome import Failure, JobRecord
from .plan import Job
from .retry import RetryPolicy
from .settings import Settings
from .stop import StopRequest

log = logging.getLogger(__name__)

TOKEN_TTL_SECONDS = 10 * 60
# How often the dispatcher looks at the gate while it waits for a free slot; an adaptive
# limit also looks at the requests still out that often.
POLL_SECONDS = 0.5
ADAPTIVE_POLL_SECONDS = 0.05
# What the limiter is told when a request raised instead of answering.
NO_ANSWER = Attempt(Verdict.FAIL, error="internal error", failure=Failure.INTERNAL)


class JobRunner:
    """State shared by the dispatcher and the worker threads of one run."""

    def __init__(
        self,
        settings: Settings,
        *,
        claim: RunClaim,
        client: RefreshClient,
        limiter,  # concurrency.FixedLimit | concurrency.AdaptiveLimit
        stop: StopRequest,
        deadline: Deadline,
        secret: str,
        change_keys: Mapping[Job, str] | None = None,
        change_seen: Mapping[Job, datetime] | None = None,
        on_job_done: Callable[[JobRecord], None] | None = None,
        key_claims=None,  # run_claims.RunClaims: a key a listener holds is skipped
    ):
        self.claim = claim
        self.key_claims = key_claims
        self.client = client
        self.policy = RetryPolicy(max_attempts=settings.max_attempts)
        self.timeout = settings.timeout
        self.concurrency = settings.concurrency
        self.secret = secret
        # The change key each job's data had when the run began, stored with its success.
        self.change_keys = change_keys or {}
        # When the run saw each changed job's data differ from what its copy was computed from.
        self.change_seen = change_seen or {}
        self.on_job_done = on_job_done
        self.limiter = limiter
        self.stop = stop
        self.deadline = deadline
        adaptive = isinstance(self.limiter, AdaptiveLimit)
        self.poll_seconds = ADAPTIVE_POLL_SECONDS if adaptive else POLL_SECONDS
        self.records: list[JobRecord] = []
        self.retries = 0
        # Jobs whose next attempt a stop request cancelled: the run is then incomplete.
        self.cut_short = 0
        self._mutex = threading.Lock()
        self._slots = threading.Condition()
        self._active = 0  # jobs in flight
        self._front = 0  # of which from the front of the order (ordering.JobQueue)

    def may_start(self) -> bool:
        return may_start(self.stop, self.deadline, self.claim)

    # -- one job --------------------------------------------------------------------------
    def mint(self, job: Job) -> str:
        return api_key_auth.mint_client_token(
            job.client_id, self.secret, ttl_seconds=TOKEN_TTL_SECONDS
        )

    def run_claimed(self, job: Job) -> JobRecord:
        """Refresh one job under its key's claim, when the run has key claims; never raises."""
        claims = self.key_claims
        if claims is None:
            return self.run_job(job)
        if not claims.take(job):
            record = JobRecord(job, "skipped", error=claims.SKIP_REASON)
            log.info("⏭ SKIPPED - %s: %s", job, record.error, extra=record.log_fields())
            self.save(record)
            return record
        record = None
        try:
            record = self.run_job(job)
            return record
        finally:
            claims.release(job, record.status if record is not None else "failed")

    def run_job(self, job: Job) -> JobRecord:
        """Refresh one job with retries; never raises."""
        started = time.monotonic()
        attempts, reminted = 0, False
        earlier: list[str] = []  # why each earlier attempt failed
        try:
            token = self.mint(job)
            while True:
                attempts += 1
                timeout = max(MIN_REQUEST_SECONDS, min(self.timeout, self.deadline.remaining()))
                attempt = self.request(job, token, timeout)
                if attempt.verdict is Verdict.SUCCESS:
                    return self.finish(job, "succeeded", attempts, started, attempt, earlier)
                if attempt.verdict is Verdict.REAUTH and not reminted:
                    # The token may have expired in a long backoff: mint once and try again.
                    token, reminted = self.mint(job), True
                    earlier.append(attempt.error or "HTTP 401")
                    self.count_retry()
                    continue
                if attempt.verdict is not Verdict.RETRY or not self.policy.should_retry(attempts):
                    return self.finish(job, "failed", attempts, started, attempt, earlier)
                delay = self.policy.delay(attempts, attempt.retry_after)
                if not time_to_retry(self.deadline, delay):
                    note = "no time left before the deadline to retry"
                    return self.finish(job, "failed", attempts, started, attempt, earlier, note)
                # A stop request (a signal, a lost lock) ends the wait and the job at once.
                if self.stop.wait(delay) or not self.may_start():
                    with self._mutex:
                        self.cut_short += 1
                    note = f"not retried: {self.stop.reason}"
                    return self.finish(job, "failed", attempts, started, attempt, earlier, note)
                earlier.append(attempt.error or "failed")
                self.count_retry()
        except Exception as exc:  # a bug must cost one job, never the run
            log.exception("Unexpected error refreshing %s", job)
            error = f"internal error: {type(exc).__name__}"
            failure = Attempt(Verdict.FAIL, error=error, failure=Failure.INTERNAL)
            return self.finish(job, "failed", attempts, started, failure, earlier)

    def request(self, job: Job, token: str, timeout: float) -> Attempt:
        """Make one attempt and tell the limiter how it went."""
        limit = self.limiter.limit
        ticket = self.limiter.begin(job)
        attempt = NO_ANSWER
        try:
            attempt = self.client.refresh(job, token, timeout)
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
        earlier: Sequence[str] = (),
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
            change_key=self.change_keys.get(job),
            expires_at=attempt.expires_at if status == "succeeded" else None,
            change_at=self.change_seen.get(job),
            retried_after=tuple(earlier),
            failure=None if status == "succeeded" else attempt.failure,
        )
        after = f" after {', '.join(_summarise(earlier))}" if earlier else ""
        if status == "succeeded":
            log.info(
                "✅ SUCCESS - %s: %s platforms, %s SKUs [%.2fs, attempt %d%s]",
                job,
                _n(attempt.platform_count),
                _n(attempt.sku_count),
                seconds,
                attempts,
                after,
                extra=record.log_fields(),
            )
        else:
            words = "attempt" if attempts == 1 else "attempts"
            extra = "; ".join(x for x in (attempt.detail, note) if x)
            log.error(
                "❌ FAILED - %s: %s after %d %s%s [%.2fs%s]",
                job,
                attempt.error or "failed",
                attempts,
                words,
                f" - {extra}" if extra else "",
                seconds,
                f", earlier attempts: {', '.join(_summarise(earlier))}" if earlier else "",
                extra=record.log_fields(),
            )
        self.save(record)
        return record

    def save(self, record: JobRecord) -> None:
        self.claim.queue_record(record)
        with self._mutex:
            self.records.append(record)
        self._tell(record)

    def _tell(self, record: JobRecord) -> None:
        """Tell the caller (a progress bar) a job ended; its failure is never the job's."""
        if self.on_job_done is not None:
            try:
                self.on_job_done(record)
            except Exception:
                log.exception("The progress callback failed for %s", record.job)

    # -- the run --------------------------------------------------------------------------
    def count_skipped(self, records: Sequence[JobRecord]) -> None:
        """Log and count jobs skipped as fresh (their rows are queued with the plan)."""
        for record in records:
            log.info("⏭ SKIPPED - %s: %s", record.job, record.error, extra=record.log_fields())
            with self._mutex:
                self.records.append(record)
            self._tell(record)

    def dispatch(self, jobs: Sequence[Job]) -> int:
        """Run ``jobs`` in order within the concurrency limit; return how many never started."""
        queue = JobQueue(jobs)
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="refresh") as pool:
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
                if not self.may_start():
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
            self.run_claimed(job)
        finally:
            with self._slots:
                self._active -= 1
                self._front -= front
                self._slots.notify_all()


def _summarise(reasons: Sequence[str]) -> list[str]:
    """Return ``reasons`` with repeats counted: ``HTTP 503 x2, timed out after 5s``."""
    counted: dict[str, int] = {}
    for reason in reasons:
        counted[reason] = counted.get(reason, 0) + 1
    return [f"{r} x{n}" if n > 1 else r for r, n in counted.items()]


def _n(value: int | None) -> str:
    return "?" if value is None else str(value)
