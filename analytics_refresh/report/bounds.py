"""The promise a report judges keys by, per mode, from the settings and what the runs say."""

from __future__ import annotations

from dataclasses import dataclass

from .. import promise
from ..settings import Settings

CLASSIC = "classic"
CHANGE_AWARE = "change-aware"
LISTENER = "listener"


@dataclass(frozen=True)
class Bounds:
    """How late a key may be: by its age, after a change, and whether expiry counts."""

    mode: str
    age_seconds: float  # since the last success
    change_seconds: float | None  # since the first change not reflected (None: not judged)
    expiry: bool  # an expired copy is late

    def describe(self) -> str:
        """Return the promise in words, for the report's header."""
        text = f"refreshed within {duration(self.age_seconds)}"
        if self.change_seconds is not None:
            text += f"; a change shown within {duration(self.change_seconds)}"
        if self.expiry:
            text += "; a kept copy never expired"
        return text


def within(bounds: Bounds, now, *, last_success_at, expires_at=None) -> bool | None:
    """Return whether a key is within the promise at ``now`` by its state alone (None:
    never refreshed, so not yet counted)."""
    if last_success_at is None:
        return None
    if (now - last_success_at).total_seconds() > bounds.age_seconds:
        return False
    return not (bounds.expiry and expires_at is not None and expires_at <= now)


def bounds_for(settings: Settings, *, checked_runs: int = 0, listener_runs: int = 0) -> Bounds:
    """Return the promise of the mode in use (promise.py's numbers): the listener's when
    its rounds are in the window, change-aware when the change query is set or runs read
    it, else classic."""
    if listener_runs:
        mode = LISTENER
    elif checked_runs or settings.change_sql:
        mode = CHANGE_AWARE
    else:
        mode = CLASSIC
    p = promise.promise_for(settings, mode)
    if mode == CLASSIC:
        return Bounds(mode, p.max_age_seconds, None, False)
    return Bounds(mode, p.max_age_seconds, p.staleness_seconds, p.keeps_copies)


def duration(seconds: float) -> str:
    """Return ``seconds`` as ``2 h 30 min``, ``90 s`` or ``1 d 2 h``."""
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    days, minutes = divmod(minutes, 1440)
    hours, minutes = divmod(minutes, 60)
    parts = [
        f"{days} d" if days else "",
        f"{hours} h" if hours else "",
        f"{minutes} min" if minutes else "",
    ]
    return " ".join(p for p in parts if p)
