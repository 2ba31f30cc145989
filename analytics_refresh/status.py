"""``analytics-refresh status``: recent runs and the age of every client's cache.

The age of a client x platform is the time since its last successful refresh in
``refresh_jobs``. Which client x platforms should exist follows the run's own planning rules
(plan.py), so a connected client that was never refreshed shows up, as stale. Exit 0 when
every one is fresher than ``--max-age``, else 1: a monitoring check and the Docker
``HEALTHCHECK`` in one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import db
from .errors import DatabaseError
from .plan import SOURCE_PLATFORMS, Job, build_plan, stream_connected, valid_client_id
from .settings import PLATFORMS, Settings

# Human output stops here; --json always holds every row.
SHOWN_ROWS = 50
# Without a terminal there is no width to fit: keep rows whole for files and CI logs.
PLAIN_WIDTH = 200

RECENT_RUNS = """
    SELECT run_id::text, trigger, host, shard, started_at, finished_at, status, exit_code,
           jobs_total, jobs_succeeded, jobs_failed, jobs_not_attempted, jobs_skipped, note
    FROM refresh_runs
    ORDER BY started_at DESC
    LIMIT %s
"""

LAST_SUCCESSES = """
    SELECT DISTINCT ON (client_id, platform) client_id::text, platform, finished_at
    FROM refresh_jobs
    WHERE status = 'succeeded'
    ORDER BY client_id, platform, finished_at DESC
"""

# The newest attempt that ended (succeeded or failed): says why a stale cache is stale.
LAST_OUTCOMES = """
    SELECT DISTINCT ON (client_id, platform) client_id::text, platform, status, error
    FROM refresh_jobs
    WHERE status IN ('succeeded', 'failed') AND finished_at IS NOT NULL
    ORDER BY client_id, platform, finished_at DESC
"""


@dataclass(frozen=True)
class Freshness:
    """How old one client x platform's cache is."""

    client_id: str
    platform: str
    last_success: datetime | None
    age_seconds: float | None  # None: never refreshed
    last_status: str | None = None
    last_error: str | None = None

    def is_stale(self, max_age_seconds: float) -> bool:
        return self.age_seconds is None or self.age_seconds > max_age_seconds


def _trusted(rows: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """Drop the credential rows build_plan would reject, without logging them again."""
    seen: set[tuple[str, str]] = set()
    for raw_client, platform in rows:
        client_id = valid_client_id(raw_client)
        if client_id is None or platform not in SOURCE_PLATFORMS:
            continue
        if (client_id, platform) not in seen:
            seen.add((client_id, platform))
            yield client_id, platform


def expected_jobs(conn, settings: Settings) -> list[Job]:
    """Return the jobs a run would plan now (every client; the shard and platforms apply)."""
    if db.missing_tables(conn, ("client_api_credentials",)):
        raise DatabaseError(
            "table client_api_credentials is missing: there is no list of connected clients",
            hint="point DATABASE_URL at the application's database, or create the table "
            "with `analytics-refresh db init --with-api-schema`",
        )
    plan = build_plan(_trusted(stream_connected(conn)), settings.replace(clients=()))
    return list(dict.fromkeys(plan.jobs))


def freshness(conn, settings: Settings, *, with_outcomes: bool = False) -> list[Freshness]:
    """Return the age of every expected client x platform, stalest (never refreshed) first."""
    jobs = expected_jobs(conn, settings)
    with conn.cursor() as cur:
        cur.execute("SELECT now()")
        now = cur.fetchone()[0]
        cur.execute(LAST_SUCCESSES)
        successes = {(c, p): f for c, p, f in cur}
        outcomes: dict[tuple[str, str], tuple[str, str | None]] = {}
        if with_outcomes:
            cur.execute(LAST_OUTCOMES)
            outcomes = {(c, p): (s, e) for c, p, s, e in cur}
    rows = []
    for job in jobs:
        key = (job.client_id, job.platform)
        last = successes.get(key)
        status, error = outcomes.get(key, (None, None))
        age = None if last is None else max(0.0, (now - last).total_seconds())
        rows.append(Freshness(job.client_id, job.platform, last, age, status, error))
    rows.sort(key=lambda r: (-(math.inf if r.age_seconds is None else r.age_seconds), *_key(r)))
    return rows


def _key(row: Freshness) -> tuple[str, int]:
    return row.client_id, PLATFORMS.index(row.platform)


def recent_runs(conn, limit: int) -> tuple[datetime, list[dict]]:
    """Return the database's clock and the newest ``limit`` runs as dicts."""
    with conn.cursor() as cur:
        cur.execute("SELECT now()")
        now = cur.fetchone()[0]
        cur.execute(RECENT_RUNS, (limit,))
        names = [c.name for c in cur.description]
        runs = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    for run in runs:
        end = run["finished_at"] or now
        run["duration_seconds"] = round((end - run["started_at"]).total_seconds(), 3)
    return now, runs


def show_status(settings: Settings, as_json: bool, max_age_hours: float, runs: int) -> int:
    """Print recent runs and cache ages; return 0 when all are fresh, else 1."""
    url = db.database_url(settings)
    with db.connection(url) as conn:
        db.require_runner_tables(conn)
        now, recent = recent_runs(conn, runs)
        rows = freshness(conn, settings, with_outcomes=True)
    max_age = max_age_hours * 3600
    stale = [r for r in rows if r.is_stale(max_age)]
    if as_json:
        print(json.dumps(_as_json(now, recent, rows, stale, max_age_hours), indent=2))
    else:
        _print_human(output_console(), recent, rows, stale, max_age_hours)
    return 1 if stale else 0


# -- output ---------------------------------------------------------------------------------
def output_console() -> Console:
    """Return a console on stdout: colours on a terminal, plain wide lines otherwise."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = PLAIN_WIDTH
    return console


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(timezone.utc).isoformat()


def _as_json(now, recent, rows, stale, max_age_hours) -> dict:
    return {
        "now": _iso(now),
        "max_age_hours": max_age_hours,
        "healthy": not stale,
        "total": len(rows),
        "stale_count": len(stale),
        "never_refreshed_count": sum(1 for r in rows if r.last_success is None),
        "runs": [
            {
                "run_id": run["run_id"],
                "trigger": run["trigger"],
                "host": run["host"],
                "shard": run["shard"] or None,
                "started_at": _iso(run["started_at"]),
                "finished_at": _iso(run["finished_at"]),
                "duration_seconds": run["duration_seconds"],
                "status": run["status"],
                "exit_code": run["exit_code"],
                "jobs": {
                    "total": run["jobs_total"],
                    "succeeded": run["jobs_succeeded"],
                    "failed": run["jobs_failed"],
                    "not_attempted": run["jobs_not_attempted"],
                    "skipped": run["jobs_skipped"],
                },
                "note": run["note"],
            }
            for run in recent
        ],
        "caches": [
            {
                "client_id": r.client_id,
                "platform": r.platform,
                "last_success_at": _iso(r.last_success),
                "age_hours": None if r.age_seconds is None else round(r.age_seconds / 3600, 4),
                "stale": r.is_stale(max_age_hours * 3600),
                "last_status": r.last_status,
                "last_error": r.last_error,
            }
            for r in rows
        ],
    }


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


def _local(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


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


OUTCOME_STYLES = {"succeeded": "green", "running": "cyan", "skipped": "yellow"}


def _print_human(console: Console, recent, rows, stale, max_age_hours) -> None:
    console.print("Recent runs (newest first)", style="bold")
    if not recent:
        console.print("  no run recorded yet")
    else:
        table = Table(box=box.SIMPLE, pad_edge=False)
        for name in ("started", "trigger", "duration", "outcome", "jobs", "host"):
            table.add_column(name)
        for run in recent:
            code = "" if run["exit_code"] is None else f" (exit {run['exit_code']})"
            outcome = Text(f"{run['status']}{code}", style=OUTCOME_STYLES.get(run["status"], "red"))
            host = run["host"] + (f" shard {run['shard']}" if run["shard"] else "")
            table.add_row(
                _local(run["started_at"]),
                run["trigger"],
                f"{run['duration_seconds']:.1f}s",
                outcome,
                _jobs_text(run),
                host,
            )
        console.print(table)

    console.print(
        f"Cache age per client × platform (stalest first; stale = older than {max_age_hours:g} h)",
        style="bold",
    )
    if not rows:
        console.print(
            "  ⚠ no connected client: client_api_credentials has no row with status = 'connected'",
            style="yellow",
        )
    else:
        table = Table(box=box.SIMPLE, pad_edge=False)
        for name in ("", "client", "platform", "last success", "age", "last failure"):
            table.add_column(name)
        for row in rows[:SHOWN_ROWS]:
            is_stale = row.is_stale(max_age_hours * 3600)
            failure = row.last_error if row.last_status == "failed" else ""
            table.add_row(
                Text("✗ stale", style="red") if is_stale else Text("✓", style="green"),
                row.client_id,
                row.platform,
                _local(row.last_success),
                format_age(row.age_seconds),
                failure or "",
            )
        console.print(table)
        if len(rows) > SHOWN_ROWS:
            console.print(f"  ... {len(rows) - SHOWN_ROWS} more not shown (--json lists all)")
    never = sum(1 for r in stale if r.last_success is None)
    if stale:
        console.print(
            f"✗ {len(stale)} of {len(rows)} client × platforms are older than "
            f"{max_age_hours:g} h ({never} never refreshed): exit 1",
            style="red",
            soft_wrap=True,
        )
    else:
        console.print(
            f"✓ all {len(rows)} client × platforms are fresher than {max_age_hours:g} h: exit 0",
            style="green",
            soft_wrap=True,
        )
