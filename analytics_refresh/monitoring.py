"""What a run tells the outside world: heartbeat pings and a Prometheus metrics file.

``run_monitored`` wraps ``runner.execute_run``; both ``analytics-refresh run`` and the manual
run go through it. With ``HEALTHCHECK_URL`` set, the run pings ``<url>/start?rid=<run id>``
once it holds the lock and ``<url>/<exit code>`` at the end, with the last lines of its log
as the body (the healthchecks.io protocol). A run that ends before it starts (exit 3 or 4)
or finds the lock taken (exit 5) sends only its exit code. With ``METRICS_FILE`` set, the
run replaces that file atomically with its metrics (node_exporter's textfile collector).
Neither ever changes the run's outcome: a failure is a warning in the log.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests
from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from . import __version__, db
from .errors import RefreshError, first_line
from .history import JobRecord
from .logs import DATE_FORMAT, LOGGER_NAME, TEXT_FORMAT, RedactFilter, redact
from .runner import RunResult, StopRequest, execute_run
from .status import freshness

log = logging.getLogger(__name__)

# The longest a ping may hold the run up, DNS included (healthchecks.io answers in well
# under a second; a monitor that hangs must not hang the run).
PING_TIMEOUT_SECONDS = 2.5
TAIL_LINES = 100
MAX_BODY_BYTES = 10_000
JOB_STATUSES = ("succeeded", "failed", "not_attempted", "skipped")

PREFIX = "analytics_refresh_"
LAST_SUCCESS = PREFIX + "last_success_timestamp_seconds"
CLIENT_LAST_SUCCESS = PREFIX + "client_last_success_timestamp_seconds"

LAST_SUCCESSFUL_RUN = """
    SELECT extract(epoch FROM max(finished_at))::float8
    FROM refresh_runs
    WHERE status = 'succeeded' AND shard = %s
"""


# -- the run, monitored -----------------------------------------------------------------------
def run_monitored(
    settings,
    *,
    stop: StopRequest | None = None,
    on_job_done: Callable[[JobRecord], None] | None = None,
    on_started: Callable[[str], None] | None = None,
) -> RunResult:
    """Do one run with its heartbeat pings and metrics file; return how it went."""
    if settings.dry_run:  # a dry run calls nothing, monitors included
        return execute_run(settings, stop=stop, on_job_done=on_job_done, on_started=on_started)
    heartbeat = Heartbeat(settings.healthcheck_url) if settings.healthcheck_url else None
    started_at = time.time()
    run_ids: list[str] = []

    def started(run_id: str) -> None:
        run_ids.append(run_id)
        if heartbeat is not None:
            heartbeat.start(run_id)
        if on_started is not None:
            on_started(run_id)

    with LogTail.attached(settings) as tail:
        try:
            result = execute_run(settings, stop=stop, on_job_done=on_job_done, on_started=started)
        except Exception as exc:
            code = exc.exit_code if isinstance(exc, RefreshError) else 1
            failed = RunResult(
                run_ids[0] if run_ids else None,
                "failed",
                code,
                started_at=started_at,
                finished_at=time.time(),
            )
            secrets = settings.secrets
            tail.lines.append(f"error (exit {code}): {redact(str(exc), secrets)}")
            _report(settings, failed, heartbeat, tail)
            raise
    _report(settings, result, heartbeat, tail)
    return result


def _report(settings, result: RunResult, heartbeat: Heartbeat | None, tail: LogTail) -> None:
    # A run that found the lock taken did nothing: the holder's metrics stay in the file.
    if settings.metrics_file is not None and result.exit_code != 5:
        write_metrics(settings, result)
    if heartbeat is not None:
        heartbeat.finish(result.exit_code, tail.text(), result.run_id)


# -- the log's tail, for the ping body --------------------------------------------------------
class LogTail(logging.Handler):
    """Keeps the last lines this run logged, formatted as in the log file, tokens masked."""

    def __init__(self, secrets: tuple[str, ...] = ()):
        super().__init__()
        self.lines: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.setFormatter(logging.Formatter(TEXT_FORMAT, DATE_FORMAT))
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
    def attached(cls, settings) -> Iterator[LogTail]:
        tail = cls(settings.secrets)
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
        self.host = urlsplit(url).hostname or "the monitor"

    def start(self, run_id: str) -> bool:
        return self._ping("start", run_id, "")

    def finish(self, exit_code: int, body: str, run_id: str | None) -> bool:
        return self._ping(str(exit_code), run_id, body)

    def _ping(self, suffix: str, run_id: str | None, body: str) -> bool:
        outcome: dict[str, str] = {}

        def send() -> None:
            try:
                response = requests.post(
                    ping_url(self.url, suffix),
                    params={"rid": run_id} if run_id else None,
                    data=body.encode("utf-8"),
                    headers={
                        "User-Agent": f"analytics-refresh/{__version__}",
                        "Content-Type": "text/plain; charset=utf-8",
                    },
                    timeout=self.timeout,
                )
                response.close()
                if response.status_code >= 300:
                    outcome["error"] = f"HTTP {response.status_code}"
            except requests.Timeout:
                outcome["error"] = f"no answer within {self.timeout:g}s"
            except requests.ConnectionError:
                outcome["error"] = "connection failed"
            except Exception as exc:  # a ping must never cost the run anything
                outcome["error"] = type(exc).__name__
            outcome.setdefault("done", "")

        # A thread bounds the whole ping, name resolution included, which requests' own
        # timeouts do not; a ping still stuck when the run moves on dies with the process.
        thread = threading.Thread(target=send, name="heartbeat", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if "done" not in outcome:
            outcome["error"] = f"no answer within {self.timeout:g}s"
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


# -- metrics ----------------------------------------------------------------------------------
class _Snapshot:
    """A collector holding the values one run writes."""

    def __init__(self, result: RunResult, last_success: float | None, clients: list):
        self.result = result
        self.last_success = last_success
        self.clients = clients

    def collect(self):
        r = self.result
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
        ):
            yield GaugeMetricFamily(PREFIX + name, doc, value=value)
        jobs = GaugeMetricFamily(
            PREFIX + "last_run_jobs", "Jobs of the last run by status.", labels=["status"]
        )
        for status in JOB_STATUSES:
            jobs.add_metric([status], r.counts[status])
        yield jobs
        yield GaugeMetricFamily(
            LAST_SUCCESS,
            "When the last run that refreshed every job ended (0: never).",
            value=self.last_success or 0.0,
        )
        clients = GaugeMetricFamily(
            CLIENT_LAST_SUCCESS,
            "When each connected client x platform was last refreshed (0: never).",
            labels=["client_id", "platform"],
        )
        for client_id, platform, value in self.clients:
            clients.add_metric([client_id, platform], value)
        yield clients


def write_metrics(settings, result: RunResult) -> bool:
    """Replace ``settings.metrics_file`` with the metrics of ``result``; False on failure."""
    path = Path(settings.metrics_file)
    known = None
    # Exit 4: the database was unreachable moments ago; do not wait on it a second time.
    if result.exit_code != 4:
        try:
            known = _from_database(settings)
        except Exception as exc:
            log.warning(
                "⚠️ Metrics: cannot read refresh times from the database (%s)",
                first_line(exc),
            )
    if known is None:
        # Keep what the previous run knew rather than claim nothing was ever refreshed.
        known = _from_previous_file(path)
    last_success, clients = known
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(result, last_success, clients))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(path), registry)
    except OSError as exc:
        log.warning("⚠️ Cannot write the metrics file %s: %s", path, exc.strerror or exc)
        return False
    log.debug("Metrics written to %s", path)
    return True


def _from_database(settings) -> tuple[float | None, list]:
    with db.connection(db.database_url(settings)) as conn:
        with conn.cursor() as cur:
            cur.execute(LAST_SUCCESSFUL_RUN, (str(settings.shard) if settings.shard else "",))
            last_success = cur.fetchone()[0]
        rows = freshness(conn, settings)
    clients = [
        (r.client_id, r.platform, r.last_success.timestamp() if r.last_success else 0.0)
        for r in rows
    ]
    return last_success, clients


def _from_previous_file(path: Path) -> tuple[float | None, list]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None, []
    last_success, clients = None, []
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS:
                    last_success = sample.value
                elif sample.name == CLIENT_LAST_SUCCESS:
                    labels = sample.labels
                    clients.append((labels["client_id"], labels["platform"], sample.value))
    except (ValueError, KeyError):
        return None, []
    return last_success, clients
