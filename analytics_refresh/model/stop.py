"""A request to stop the run, set by a signal handler, the deadline or a lost lock."""

from __future__ import annotations

import threading


class StopRequest:
    """Once set, no new job or retry starts; the first reason given is kept."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    def request(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        return self._event.wait(max(seconds, 0.0))
