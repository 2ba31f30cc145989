"""The run's claim on its ground: the lock, the lease on its row, and the writes of its record.

One object, ``RunClaim``, owns all of it. ``claim()`` takes the advisory lock (lock.py) and
makes sure no older run is alive: the lock excludes a second run while the first one's
session lives, but a database restart or a failover drops the session and the lock with
it while the first run may still have requests in flight. So the rows left ``running``
are judged by their lease (``heartbeat_at``), each by the length its own run promised to
renew within (``lease_seconds``): fresh, the new run does nothing; expired, or whose pid is
gone from this host, it is marked ``abandoned`` (lease.py). A session left holding the lock
by a host that vanished is ended once its run's lease has expired (takeover.py).

While the run goes, ``keep()`` runs two threads: one checks the lock every second and
renews the lease on the lock's own session, one writes finished jobs' records; a slow
write never delays the lease, and nothing else waits on the database for either. The ground is
the run's scope (every client, or a shard); a listener claims its keys the same way, with
its own scope and lease.
"""

from __future__ import annotations

import logging
import threading
import time

from . import statements as sql
from .clock import Deadline
from .errors import LockHeld, RefreshError, first_line
from .key_claims import LET_GO
from .lease import is_alive, lease_seconds, machine_id
from .lock import RunLock
from .outcome import Ending, JobRecord, OtherRun, RunFacts, decide
from .pending import PendingRecords
from .plan import Job
from .run_claims import holder
from .settings import Settings
from .stop import StopRequest
from .takeover import take_over
from .writes import STOPPED_ANSWERING, RunWriter

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.2
LOCK_CHECK_SECONDS = 1.0
RENEW_SECONDS = 5.0
# A lock not confirmed for this long (the database stopped answering the claim's thread)
# is treated as lost: no new job starts on a ground that may no longer be this run's.
CONFIRM_SECONDS = 20.0
# How long closing waits for the claim's thread before cutting its connections, and how
# long the final writes (the last records, the run's end) may take after that, in all.
CLOSE_SECONDS = 5.0
FINAL_SECONDS = 10.0
LOCK_LOST = (
    "the database session holding the run lock was lost, so another run could start; "
    "exclusivity cannot be guaranteed"
)


class RunClaim:
    """This run's hold on its ground, from ``claim()`` to ``release()``."""

    def __init__(self, url: str, settings: Settings, deadline: Deadline, stop: StopRequest):
        self.settings = settings
        self.stop = stop
        self.lease = lease_seconds(settings)
        self.writer = RunWriter(
            url,
            trigger=settings.trigger,
            shard=settings.shard_label,
            deadline=deadline,
            machine=machine_id(),
        )
        self.lock = RunLock(url, settings.shard, deadline)
        self.pending = PendingRecords()
        self.lost: str | None = None  # why the lock can no longer be counted on
        self._confirmed_at = time.monotonic()
        self._done = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lease_failed = False

    @property
    def run_id(self) -> str:
        return self.writer.run_id

    # -- claiming the ground --------------------------------------------------------------
    def claim(self) -> None:
        """Take the lock, make sure no older run is alive, and record this run ``running``.

        Raises LockHeld (after recording this run ``skipped``) when another run holds the
        lock or, the lock being free, an older run still renews its lease.
        """
        where = f" for shard {self.settings.shard}" if self.settings.shard else ""
        if not self.lock.acquire():
            refused = take_over(self.writer, self.lock, self.lease)
            if refused is not None:
                self._skip("another refresh run holds the lock" + refused)
                raise LockHeld(
                    f"⏭ Another refresh run holds the lock{where}{refused}; this run does nothing"
                )
        alive = []
        for other in self.writer.running_elsewhere():
            if is_alive(other, self.writer.host, self.lease):
                alive.append(other)
                continue
            age = f"{other.lease_age:.0f}s ago"
            log.warning(
                "Run %s on %s (pid %s) stopped renewing its lease %s: it is gone; marked abandoned",
                other.run_id,
                other.host,
                other.pid,
                age,
            )
            self.writer.mark_abandoned(other, f"left running; its lease was last renewed {age}")
            self._free_keys_of(other)
        if alive:
            other = alive[0]
            note = f"{other} is still alive (lease renewed {other.lease_age:.0f}s ago)"
            self._skip(note)
            raise LockHeld(
                f"⏭ The lock{where} was free, but {note}, as after a database restart; "
                "this run does nothing"
            )
        self.writer.insert_run("running", lease_seconds=self.lease, lock_pid=self.lock.backend_pid)
        self._confirmed_at = time.monotonic()

    def _free_keys_of(self, other: OtherRun) -> None:
        """A run marked abandoned refreshes nothing more: free the keys it had claimed
        (else this run would skip them until their lease ran out)."""
        try:
            if self.writer.query(sql.CLAIMS_TABLE)[0][0]:
                self.writer.run(LET_GO, (holder(other.run_id),))
        except RefreshError as exc:  # their lease frees them soon anyway
            log.warning("Could not free the keys %s had claimed (%s)", other, first_line(exc))

    def _skip(self, note: str) -> None:
        ending = decide(RunFacts(error_code=LockHeld.exit_code, error_note=note))
        self.writer.insert_run("skipped", ending=ending)

    # -- while the run goes ---------------------------------------------------------------
    def keep(self) -> RunClaim:
        """Start the claim's two threads: one watches the lock and renews the lease on the
        lock's own session, one writes finished jobs' records; neither waits on the other."""
        self._confirmed_at = time.monotonic()
        for name, loop in (("claim-watch", self._watch), ("claim-write", self._write)):
            thread = threading.Thread(target=loop, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _watch(self) -> None:
        renewed_at = time.monotonic()
        while not self._done.wait(LOCK_CHECK_SECONDS):
            try:
                renew = time.monotonic() - renewed_at >= RENEW_SECONDS
                if renew:
                    renewed_at = time.monotonic()
                self.check(renew=renew)
            except Exception:  # the thread must outlive any one failure, or the run is blind
                log.exception("The run's lock watch failed once; it goes on")

    def _write(self) -> None:
        while not self._done.wait(FLUSH_SECONDS):
            try:
                self.pending.write(self.writer)
            except Exception:
                log.exception("The run's record writer failed once; it goes on")

    def lost_reason(self) -> str | None:
        """Return why the lock can no longer be counted on, or None; never waits."""
        if self.lost is None and time.monotonic() - self._confirmed_at > CONFIRM_SECONDS:
            self._lose(
                f"{STOPPED_ANSWERING}: the run lock could not be confirmed for "
                f"{CONFIRM_SECONDS:g}s, so another run could start; exclusivity cannot be "
                "guaranteed"
            )
        return self.lost

    def check(self, *, renew: bool = False) -> bool:
        """Ask the database whether the lock is still held (and with ``renew``, renew the
        lease on the same session); stop the run the moment the lock is not held."""
        if self.lost is not None:
            return False
        renewal = (sql.RENEW_LEASE, {"run_id": self.run_id}) if renew else None
        if self.lock.still_held(renewal):
            self._confirmed_at = time.monotonic()
            if renew:
                self._renewed(self.lock.also_failed)
            return True
        if self.lock.silent:
            self._lose(
                f"{STOPPED_ANSWERING}: the run lock's session did not answer its check, so "
                "another run could start; exclusivity cannot be guaranteed"
            )
        else:
            self._lose(LOCK_LOST)
        return False

    def _lose(self, why: str) -> None:
        if self.lost is None:
            self.lost = why
            log.error("❌ Lost the run lock: %s; no new job or retry starts", why)
        self.stop.request(why)

    def _renewed(self, failure: str | None) -> None:
        if failure is not None and not self._lease_failed:
            log.warning("Could not renew the run's lease (%s)", failure)  # it just ages
        self._lease_failed = failure is not None

    def queue_planned(self, jobs: list[Job], skipped: list[JobRecord]) -> None:
        """Give every planned job its ``not_attempted`` row, and queue the skipped ones' records."""
        self.writer.insert_planned(jobs)
        for record in skipped:
            self.pending.queue(record)
        self.pending.write(self.writer)

    def queue_record(self, record: JobRecord) -> None:
        """Queue how a job ended; the claim's thread writes it within a fraction of a second."""
        self.pending.queue(record)

    # -- the end --------------------------------------------------------------------------
    def stop_keeping(self) -> int:
        """Stop the thread (bounded) and write what is queued; return the records not written.

        Once only: a second call (the way out of a run that raised) returns the same count.
        """
        if self._done.is_set():
            return self.pending.unrecorded
        self._done.set()
        # A database known to be silent gets no more time: cut at once.
        silent = self.lost is not None and self.lost.startswith(STOPPED_ANSWERING)
        until = time.monotonic() + (0.5 if silent else CLOSE_SECONDS)
        for thread in self._threads:
            thread.join(max(0.0, until - time.monotonic()))
        writing = len(self._threads) > 1 and self._threads[1].is_alive()
        if writing:
            log.error(
                "❌ %s: the run's record has waited over %gs; cutting its connection",
                STOPPED_ANSWERING.capitalize(),
                CLOSE_SECONDS,
            )
            self.writer.give_up_at = time.monotonic()
            self.writer.cut()
            self._threads[1].join(CLOSE_SECONDS)
            writing = self._threads[1].is_alive()
        self.writer.give_up_at = time.monotonic() + FINAL_SECONDS
        if writing:
            self.pending.give_up(f"{STOPPED_ANSWERING} while they were written")
        else:
            self.pending.write(self.writer, final=True)
        return self.pending.unrecorded

    def finish(self, ending: Ending, counts: dict, concurrency_limit: int | None = None) -> None:
        """Give the run's row its final status (the last write of the run); never raise:
        a row left ``running`` is marked ``abandoned`` by the next run, once its lease ends."""
        try:
            self.writer.finish_run(ending, counts, concurrency_limit)
        except RefreshError as exc:
            log.error(
                "❌ Could not record the end of run %s (%s); the next run will mark it abandoned",
                self.run_id,
                first_line(exc),
            )

    def release(self) -> None:
        """Release the lock and close the record's connection; bounded."""
        self._done.set()
        if self.lost is not None:
            self.lock.cut()  # nothing to release on a lost session: end it, do not wait
        self.lock.release()
        self.writer.close()
