"""The run's deadline, counted from the process start (REFRESH_DEADLINE)."""

from __future__ import annotations

import time


class Deadline:
    """``seconds`` after ``started`` (a ``time.monotonic()`` reading)."""

    def __init__(self, seconds: float, started: float | None = None):
        self.seconds = seconds
        self.started = time.monotonic() if started is None else started
        self.at = self.started + seconds

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def __str__(self) -> str:
        return f"deadline of {self.seconds:g}s"
