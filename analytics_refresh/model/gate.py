"""Whether another job, or another attempt of one, may start: decided here and nowhere else."""

from __future__ import annotations

from typing import Protocol

from analytics_refresh.clock import Deadline
from analytics_refresh.model.stop import StopRequest

# A request may not start with less time than this before the deadline: it would only
# time out.
MIN_REQUEST_SECONDS = 1.0


class Ground(Protocol):
    """What the gate asks of a claim (claim.RunClaim): whether its lock still counts."""

    def lost_reason(self) -> str | None: ...


def may_start(stop: StopRequest, deadline: Deadline, ground: Ground) -> bool:
    """Return whether a job or a retry may start now; never waits on the database.

    No once a stop was requested (a signal), once the deadline leaves less than
    MIN_REQUEST_SECONDS, or once the lock is lost or unconfirmed; the last two become the
    run's stop request here, so ``stop.reason`` then says why.
    """
    if stop.is_set():
        return False
    if deadline.remaining() < MIN_REQUEST_SECONDS:
        stop.request(f"{deadline} reached")
        return False
    lost = ground.lost_reason()
    if lost is not None:
        stop.request(lost)
        return False
    return True


def time_to_retry(deadline: Deadline, delay: float) -> bool:
    """Whether a retry after ``delay`` seconds would still start before the deadline."""
    return delay <= deadline.remaining() - MIN_REQUEST_SECONDS
