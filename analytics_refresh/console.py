"""Terminal rendering with rich: the status tables and the preflight checklist.

Only the commands a person reads (``status``, ``check``, the manual run, the demo) import
this; a scheduled run never does.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .logs import redact

# Without a terminal there is no width to fit: keep rows whole for files and CI logs.
PLAIN_WIDTH = 200
OUTCOME_STYLES = {"succeeded": "green", "running": "cyan", "skipped": "yellow"}
MARKS = {"ok": ("✓", "green"), "warn": ("⚠", "yellow"), "fail": ("✗", "red"), "skip": ("-", "dim")}


def output_console() -> Console:
    """Return a console on stdout: colours on a terminal, plain wide lines otherwise."""
    # A process started without stdout still runs; what it prints goes nowhere.
    stream = sys.stdout if sys.stdout is not None else open(os.devnull, "w")  # noqa: SIM115
    console = Console(highlight=False, file=stream)
    if not console.is_terminal:
        console.width = PLAIN_WIDTH
    return console


def format_age(seconds: float | None) -> str:
    """Return an age like ``45s``, ``12m``, ``2h 05m`` or ``3d 04h``."""
    if seconds is None:
        return "never"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def local_time(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


# -- status -----------------------------------------------------------------------------------
def _jobs_text(run: dict) -> str:
    parts = [f"{run['jobs_succeeded']} ok"]
    for key, label in (
        ("jobs_failed", "failed"),
        ("jobs_skipped", "skipped"),
        ("jobs_not_attempted", "not attempted"),
    ):
        if run[key]:
            parts.append(f"{run[key]} {label}")
    return f"{run['jobs_total']}: " + ", ".join(parts)


def print_status(console: Console, report, rows=None) -> None:
    """Print a ``status.Report``: recent runs, the keys' counts, the worst keys, the verdict.

    ``rows``: the keys to list one by one (streamed) instead of the worst few.
    """
    console.print("Recent runs (newest first)", style="bold")
    if not report.runs:
        console.print("  no run recorded yet")
    else:
        table = Table(box=box.SIMPLE, pad_edge=False)
        for name in ("started", "trigger", "duration", "outcome", "jobs", "host"):
            table.add_column(name)
        for run in report.runs:
            code = "" if run["exit_code"] is None else f" (exit {run['exit_code']})"
            outcome = Text(f"{run['status']}{code}", style=OUTCOME_STYLES.get(run["status"], "red"))
            host = run["host"] + (f" shard {run['shard']}" if run["shard"] else "")
            table.add_row(
                local_time(run["started_at"]),
                run["trigger"],
                f"{run['duration_seconds']:.1f}s",
                outcome,
                _jobs_text(run),
                host,
            )
        console.print(table)
    if report.total:
        _print_counts(console, report)
    _print_keys(console, report, rows)
    _print_streaks(console, report)
    _print_verdict(console, report)


def _print_counts(console: Console, report) -> None:
    now = report.now
    table = Table(box=box.SIMPLE, pad_edge=False)
    for name in ("platform", "keys", "stale", "never", "failing", "failing 3+", "oldest"):
        table.add_column(name, justify="left" if name == "platform" else "right")
    for p in report.summary.platforms.values():
        if not p.keys:
            continue
        oldest = "never" if p.never else format_age((now - p.oldest_current_at).total_seconds())
        table.add_row(
            p.platform,
            f"{p.keys:,}",
            f"{p.stale:,}",
            f"{p.never:,}",
            f"{p.failing:,}",
            f"{p.failing_repeatedly:,}",
            oldest,
        )
    console.print(table)


def _mark(row) -> Text:
    if row.stale:
        return Text("✗ stale", style="red")
    if row.failing:
        return Text("✗ failed", style="red")
    return Text("✓", style="green")


def _attempt(row) -> str:
    if not row.failing:
        return ""
    streak = row.consecutive_failures
    runs = f" ({streak} runs in a row)" if streak > 1 else ""
    return f"failed{runs}: {row.last_error or ''}"


def _cells(row, changes: bool) -> list:
    cells = [_mark(row), row.client_id, row.platform, local_time(row.last_success_at)]
    cells.append(format_age(row.age_seconds))
    if changes:
        cells.append(
            format_age(row.changed_seconds) + " ago" if row.changed_seconds is not None else "-"
        )
    attempt = _attempt(row)
    cells.append(Text(attempt, style="red") if attempt else "")
    return cells


def _print_keys(console: Console, report, rows) -> None:
    hours = report.max_age_hours
    listed = "every" if rows is not None else "the stalest"
    console.print(
        f"Cache age per client × platform, {listed} first (stale = older than {hours:g} h)",
        style="bold",
    )
    if not report.total:
        console.print(
            "  ⚠ no connected client: client_api_credentials has no row with status = 'connected'",
            style="yellow",
        )
        return
    if rows is not None:
        # Streamed: one line a key, never a table of them all in memory.
        shown = 0
        for row in rows:
            line = Text("  ")
            for cell in _cells(row, changes=False):
                line.append(cell if isinstance(cell, Text) else Text(str(cell)))
                line.append("  ")
            console.print(line, soft_wrap=True)
            shown += 1
        console.print(f"  {shown:,} listed")
        return
    worst = report.summary.worst
    changes = any(r.changed_at is not None for r in worst)
    table = Table(box=box.SIMPLE, pad_edge=False)
    columns = ["", "client", "platform", "last success", "age"]
    columns += ["data changed"] if changes else []
    for name in (*columns, "last attempt"):
        table.add_column(name)
    for row in worst:
        table.add_row(*_cells(row, changes))
    console.print(table)
    if report.total > len(worst):
        console.print(
            f"  ... {report.total - len(worst):,} more not shown "
            "(--keys lists them all, --stale-only the stale ones)"
        )


def _print_streaks(console: Console, report) -> None:
    streaks, count = report.summary.streaks, report.count("failing_repeatedly")
    if not count:
        return
    console.print(f"Failing run after run ({count:,} client × platforms)", style="bold red")
    for row in streaks:
        console.print(
            f"  ✗ {row.client_id} ({row.platform}): failed {row.consecutive_failures} "
            f"runs in a row, last: {row.last_error or '?'}",
            style="red",
            soft_wrap=True,
        )
    if count > len(streaks):
        console.print(f"  ... {count - len(streaks):,} more (--json --keys lists every key)")


def _print_verdict(console: Console, report) -> None:
    hours, total = report.max_age_hours, report.total
    stale, failing = report.count("stale"), report.count("failing")
    if failing:
        console.print(
            f"✗ {failing} of {total} client × platforms failed their last refresh",
            style="red",
            soft_wrap=True,
        )
    if stale:
        never = report.count("never")
        console.print(
            f"✗ {stale} of {total} client × platforms are older than {hours:g} h "
            f"({never} never refreshed): exit 1",
            style="red",
            soft_wrap=True,
        )
    elif not failing:
        console.print(
            f"✓ all {total} client × platforms are fresher than {hours:g} h: exit 0",
            style="green",
            soft_wrap=True,
        )
    else:
        console.print(
            f"all {total} client × platforms are still fresher than {hours:g} h: exit 0",
            style="yellow",
            soft_wrap=True,
        )


# -- the preflight checklist ------------------------------------------------------------------
def print_check(console: Console, result, secrets: tuple[str, ...] = ()) -> None:
    """Print one ``check.Result`` line, and its fix on a failure or warning."""
    mark, style = MARKS[result.state]
    line = Text(f"  {mark} ", style=style)
    line.append(result.name, style="bold")
    line.append(f": {redact(result.detail, secrets)}")
    console.print(line, soft_wrap=True)
    if result.fix and result.state in ("fail", "warn"):
        console.print(Text(f"      fix: {result.fix}", style=style), soft_wrap=True)


def print_check_summary(console: Console, results, exit_code: int) -> None:
    failed = [r for r in results if r.state == "fail"]
    warned = [r for r in results if r.state == "warn"]
    if failed:
        console.print(
            f"✗ {len(failed)} of {len(results)} checks failed; exit {exit_code} "
            f"(first failure: {failed[0].name})",
            style="red",
            soft_wrap=True,
        )
        return
    extra = f" with {len(warned)} warning{'s' if len(warned) > 1 else ''}" if warned else ""
    console.print(
        f"✓ all {len(results)} checks passed{extra}",
        style="yellow" if warned else "green",
        soft_wrap=True,
    )
