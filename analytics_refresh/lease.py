"""A run's lease on its row: how long it promises to renew within, and how others judge it.

A live run renews ``refresh_runs.heartbeat_at`` every few seconds (claim.py) and stores
with its row the length it promises (``lease_seconds``), so that a new run can tell a live
run from a dead one even after the database lost the lock's session, by the old run's own
promise rather than by its own settings.
"""

from __future__ import annotations

import os
from pathlib import Path

from .deployment import lease_length
from .outcome import OtherRun
from .settings import Settings


def lease_seconds(settings: Settings) -> float:
    """The lease a run promises to renew within: longer than any request it may have in
    flight (REFRESH_TIMEOUT) plus its stop, so a run cut off from the database for a while
    is never taken for dead while it can still send."""
    return lease_length(settings.timeout)


def machine_id() -> str:
    """This boot and pid namespace (Linux), or '' where they cannot be told."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""


def is_alive(other: OtherRun, host: str, default_lease: float) -> bool:
    """Whether another run may still be sending: its pid here, else its own lease."""
    # The pid says "gone" only where it means the same process: the same host name can be
    # another container or machine, so the boot and the pid namespace must match too.
    if other.host == host and other.pid and other.machine and other.machine == machine_id():
        try:
            os.kill(other.pid, 0)
        except ProcessLookupError:
            return False  # no such process in this pid namespace: gone, whatever its lease
        except PermissionError:
            pass  # a process of another user has that pid: judge by the lease
    return other.lease_age < (other.lease_seconds or default_lease)
