"""How many requests a run keeps in flight."""

from __future__ import annotations

from .client import Verdict


class FixedLimit:
    """A constant limit: ``REFRESH_ADAPTIVE=false``, or the ceiling itself."""

    def __init__(self, limit: int):
        self.limit = limit

    def observe(self, key: object, latency: float, verdict: Verdict) -> None:
        """Take note of one attempt's outcome (a fixed limit ignores it)."""
