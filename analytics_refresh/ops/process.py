"""The one way through a command: exceptions become exit codes here and nowhere else.

``execute`` reads the environment and the settings, runs the command, turns whatever
escapes it into its exit code (``errors.exit_code``; README.md, "Exit codes"), says what
went wrong on stderr and in the log file, and tells the heartbeat the very code the
process exits with. Every entry point (the CLI, the cron script, the manual run) uses it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from analytics_refresh.clock import Deadline
from analytics_refresh.config.envfile import given_environment, load_environment
from analytics_refresh.config.settings import (
    Settings,
    partial,
    raw_secrets,
    unknown_variables,
)
from analytics_refresh.errors import ConfigError, LockHeld, RefreshError, exit_code
from analytics_refresh.http.heartbeat import Heartbeat, LogTail
from analytics_refresh.logs import get_logger, redact, setup_logging, writes_stderr
from analytics_refresh.model.outcome import Hooks, RunFacts, RunResult, decide
from analytics_refresh.model.stop import StopRequest

log = get_logger()


@dataclass(frozen=True)
class Command:
    """A command: what it does, and whether it is a run (logged and monitored)."""

    function: Callable[..., int]
    run: bool = False  # a refresh run: logs to the file, pings the heartbeat, writes metrics
    logs: bool = False  # errors also go to the log file
    configure: Callable[[Settings, object], Settings] = field(default=lambda s, _args: s)
    # Shows settings that could not be read the command's own way (the checklist's line).
    explain: Callable[[ConfigError], None] | None = None


class Process:
    """One command's process: its settings, deadline, stop request and monitors."""

    def __init__(self, started: float):
        self.command = Command(lambda *_: 0)  # until the command line is parsed
        self.started = started
        self.environ: Mapping[str, str] = {}
        self.settings: Settings | None = None
        self.stop = StopRequest()
        self.heartbeat: Heartbeat | None = None
        self.tail: LogTail | None = None
        self.run_id: str | None = None
        self.result: RunResult | None = None
        self.error: BaseException | None = None  # what ended the command, if it raised
        self.logging_ready = False  # this command's own logging is set up
        self._tail_attached = contextlib.ExitStack()

    # -- what a run command uses ------------------------------------------------------------
    def deadline(self, settings: Settings) -> Deadline:
        """The run's deadline, counted from the process start."""
        return Deadline(settings.deadline, started=self.started)

    def hooks(self, on_job_done=None) -> Hooks:
        def started(run_id: str) -> None:
            self.run_id = run_id
            if self.heartbeat is not None:
                self.heartbeat.start(run_id)

        return Hooks(on_started=started, on_job_done=on_job_done)

    def monitor(self, url: str | None, secrets: tuple[str, ...], *, attach: bool = True) -> None:
        """Set up what watches a run: the heartbeat (when ``url``) and the log tail it sends
        (``attach``: fed by the log; else by the caller)."""
        if url:
            self.heartbeat = Heartbeat(url)
        if attach:
            self.tail = self._tail_attached.enter_context(LogTail.attached(secrets))
        else:
            self.tail = LogTail(secrets)

    # -- the way out ------------------------------------------------------------------------
    def report(self, exc: BaseException, code: int) -> None:
        """Say what went wrong: the log (file included), stderr, and the heartbeat's body."""
        secrets = self.settings.secrets if self.settings else raw_secrets(self.environ)
        text = str(exc) or type(exc).__name__
        if isinstance(exc, RefreshError) and exc.hint:
            text = f"{exc.message} (fix: {exc.hint})"
        message = redact(text, secrets)
        if isinstance(exc, KeyboardInterrupt):
            message = "interrupted"
        if isinstance(exc, ConfigError) and self.command.explain is not None:
            with contextlib.suppress(Exception):
                self.command.explain(exc)
        if self.command.logs and not self.logging_ready:
            # Also when an earlier command in this process set logging up: this error
            # belongs in this command's LOG_DIR.
            self._fallback_logging()
            if self.settings is None:
                # The settings never got as far as warning of a misspelt variable, which
                # may well be the cause of this very error.
                _warn(unknown_variables(self.environ), self.logging_ready)
        if isinstance(exc, LockHeld):
            log.warning("%s (exit %d)", message, code)
        elif self.logging_ready or self.tail is not None:
            log.error("❌ %s (exit %d): %s", type(exc).__name__, code, message)
        if not (self.logging_ready and writes_stderr()):
            with contextlib.suppress(Exception):  # a closed stderr cannot be written to
                sys.stderr.write(f"analytics-refresh: {message}\n")
        if self.command.run and self.heartbeat is None and self.settings is None:
            url = partial(self.environ, "HEALTHCHECK_URL")
            if url:
                self.monitor(url, raw_secrets(self.environ), attach=False)
                for warning in unknown_variables(self.environ):
                    self.tail.lines.append(f"warning: {warning}")
                self.tail.lines.append(f"error (exit {code}): {message}")

    def _fallback_logging(self) -> None:
        """Log to the configured file even when the settings as a whole are invalid."""
        fallback = Settings(
            log_dir=partial(self.environ, "LOG_DIR", Path("logs")),
            journal=bool(self.environ.get("JOURNAL_STREAM")),
        )
        with contextlib.suppress(Exception):
            setup_logging(fallback)
            self.logging_ready = True

    def _ending(self, code: int):
        """How a run that left no result ended, by the code it exits with."""
        note = None if self.error is None else type(self.error).__name__
        return decide(RunFacts(error_code=code, error_note=note))

    def finish(self, code: int) -> None:
        """Publish the run's metrics and tell the heartbeat the exit code; never raise."""
        settings = self.settings
        try:
            if self.command.run and settings is not None and not settings.dry_run:
                result = self.result or RunResult.ended(self.run_id, self._ending(code))
                if not result.finished_at:
                    result.started_at = time.time() - (time.monotonic() - self.started)
                    result.finished_at = time.time()
                # A run that found the lock taken did nothing: the holder's metrics stay.
                if code != LockHeld.exit_code:
                    from analytics_refresh.ops.metrics import publish

                    publish(settings, result)
            if self.heartbeat is not None:
                body = self.tail.text() if self.tail is not None else ""
                if self.result is not None and self.result.change_error:
                    # First, so that a long log's tail cannot push it out of the ping.
                    error = redact(self.result.change_error, settings.secrets if settings else ())
                    body = (
                        f"warning: the change query failed ({error}): this run refreshed "
                        f"every job\n{body}"
                    )
                self.heartbeat.finish(code, body, self.run_id)
        except Exception as exc:  # monitoring never changes the outcome
            log.warning("⚠️ Monitoring failed at the end of the run: %s", type(exc).__name__)
        finally:
            self._tail_attached.close()


def run_command(
    parse: Callable[[], tuple[Command, object]], environ: Mapping[str, str] | None = None
) -> int:
    """Parse the command line, run its command and return the process's exit code.

    ``parse`` returns the command and its parsed arguments; a usage error it raises is
    reported like any other (exit 2), ``--help`` and ``--version`` exit 0.
    """
    proc = Process(time.monotonic())
    code = 1
    _safe_console()
    try:
        command, args = parse()
        proc.command = command
        # Until .env is read: a .env that cannot be read is reported with the log folder
        # and heartbeat of the environment the process was started with.
        proc.environ = given_environment(environ)
        proc.environ = load_environment(environ)
        proc.settings = command.configure(Settings.from_env(proc.environ), args)
        if command.logs:
            setup_logging(proc.settings)
            proc.logging_ready = True
        _warn(proc.settings.warnings, proc.logging_ready)
        if command.run and not proc.settings.dry_run:
            proc.monitor(proc.settings.healthcheck_url, proc.settings.secrets)
        code = command.function(args, proc.settings, proc)
    except SystemExit as exc:  # --help or --version: argparse has printed it
        code = exit_code(exc)
    except BaseException as exc:  # every way out gets its code, a report and a ping
        proc.error = exc
        code = exit_code(exc)
        proc.report(exc, code)
    finally:
        proc.finish(code)
    return code


def _safe_console() -> None:
    """Print ✓ and emoji as escapes on a console that cannot encode them (a redirected
    console on Windows is cp1252) rather than crash a status check or lose a log line."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if stream is not None and encoding != "utf8" and hasattr(stream, "reconfigure"):
            with contextlib.suppress(Exception):
                stream.reconfigure(errors="backslashreplace")


def _warn(warnings: tuple[str, ...], logged: bool) -> None:
    """Say each warning on stderr and, when this command logs, in its log."""
    for warning in warnings:
        if logged:
            log.warning("⚠️ %s", warning)
        if not (logged and writes_stderr()):
            with contextlib.suppress(Exception):
                sys.stderr.write(f"analytics-refresh: warning: {warning}\n")


@contextlib.contextmanager
def handle_signals(stop: StopRequest):
    """Turn SIGTERM, SIGINT and SIGHUP (SIGBREAK on Windows) into a clean stop; a second
    signal exits at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    names = [n for n in ("SIGTERM", "SIGINT", "SIGHUP", "SIGBREAK") if hasattr(signal, n)]

    def on_signal(signum, _frame):
        name = signal.Signals(signum).name
        if stop.is_set() and (stop.reason or "").startswith("received "):
            log.error("Received %s again: exiting now; the next run marks this one abandoned", name)
            logging.shutdown()
            forced = RunFacts(stop_reason=f"received {name} again", cut_short=True)
            os._exit(decide(forced).exit_code)
        log.warning("Received %s: no new job starts; jobs in flight finish", name)
        stop.request(f"received {name}")

    previous = {n: signal.signal(getattr(signal, n), on_signal) for n in names}
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)
