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

# Human output stops here; --json always holds every row.
SHOWN_ROWS = 50
SHOWN_STREAKS = 20
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


def print_status(console: Console, report) -> None:
    """Print a ``status.Report``: recent runs, every key's age, failures, the verdict."""
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
    _print_keys(console, report)
    _print_streaks(console, report)
    _print_verdict(console, report)


def _print_keys(console: Console, report) -> None:
    hours = report.max_age_hours
    console.print(
        f"Cache age per client × platform (stalest first; stale = older than {hours:g} h)",
        style="bold",
    )
    if not report.keys:
        console.print(
            "  ⚠ no connected client: client_api_credentials has no row with status = 'connected'",
            style="yellow",
        )
        return
    changes = any(r.state.changed_at is not None for r in report.keys)
    table = Table(box=box.SIMPLE, pad_edge=False)
    columns = ["", "client", "platform", "last success", "age"]
    columns += ["data changed"] if changes else []
    for name in (*columns, "last attempt"):
        table.add_column(name)
    # Failing keys first among equals: they are what an operator looks for.
    for row in report.keys[:SHOWN_ROWS]:
        if row.is_stale(hours * 3600):
            mark = Text("✗ stale", style="red")
        elif row.failing:
            mark = Text("✗ failed", style="red")
        else:
            mark = Text("✓", style="green")
        cells = [mark, row.client_id, row.platform, local_time(row.last_success)]
        cells.append(format_age(row.age_seconds))
        if changes:
            cells.append(
                format_age(row.changed_seconds) + " ago" if row.changed_seconds is not None else "-"
            )
        attempt = ""
        if row.failing:
            streak = row.state.consecutive_failures
            runs = f" ({streak} runs in a row)" if streak > 1 else ""
            attempt = f"failed{runs}: {row.state.last_error or ''}"
        cells.append(Text(attempt, style="red") if attempt else "")
        table.add_row(*cells)
    console.print(table)
    if len(report.keys) > SHOWN_ROWS:
        console.print(f"  ... {len(report.keys) - SHOWN_ROWS} more not shown (--json lists all)")


def _print_streaks(console: Console, report) -> None:
    streaks = report.failing_repeatedly
    if not streaks:
        return
    console.print(f"Failing run after run ({len(streaks)} client × platforms)", style="bold red")
    for row in streaks[:SHOWN_STREAKS]:
        console.print(
            f"  ✗ {row.client_id} ({row.platform}): failed {row.state.consecutive_failures} "
            f"runs in a row, last: {row.state.last_error or '?'}",
            style="red",
            soft_wrap=True,
        )
    if len(streaks) > SHOWN_STREAKS:
        console.print(f"  ... {len(streaks) - SHOWN_STREAKS} more (--json lists all)")


def _print_verdict(console: Console, report) -> None:
    hours, total = report.max_age_hours, len(report.keys)
    stale, failing = report.stale, report.failing
    if failing:
        console.print(
            f"✗ {len(failing)} of {total} client × platforms failed their last refresh",
            style="red",
            soft_wrap=True,
        )
    if stale:
        never = sum(1 for r in stale if r.last_success is None)
        console.print(
            f"✗ {len(stale)} of {total} client × platforms are older than {hours:g} h "
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
