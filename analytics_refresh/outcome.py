"""How a run ends, decided once: the run's types and ``decide``, which nothing else second-guesses.

No I/O here. ``decide`` turns every fact that bears on the end of a run (its job counts,
a stop requested and why, a lost lock, job records that could not be written, an error
that ended it early) into its status, exit code and note. The runner, the claim, the
manual run, the process wrapper and the metrics all ask it or read what it said.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from .errors import DatabaseError, Interrupted, LockHeld
from .text import int4, plain

if TYPE_CHECKING:  # the type only: the run's model stands below the store that plans
    from .plan import Job

# Text from outside (an error, a change key, a note) is cut to this many characters.
STORED_TEXT_CHARS = 1000
# What a JSON log line says of a job (the error text is already in its message).
LOGGED_COLUMNS = ("client_id", "platform", "status", "attempts", "http_status", "duration_ms")
JOB_STATUSES = ("succeeded", "failed", "not_attempted", "skipped")
# What change detection made of a job: its data changed, its copy expires before the next
# run could refresh it, its max age came due, or unchanged (skipped, only counted).
CHANGE_KINDS = ("changed", "expiring", "due", "unchanged")


class Failure(enum.Enum):
    """Why an attempt failed, told once where the answer is read (client.py)."""

    TIMEOUT = "timeout"  # no complete answer in time
    CONNECTION = "connection"  # refused, reset, name not resolved
    HTTP = "http"  # an error status: see http_status
    INVALID = "invalid"  # a 2xx that is not a dashboard
    INTERNAL = "internal"  # the runner itself failed


@dataclass(frozen=True)
class JobRecord:
    """How one job ended."""

    job: Job
    status: str  # succeeded | failed | not_attempted | skipped
    attempts: int = 0
    http_status: int | None = None
    duration_ms: int | None = None
    platform_count: int | None = None
    sku_count: int | None = None
    error: str | None = None
    change_key: str | None = None
    expires_at: datetime | None = None  # until when the refreshed copy holds, if declared
    change_at: datetime | None = None  # when the change this refresh covers was first seen
    # Why earlier attempts failed ("HTTP 503", ...), for the log line; not stored.
    retried_after: tuple[str, ...] = ()
    failure: Failure | None = None  # the kind of the last failed attempt; not stored

    def columns(self) -> dict:
        """Return the record as ``refresh_jobs`` columns: any text made plain, any number
        that does not fit dropped, so whatever the API sent, the row can be written."""
        return {
            "client_id": self.job.client_id,
            "platform": self.job.platform,
            "status": self.status,
            "attempts": int4(self.attempts) or 0,
            "http_status": int4(self.http_status),
            "duration_ms": int4(self.duration_ms),
            "platform_count": int4(self.platform_count),
            "sku_count": int4(self.sku_count),
            "error": None if self.error is None else plain(self.error, STORED_TEXT_CHARS),
        }

    def row(self, run_id: str) -> tuple:
        c = self.columns()
        key = None if self.change_key is None else plain(self.change_key, STORED_TEXT_CHARS)
        return (
            run_id,
            c["client_id"],
            c["platform"],
            c["status"],
            c["attempts"],
            c["http_status"],
            c["duration_ms"],
            c["platform_count"],
            c["sku_count"],
            c["error"],
            key,
            self.expires_at,
            self.change_at,
        )

    def log_fields(self) -> dict:
        """Return the fields a JSON log line carries for this job."""
        columns = self.columns()
        return {k: columns[k] for k in LOGGED_COLUMNS}


# Slotted, not frozen: a status of 300,000 keys builds 600,000 of these and a frozen
# dataclass costs six times as much to build.
@dataclass(slots=True)
class KeyState:
    """What the record knows of one client x platform."""

    client_id: str
    platform: str
    last_attempt_at: datetime | None = None
    last_status: str | None = None
    last_error: str | None = None
    last_http_status: int | None = None
    consecutive_failures: int = 0
    last_success_at: datetime | None = None
    last_duration_ms: int | None = None
    change_key: str | None = None
    changed_at: datetime | None = None
    verified_at: datetime | None = None  # refreshed, or confirmed unchanged, at this time
    success_planned_at: datetime | None = None  # when the run of the last success started
    expires_at: datetime | None = None  # until when its copy holds (None: not declared)
    # The latest change-checking run wanted it refreshed, and it has not succeeded since.
    pending: bool = False

    @property
    def current_at(self) -> datetime | None:
        """When the cache was last known current: its last success or a later check, and
        never past the moment its copy expired (current.py says how checks count)."""
        times = [t for t in (self.last_success_at, self.verified_at) if t is not None]
        if not times:
            return None
        known = max(times)
        if self.expires_at is not None and self.expires_at < known:
            return self.expires_at
        return known

    def expired(self, now: datetime) -> bool:
        """Whether the copy's declared expiry has passed (False when none was declared)."""
        return self.expires_at is not None and self.expires_at <= now


@dataclass(frozen=True)
class OtherRun:
    """A run row left ``running`` by another process, and how fresh its lease is."""

    run_id: str
    host: str
    pid: int | None
    lease_age: float
    machine: str | None = None  # its boot and pid namespace (claim.machine_id)
    # The lease it promised to renew within (None: a release that did not say).
    lease_seconds: float | None = None
    lock_pid: int | None = None  # the backend of its lock's session

    def __str__(self) -> str:
        return f"run {self.run_id} on {self.host} (pid {self.pid})"


@dataclass(frozen=True)
class Ending:
    """How a run ended: its row's status, the process's exit code, and why."""

    status: str  # succeeded | partial | failed | interrupted | skipped
    exit_code: int
    note: str | None = None


@dataclass(frozen=True)
class RunFacts:
    """Everything that decides how a run ends."""

    counts: Mapping[str, int] = field(default_factory=dict)  # jobs by status
    # Why a stop was requested (a signal, the deadline, the lost lock), if one was.
    stop_reason: str | None = None
    # Whether the stop kept a job from starting or from its retry.
    cut_short: bool = False
    lock_lost: bool = False
    unrecorded: int = 0  # finished jobs whose rows could not be written
    # What ended the run early, if not 0: its exit code (errors.exit_code) and message.
    error_code: int | None = None
    error_note: str | None = None
    # Why the configured change query could not be used (every job then ran), if it failed.
    change_error: str | None = None
    # Jobs that succeeded but whose cache row was not rewritten (the manual run checks).
    stale_caches: int = 0


def decide(facts: RunFacts) -> Ending:
    """Return the status, exit code and note of a run with these facts.

    In order: an error that ended the run (5 skipped: another run holds the ground; 6
    interrupted; else failed with its code); records that could not be written (failed,
    4: the record is incomplete); a lost lock (interrupted, 6, even with every job
    started); a stop that kept a job from starting or retrying, or a job not attempted
    (interrupted, 6); a failed job (partial when another succeeded or was skipped, else
    failed; 1); a succeeded job whose cache row was not rewritten (1, the run's status
    unchanged); else succeeded (0), no jobs included. A failed change query changes no code
    (every job ran) but is the note of a run that has no other.
    """
    counts = Counter(facts.counts)
    if facts.error_code:
        code = facts.error_code
        if code == LockHeld.exit_code:
            return Ending("skipped", code, facts.error_note)
        status = "interrupted" if code == Interrupted.exit_code else "failed"
        return Ending(status, code, facts.error_note)
    if facts.unrecorded:
        note = f"{facts.unrecorded} job records could not be written to refresh_jobs"
        return Ending("failed", DatabaseError.exit_code, note)
    if facts.lock_lost:
        return Ending("interrupted", Interrupted.exit_code, facts.stop_reason)
    if counts["not_attempted"] or (facts.stop_reason is not None and facts.cut_short):
        note = facts.stop_reason or f"{counts['not_attempted']} jobs not attempted"
        return Ending("interrupted", Interrupted.exit_code, note)
    # A failed change query leaves the exit code alone (every job ran) but not the note.
    note = facts.stop_reason
    if note is None and facts.change_error:
        note = f"the change query failed ({facts.change_error}): every job was refreshed"
    if counts["failed"]:
        done = counts["succeeded"] + counts["skipped"] + counts["unchanged"]
        return Ending("partial" if done else "failed", 1, note)
    if facts.stale_caches:
        stale = f"{facts.stale_caches} jobs succeeded but their cache row is older than the run"
        return Ending("succeeded", 1, stale)
    return Ending("succeeded", 0, note)


@dataclass
class RunResult:
    """How a run went, as the caller (exit code, metrics, the manual run's summary) sees it."""

    run_id: str | None
    status: str
    exit_code: int
    counts: Counter = field(default_factory=Counter)
    records: list[JobRecord] = field(default_factory=list)
    note: str | None = None
    started_at: float = 0.0
    finished_at: float = 0.0
    retries: int = 0
    changes: Counter = field(default_factory=Counter)  # jobs by CHANGE_KINDS
    # Why the configured change query failed (the run then refreshed every job), or None.
    change_error: str | None = None
    facts: RunFacts | None = None  # what decided its end, for a caller that learns more

    @classmethod
    def ended(cls, run_id: str | None, ending: Ending, **kwargs) -> RunResult:
        return cls(run_id, ending.status, ending.exit_code, note=ending.note, **kwargs)

    @property
    def database_failed(self) -> bool:
        """Whether the run ended for want of its database (exit 4)."""
        return self.exit_code == DatabaseError.exit_code


@dataclass
class Hooks:
    """What the caller wants to hear while the run goes (heartbeat, progress bar)."""

    on_started: Callable[[str], None] | None = None
    on_job_done: Callable[[JobRecord], None] | None = None
