"""The listener's metrics, written every minute: a Prometheus file and/or a push.

Bounded cardinality: no series per key. The file sits beside METRICS_FILE as
``<stem>.listen-<host><suffix>`` (one per listener host, so two never write the same
series); a push goes to job ``analytics_refresh_listen`` grouped by listener host.
"""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    push_to_gateway,
    write_to_textfile,
)

from ..settings import Settings
from ..urls import public_host

log = logging.getLogger(__name__)

PREFIX = "analytics_refresh_listen_"
PUSH_JOB = "analytics_refresh_listen"
PUSH_TIMEOUT_SECONDS = 5.0
# Change to refresh: seconds from a key's first unreflected change to its refresh's end.
LATENCY_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 300, 600, 1800)


def metrics_path(settings: Settings, host: str) -> Path | None:
    path = settings.metrics_file
    if path is None:
        return None
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in host)
    return path.with_name(f"{path.stem}.listen-{safe}{path.suffix}")


class Gauges:
    """The listener's series, in a registry of its own."""

    def __init__(self, settings: Settings, host: str | None = None):
        self.settings = settings
        self.host = host or socket.gethostname()
        self.path = metrics_path(settings, self.host)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.pending = Gauge(
            PREFIX + "pending_keys", "Keys with a change not yet refreshed", registry=r
        )
        self.oldest = Gauge(
            PREFIX + "oldest_pending_seconds",
            "Age of the oldest change not yet refreshed (0: none)",
            registry=r,
        )
        self.refreshes = Counter(
            PREFIX + "refreshes", "Refreshes by outcome", ["status"], registry=r
        )
        self.latency = Histogram(
            PREFIX + "change_to_refresh_seconds",
            "From a key's first unreflected change to its refresh's end",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.notify = Gauge(
            PREFIX + "notify", "1 while woken by notifications, 0 while polling alone", registry=r
        )
        self.up = Gauge(
            PREFIX + "last_write_timestamp_seconds", "When these were written", registry=r
        )
        self._mutex = threading.Lock()

    def observe_pending(self, count: int, oldest: float) -> None:
        self.pending.set(count)
        self.oldest.set(max(0.0, oldest))

    def observe_refresh(self, status: str, latency: float | None) -> None:
        self.refreshes.labels(status).inc()
        if status == "succeeded" and latency is not None:
            self.latency.observe(max(0.0, latency))

    def publish(self) -> None:
        """Write the file and push, as configured; never raise."""
        if self.path is None and self.settings.pushgateway_url is None:
            return
        with self._mutex:
            self.up.set_to_current_time()
            if self.path is not None:
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    write_to_textfile(str(self.path), self.registry)
                except OSError as exc:
                    log.warning(
                        "⚠️ Cannot write the metrics file %s: %s", self.path, exc.strerror or exc
                    )
            if self.settings.pushgateway_url is not None:
                try:
                    push_to_gateway(
                        self.settings.pushgateway_url,
                        job=PUSH_JOB,
                        registry=self.registry,
                        grouping_key={"listener": self.host},
                        timeout=PUSH_TIMEOUT_SECONDS,
                    )
                except Exception as exc:  # a gateway that is down never stops the listener
                    log.warning(
                        "⚠️ Cannot push listener metrics to %s (%s)",
                        public_host(self.settings.pushgateway_url),
                        type(exc).__name__,
                    )
