"""Heartbeat pings, the healthchecks.io protocol: ``/start`` when a run holds the lock and
``/<exit code>`` when the process ends, with the last lines of its log as the body.

The exit code pinged is the one the process exits with (``process.run_command`` sends it), so a
run that could not even read its settings (3) or reach its database (4) is reported too. A
ping never changes the outcome: a failure is a warning in the log.
"""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

from analytics_refresh import __version__
from analytics_refresh.config.urls import public_host
from analytics_refresh.logs import LOGGER_NAME, PlainFormatter, RedactFilter

log = logging.getLogger(__name__)

# The longest a ping may hold the run up, DNS included (healthchecks.io answers in well
# under a second; a monitor that hangs must not hang the run).
PING_TIMEOUT_SECONDS = 2.5
TAIL_LINES = 100
MAX_BODY_BYTES = 10_000


# -- the log's tail, for the ping body --------------------------------------------------------
class LogTail(logging.Handler):
    """Keeps the last lines this run logged, formatted as in the log file, tokens masked."""

    def __init__(self, secrets: tuple[str, ...] = ()):
        super().__init__()
        self.lines: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.setFormatter(PlainFormatter())
        self.addFilter(RedactFilter(secrets))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def text(self, limit: int = MAX_BODY_BYTES) -> str:
        """Return the newest lines that fit in ``limit`` bytes, oldest first."""
        kept: list[str] = []
        size = 0
        for line in reversed(self.lines):
            size += len(line.encode()) + 1
            if size > limit:
                break
            kept.append(line)
        return "\n".join(reversed(kept)) + ("\n" if kept else "")

    @classmethod
    @contextlib.contextmanager
    def attached(cls, secrets: tuple[str, ...]) -> Iterator[LogTail]:
        tail = cls(secrets)
        logger = logging.getLogger(LOGGER_NAME)
        logger.addHandler(tail)
        try:
            yield tail
        finally:
            logger.removeHandler(tail)


# -- heartbeat --------------------------------------------------------------------------------
def ping_url(base: str, suffix: str) -> str:
    """Return ``base`` with ``/suffix`` appended to its path (any query kept)."""
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + suffix))


class Heartbeat:
    """Pings a healthchecks.io-style URL; a ping that fails is a warning and nothing more."""

    def __init__(self, url: str, *, timeout: float = PING_TIMEOUT_SECONDS):
        self.url = url
        self.timeout = timeout
        # The URL's path is the check's key: messages name only the host.
        self.host = public_host(url)

    def start(self, run_id: str) -> bool:
        return self._ping("start", run_id, "")

    def finish(self, exit_code: int, body: str, run_id: str | None) -> bool:
        return self._ping(str(exit_code), run_id, body)

    def _ping(self, suffix: str, run_id: str | None, body: str) -> bool:
        # Imported here: requests loads only in a process that pings (status never does).
        from analytics_refresh.http import monitor_http

        outcome: dict[str, str] = {}
        try:
            # One deadline for all of it: name resolution, connecting, sending, the answer.
            status = monitor_http.send(
                "POST",
                ping_url(self.url, suffix),
                params={"rid": run_id} if run_id else None,
                data=body.encode("utf-8"),
                headers={
                    "User-Agent": f"analytics-refresh/{__version__}",
                    "Content-Type": "text/plain; charset=utf-8",
                },
                timeout=self.timeout,
            )
            if status >= 300:
                outcome["error"] = f"HTTP {status}"
        except monitor_http.MonitorError as exc:
            outcome["error"] = str(exc)
        except Exception as exc:  # a ping must never cost the run anything
            outcome["error"] = type(exc).__name__
        if "error" in outcome:
            log.warning(
                "⚠️ Heartbeat ping /%s to %s failed: %s (the run goes on)",
                suffix,
                self.host,
                outcome["error"],
            )
            return False
        log.debug("Heartbeat ping /%s sent to %s", suffix, self.host)
        return True
