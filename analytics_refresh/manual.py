"""The manual run (``test_analytics_refresh_now.py``): refresh now and show that it worked.

Preflight checklist, then a real run through the same code as cron (trigger ``manual``,
heartbeat and metrics included) with a progress bar on a terminal and the log's plain lines
otherwise, then a check of each refreshed cache row (cache_check.py), then a summary table.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .cache_check import cache_text, verify
from .check import ENDPOINT, Preflight, invalid_settings
from .console import output_console, print_check, print_check_summary
from .errors import ConfigError
from .logs import LOGGER_NAME, PlainFormatter, RedactFilter, setup_logging
from .options import Parser, add_run_options, apply_run_options
from .outcome import JobRecord, RunResult, decide
from .process import Command, Process, handle_signals, run_command
from .runner import execute_run
from .settings import PLATFORMS, Settings

# Past this many jobs the summary lists the problems first and leaves out good rows.
SUMMARY_ROWS = 200
STATUS_STYLES = {"succeeded": "green", "skipped": "dim"}
LEVEL_STYLES = {logging.WARNING: "yellow", logging.ERROR: "red", logging.CRITICAL: "red"}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="test_analytics_refresh_now.py",
        description="Refresh every dashboard now, as cron does (trigger manual): preflight "
        "checklist, the run with its progress, a check of each refreshed cache row, a summary.",
        epilog="exit codes as `analytics-refresh run`; also 1 when a job succeeded but its "
        "cache row was not rewritten",
    )
    parser.add_argument(
        "--preflight-only", action="store_true", help="run the checklist only, refresh nothing"
    )
    add_run_options(parser)
    return parser


def main(argv=None, environ=None) -> int:
    """Run the manual refresh and return its exit code."""

    def parse():
        args = build_parser().parse_args(argv)
        return MANUAL, args

    return run_command(parse, environ)


def _configure(settings: Settings, args) -> Settings:
    settings = apply_run_options(settings, args)
    # A person started it: not a scheduled run, even when its input is not a terminal.
    return settings if args.trigger else settings.replace(trigger="manual", scheduled=False)


def _run(args, settings: Settings, proc: Process) -> int:
    if args.preflight_only:  # refreshes nothing: no ping, no metrics
        proc.command, proc.heartbeat = Command(_run, logs=True), None
    return ManualRun(settings, output_console(), proc).run(preflight_only=args.preflight_only)


def _explain(exc: ConfigError) -> None:
    """Show settings that could not be read as the checklist's first line."""
    console = output_console()
    console.print("Preflight checks", style="bold")
    print_check(console, invalid_settings(exc))


MANUAL = Command(_run, run=True, logs=True, configure=_configure, explain=_explain)


class ManualRun:
    """One manual run, printed to ``console``."""

    def __init__(self, settings: Settings, console: Console, proc: Process):
        self.settings = settings
        self.console = console
        self.proc = proc

    def run(self, *, preflight_only: bool = False) -> int:
        self.console.print("Preflight checks", style="bold")
        secrets = self.settings.secrets
        preflight = Preflight(self.settings, lambda r: print_check(self.console, r, secrets))
        code = preflight.run()
        print_check_summary(self.console, preflight.results, code)
        if preflight_only:
            return code
        # A read refused for the first client says little about the others: the run goes
        # on and its summary shows every job. Anything else would fail every job.
        blocking = [r for r in preflight.results if r.state == "fail" and r.name != ENDPOINT]
        if blocking:
            self.console.print("Nothing was refreshed: fix the line marked ✗, then run again.")
            return code
        if code:
            self.console.print("The first client's read failed; the run shows every job.")
        self.console.print(
            f"\nRefresh run (trigger {self.settings.trigger}; log: {self.settings.log_file})",
            style="bold",
            soft_wrap=True,
        )
        # A held lock (LockHeld, exit 5) is said once, by process.execute, on stderr and in
        # the log: a line of its own here would say it twice.
        result = self.refresh(len(preflight.jobs))
        if self.settings.dry_run:
            self.console.print(f"Dry run: {result.counts['planned']} jobs planned, none called.")
            return result.exit_code
        checks = verify(self.settings, result)
        self.summary(result, checks)
        return self.conclude(result, checks)

    # -- the run ----------------------------------------------------------------------------
    def refresh(self, planned: int) -> RunResult:
        setup_logging(self.settings, interactive=False)
        logger = logging.getLogger(LOGGER_NAME)
        echo = None
        if self.settings.log_format == "text":  # json already goes to stdout
            # Under a progress bar the bar counts the successes; the rest still shows.
            echo = ConsoleLog(
                self.console, self.settings.secrets, quiet_successes=self.console.is_terminal
            )
            logger.addHandler(echo)
        progress = None
        if self.console.is_terminal and not self.settings.dry_run:
            progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
            )
        task = progress.add_task("Refreshing", total=planned or None) if progress else None

        def job_done(record: JobRecord) -> None:
            if progress is None:
                return
            progress.advance(task)  # thread-safe: jobs end on worker threads
            state = progress.tasks[0]
            if state.total is not None and state.completed > state.total:
                progress.update(task, total=state.completed)  # clients added since preflight

        proc = self.proc
        try:
            with handle_signals(proc.stop), progress or contextlib.nullcontext():
                proc.result = execute_run(
                    self.settings,
                    deadline=proc.deadline(self.settings),
                    stop=proc.stop,
                    hooks=proc.hooks(on_job_done=job_done),
                )
                return proc.result
        finally:
            if echo is not None:
                logger.removeHandler(echo)

    # -- output -----------------------------------------------------------------------------
    def summary(self, result: RunResult, checks: dict) -> None:
        table = Table(title="Summary", title_justify="left", title_style="bold")
        for name, justify in (
            ("job", "left"),
            ("status", "left"),
            ("attempts", "right"),
            ("duration", "right"),
            ("SKUs", "right"),
            ("cache verified", "left"),
        ):
            table.add_column(name, justify=justify)
        order = {p: i for i, p in enumerate(PLATFORMS)}
        records = sorted(
            result.records, key=lambda r: (r.job.client_id, order.get(r.job.platform, 9))
        )
        if len(records) > SUMMARY_ROWS:
            # A big run: every job with a problem, then as many good ones as fit.
            def fine(r: JobRecord) -> bool:
                check = checks.get((r.job.client_id, r.job.platform))
                good = r.status in ("succeeded", "skipped")
                return good and (check is None or check.state != "stale")

            records = sorted(records, key=fine)[:SUMMARY_ROWS]
        for record in records:
            job = record.job
            style = STATUS_STYLES.get(record.status, "red")
            table.add_row(
                str(job),
                Text(record.status, style=style),
                str(record.attempts),
                "-" if record.duration_ms is None else f"{record.duration_ms / 1000:.2f}s",
                "-" if record.sku_count is None else str(record.sku_count),
                cache_text(checks.get((job.client_id, job.platform))),
            )
        self.console.print()
        self.console.print(table)
        if len(result.records) > len(records):
            self.console.print(
                f"  ... {len(result.records) - len(records)} more jobs, none with a problem "
                "(refresh_jobs holds every row)"
            )

    def conclude(self, result: RunResult, checks: dict) -> int:
        stale = [c for c in checks.values() if c.state == "stale"]
        verified = sum(1 for c in checks.values() if c.state == "verified")
        no_table = sum(1 for c in checks.values() if c.state == "no_table")
        code = result.exit_code
        if stale and result.facts is not None:
            code = decide(dataclasses.replace(result.facts, stale_caches=len(stale))).exit_code
        counts = result.counts
        parts = [f"{counts['succeeded']} succeeded", f"{counts['failed']} failed"]
        parts += [
            f"{counts[k]} {k.replace('_', ' ')}" for k in ("skipped", "not_attempted") if counts[k]
        ]
        caches = f"{verified} of {len(checks)} caches verified"
        if no_table:
            caches += f", {no_table} without a cache table"
        self.console.print(
            f"Run {result.run_id}: {result.status} in "
            f"{result.finished_at - result.started_at:.1f}s; {', '.join(parts)}; {caches}; "
            f"exit {code}",
            style="green" if code == 0 else "red",
            soft_wrap=True,
        )
        if stale:
            self.console.print(
                f"✗ {len(stale)} jobs succeeded but their cache row is older than the run: the "
                "API answered without rewriting its cache (see the API's log for the failed "
                "cache write)",
                style="red",
                soft_wrap=True,
            )
        return code


class ConsoleLog(logging.Handler):
    """Prints the run's log lines on the console, above the progress bar when there is one."""

    def __init__(self, console: Console, secrets: tuple[str, ...], *, quiet_successes=False):
        super().__init__()
        self.console = console
        self.quiet_successes = quiet_successes
        self.setFormatter(PlainFormatter())
        self.addFilter(RedactFilter(secrets))

    def emit(self, record: logging.LogRecord) -> None:
        if self.quiet_successes and getattr(record, "status", None) == "succeeded":
            return
        try:
            line = Text(self.format(record), style=LEVEL_STYLES.get(record.levelno, ""))
            self.console.print(line, soft_wrap=True)
        except Exception:
            self.handleError(record)
