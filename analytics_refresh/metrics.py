"""The run's metrics: a Prometheus text file and/or a push to a Pushgateway.

``METRICS_FILE`` is replaced atomically at the end of each run (node_exporter's textfile
collector reads it); ``METRICS_PUSHGATEWAY_URL`` receives the same metrics, grouped by job
and shard, where no node_exporter runs (Kubernetes, compose, Render). Every series carries
``shard`` ("none" for an unsharded run), and a sharded run names its file per shard, so
shards sharing one textfile directory never write the same series. Neither path ever
changes the run's outcome: a failure is a warning in the log.
"""

from __future__ import annotations

import logging
from pathlib import Path

from prometheus_client import CollectorRegistry, push_to_gateway, write_to_textfile
from prometheus_client.core import GaugeMetricFamily

from . import db, key_freshness, key_metrics, monitor_http, records
from .errors import first_line
from .outcome import CHANGE_KINDS, JOB_STATUSES, RunResult
from .settings import Settings
from .urls import public_host

log = logging.getLogger(__name__)

PREFIX = "analytics_refresh_"
PUSH_JOB = "analytics_refresh"
PUSH_TIMEOUT_SECONDS = 5.0


def shard_label(settings: Settings) -> str:
    """The run's shard as a label: the history's, or "none" (a label cannot be empty)."""
    return settings.shard_label or "none"


def metrics_path(settings: Settings) -> Path | None:
    """Return the metrics file of this run: per shard when sharded."""
    path = settings.metrics_file
    if path is None or settings.shard is None:
        return path
    shard = settings.shard
    return path.with_name(f"{path.stem}.shard-{shard.index}-of-{shard.count}{path.suffix}")


class _Snapshot:
    """A collector holding the values one run writes: its own, and what the record knows."""

    def __init__(self, result: RunResult, known, shard: str):
        self.result = result
        self.known = known  # a collector of the record's families (keys.py), or None
        self.shard = shard

    def gauge(self, name: str, doc: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(PREFIX + name, doc, labels=["shard"])
        family.add_metric([self.shard], value)
        return family

    def collect(self):
        r, shard = self.result, self.shard
        for name, doc, value in (
            ("last_run_start_timestamp_seconds", "When the last run started.", r.started_at),
            ("last_run_end_timestamp_seconds", "When the last run ended.", r.finished_at),
            (
                "last_run_duration_seconds",
                "How long the last run took.",
                max(0.0, r.finished_at - r.started_at),
            ),
            ("last_run_exit_code", "The last run's exit code (0 = all succeeded).", r.exit_code),
            ("last_run_retries", "Retried attempts in the last run.", r.retries),
            (
                "last_run_change_query_failed",
                "1 when the last run's change query failed and it refreshed every job.",
                1 if r.change_error else 0,
            ),
        ):
            yield self.gauge(name, doc, value)
        jobs = GaugeMetricFamily(
            PREFIX + "last_run_jobs", "Jobs of the last run by status.", labels=["status", "shard"]
        )
        for status in JOB_STATUSES:
            jobs.add_metric([status, shard], r.counts[status])
        yield jobs
        changes = GaugeMetricFamily(
            PREFIX + "last_run_change_jobs",
            "Jobs of the last run by change detection: data changed, unchanged (skipped), "
            "or refreshed because their max age came due.",
            labels=["kind", "shard"],
        )
        for kind in CHANGE_KINDS:
            changes.add_metric([kind, shard], r.changes[kind])
        yield changes
        if self.known is not None:
            yield from self.known.collect()


def publish(settings: Settings, result: RunResult) -> None:
    """Write the metrics file and push to the gateway, as configured; never raise."""
    path = metrics_path(settings)
    if path is None and settings.pushgateway_url is None:
        return
    known = None
    # Exit 4: the database was unreachable moments ago; do not wait on it a second time.
    if not result.database_failed:
        try:
            known = _from_database(settings)
        except Exception as exc:
            log.warning(
                "⚠️ Metrics: cannot read refresh times from the database (%s)", first_line(exc)
            )
    if known is None:
        # Keep what the previous run knew rather than claim nothing was ever refreshed.
        known = _from_previous_file(path) if path is not None else key_metrics.Known()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(result, known, shard_label(settings)))
    if path is not None:
        _write(path, registry)
    if settings.pushgateway_url is not None:
        _push(settings, registry)


def _write(path: Path, registry: CollectorRegistry) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(path), registry)
    except OSError as exc:
        log.warning("⚠️ Cannot write the metrics file %s: %s", path, exc.strerror or exc)
        return
    log.debug("Metrics written to %s", path)


def _push(settings: Settings, registry: CollectorRegistry) -> None:
    try:
        push_to_gateway(
            settings.pushgateway_url,
            job=PUSH_JOB,
            registry=registry,
            grouping_key={"shard": shard_label(settings)},
            timeout=PUSH_TIMEOUT_SECONDS,
            handler=_bounded_handler,
        )
    except Exception as exc:  # a gateway that is down costs seconds, never the run
        log.warning(
            "⚠️ Cannot push metrics to the Pushgateway on %s (%s)",
            public_host(settings.pushgateway_url),
            exc if isinstance(exc, monitor_http.MonitorError) else type(exc).__name__,
        )
        return
    log.debug("Metrics pushed to %s", public_host(settings.pushgateway_url))


def _bounded_handler(url, method, timeout, headers, data):
    """prometheus_client's push handler, bounded as a whole (its own bounds each read)."""

    def handle() -> None:
        status = monitor_http.send(
            method, url, timeout=timeout or PUSH_TIMEOUT_SECONDS, data=data, headers=dict(headers)
        )
        if status >= 400:
            raise monitor_http.MonitorError(f"HTTP {status}")

    return handle


def _from_database(settings: Settings) -> key_metrics.Known:
    with db.connection(db.database_url(settings)) as conn:
        last_success = records.last_successful_run(conn, settings.shard_label)
        summary = key_freshness.read(conn, settings, worst=settings.metrics_worst_keys)
    return key_metrics.from_summary(
        summary, last_success, shard_label(settings), key_freshness.promise_seconds(settings)
    )


def _from_previous_file(path: Path) -> key_metrics.Known:
    try:
        return key_metrics.from_previous_text(path.read_text(encoding="utf-8"))
    except OSError:
        return key_metrics.Known()
