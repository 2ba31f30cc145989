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
from pathlib import Path

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
    ttl = lease_ttl(settings)
    for other in history.running_elsewhere():
        if is_alive(other, history.host, ttl):
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


def lease_ttl(settings: Settings) -> float:
    """How long an older run's lease holds: longer than any request it may have in flight
    (REFRESH_TIMEOUT) plus its stop, so a run cut off from the database for a while is
    never taken for dead while it can still send."""
    return max(LEASE_TTL_SECONDS, settings.timeout + LEASE_TTL_SECONDS)


def is_alive(other: OtherRun, host: str, ttl: float) -> bool:
    # The pid says "gone" only where it means the same process: the same host name can be
    # another container or machine, so the boot and the pid namespace must match too.
    if other.host == host and other.pid and other.machine and other.machine == machine_id():
        try:
            os.kill(other.pid, 0)
        except ProcessLookupError:
            return False  # no such process in this pid namespace: gone, whatever its lease
        except PermissionError:
            pass  # a process of another user has that pid: judge by the lease
    return other.lease_age < ttl


def machine_id() -> str:
    """This boot and pid namespace (Linux), or '' where they cannot be told."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""
