"""Taking the ground: the run lock, then the lease of any older run the lock cannot see.

The advisory lock excludes a second run while the first one's session lives; a database
restart or a failover drops the session and the lock with it while the first run still has
requests in flight. So a run that gets the lock also looks at the rows left ``running``:
one whose lease (``heartbeat_at``, renewed every few seconds by keeper.py) is fresh belongs
to a run still alive, and the new run does nothing; one whose lease has expired, or whose
pid no longer exists on this host, belongs to a run that is gone and is marked ``abandoned``.
"""

from __future__ import annotations

import logging
import os

from .errors import LockHeld
from .history import History, OtherRun
from .keeper import LEASE_TTL_SECONDS
from .lock import RunLock
from .settings import Settings

log = logging.getLogger(__name__)


def take_the_ground(history: History, lock: RunLock, settings: Settings) -> None:
    """Take the lock and make sure no older run is alive; record this run ``running``.

    Raises LockHeld (after recording this run ``skipped``) when another run holds the lock
    or, the lock being free, an older run still renews its lease.
    """
    where = f" for shard {settings.shard}" if settings.shard else ""
    if not lock.acquire():
        note = "another refresh run holds the lock"
        history.record_run("skipped", exit_code=LockHeld.exit_code, note=note)
        raise LockHeld(f"⏭ Another refresh run holds the lock{where}; this run does nothing")
    alive = []
    for other in history.running_elsewhere():
        if is_alive(other, history.host):
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
        history.mark_abandoned(other, f"left running; its lease was last renewed {age}")
    if alive:
        other = alive[0]
        note = f"{other} is still alive (lease renewed {other.lease_age:.0f}s ago)"
        history.record_run("skipped", exit_code=LockHeld.exit_code, note=note)
        raise LockHeld(
            f"⏭ The lock{where} was free, but {note}, as after a database restart; "
            "this run does nothing"
        )
    history.record_run("running")


def is_alive(other: OtherRun, host: str) -> bool:
    if other.host == host and other.pid:
        try:
            os.kill(other.pid, 0)
        except ProcessLookupError:
            return False  # no such process on this host: gone, whatever its lease says
        except PermissionError:
            pass  # a process of another user has that pid: judge by the lease
    return other.lease_age < LEASE_TTL_SECONDS
