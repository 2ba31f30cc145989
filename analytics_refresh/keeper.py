"""What a live run does in the background: writes finished jobs, renews its lease, and
watches its lock.

One thread, waking every fraction of a second. The lease (``refresh_runs.heartbeat_at``)
tells a new run that this one is alive even when the database lost the lock's session (a
restart, a failover), so the new run does nothing rather than overlap. Losing the lock
stops the run at once: no new job and no further retry starts (in-flight requests finish).
"""

from __future__ import annotations

import logging
import threading
import time

from .errors import first_line
from .history import History
from .lock import RunLock
from .stop import StopRequest

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.2
LOCK_CHECK_SECONDS = 1.0
LEASE_SECONDS = 5.0
# A lease not renewed for this long belongs to a run that is gone: six missed renewals,
# room for a database restart or a failover's switch.
LEASE_TTL_SECONDS = 30.0
LOCK_LOST = (
    "the database session holding the run lock was lost, so another run could start; "
    "exclusivity cannot be guaranteed"
)


class Keeper:
    """Flushes the history, renews the lease and watches the lock until ``close()``."""

    def __init__(self, history: History, lock: RunLock, stop: StopRequest):
        self.history = history
        self.lock = lock
        self.stop = stop
        self.lock_lost = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="keeper", daemon=True)
        self._lease_failed = False

    def start(self) -> Keeper:
        self._thread.start()
        return self

    def _loop(self) -> None:
        lock_at = lease_at = time.monotonic()
        while not self._done.wait(FLUSH_SECONDS):
            try:
                now = time.monotonic()
                if now - lease_at >= LEASE_SECONDS:
                    lease_at = now
                    self.renew()
                if now - lock_at >= LOCK_CHECK_SECONDS:
                    lock_at = now
                    self.check_lock()
                self.history.flush()
            except Exception:  # the keeper must outlive any one failure, or the run is blind
                log.exception("The run's background writer failed once; it goes on")

    def check_lock(self, *, now: bool = False) -> bool:
        """Return whether the lock is still held; stop the run the moment it is not."""
        if self.lock_lost:
            return False
        if self.lock.still_held(now=now):
            return True
        self.lock_lost = True
        log.error("❌ Lost the run lock: %s; no new job or retry starts", LOCK_LOST)
        self.stop.request(LOCK_LOST)
        return False

    def renew(self) -> None:
        try:
            self.history.renew_lease()
        except Exception as exc:  # the run goes on; the lease just ages
            if not self._lease_failed:
                log.warning("Could not renew the run's lease (%s)", first_line(exc))
            self._lease_failed = True
        else:
            self._lease_failed = False

    def close(self) -> None:
        """Stop the thread and write what is still queued."""
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()
        self.history.flush(final=True)
