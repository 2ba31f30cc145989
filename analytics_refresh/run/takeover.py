"""Taking over from a run that vanished but whose database session still holds the lock.

A host that vanishes (a dead network path, no FIN) leaves its session on the server, with
its advisory locks, until the server notices: hours at PostgreSQL's defaults. Once that
run's own lease has expired it is not sending any more, so its lock session is ended
(``pg_terminate_backend``: allowed for the role's own sessions, or with
``pg_signal_backend``) and the lock taken; where the role may not, the run says which
session, which role, and what to grant.
"""

from __future__ import annotations

import logging
import time

from analytics_refresh.errors import RefreshError, first_line
from analytics_refresh.model.outcome import OtherRun
from analytics_refresh.run.lease import is_alive
from analytics_refresh.run.lock import RunLock
from analytics_refresh.store import statements as sql
from analytics_refresh.store.writes import RunWriter

log = logging.getLogger(__name__)

# How long to wait for a stale session's server process to exit once ended.
TAKE_OVER_SECONDS = 5.0


def take_over(writer: RunWriter, lock: RunLock, lease: float) -> str | None:
    """End the sessions of runs whose lease expired but which still hold a lock, then
    take the lock; return None on success, else why not (to follow "holds the lock")."""
    stale = [
        other
        for other in writer.running_elsewhere(sql.LOCK_HOLDERS)
        if not is_alive(other, writer.host, lease)
    ]
    if not stale:
        return ""
    refusals = [why for why in (_end_session(writer, other, lease) for other in stale) if why]
    if len(refusals) < len(stale) and _wait_for_lock(lock):
        return None
    return "".join(refusals) or "; its session outlived its lease and could not be ended"


def _end_session(writer: RunWriter, other: OtherRun, lease: float) -> str:
    """End a stale run's lock session; return '' or why it could not be ended."""
    pid = other.lock_pid
    promised = other.lease_seconds or lease
    what = (
        f"; {other} stopped renewing its lease {other.lease_age:.0f}s ago (it promised "
        f"{promised:.0f}s), but its database session (server pid {pid}) still holds "
        "the lock, as after its host vanished"
    )
    try:
        ended = writer.query(sql.TERMINATE, (pid,))[0][0]
    except RefreshError as exc:
        return what + _why_not(writer, pid, first_line(exc))
    if ended is False:
        return ""  # it exited meanwhile: the lock is free
    log.warning(
        "⚠️ Ended the database session (server pid %s) of %s, whose lease expired %.0fs "
        "ago (it promised %.0fs) but which still held the lock, as after its host "
        "vanished; this run takes over",
        pid,
        other,
        other.lease_age,
        promised,
    )
    return ""


def _why_not(writer: RunWriter, pid: int | None, error: str) -> str:
    """Say which role may not end which session, and what would let it."""
    try:
        me, owner, owner_super = writer.query(sql.SESSION_ROLES, (pid,))[0]
    except (RefreshError, IndexError):
        return f"; ending it failed: {error}"
    if owner_super:
        fix = (
            f"a superuser must end it (SELECT pg_terminate_backend({pid})), or set the "
            "server's tcp_keepalives_idle or tcp_user_timeout so that it notices dead "
            "peers sooner"
        )
    else:
        fix = (
            f"GRANT pg_signal_backend TO {me} (or run every runner as role {owner}), "
            f"or end it by hand: SELECT pg_terminate_backend({pid})"
        )
    return f"; role {me} may not end a session of role {owner} ({error}): {fix}"


def _wait_for_lock(lock: RunLock) -> bool:
    """Take the lock once the ended session's server process has let it go."""
    until = time.monotonic() + TAKE_OVER_SECONDS
    while True:
        if lock.acquire():
            return True
        if time.monotonic() > until:
            return False
        time.sleep(0.1)
