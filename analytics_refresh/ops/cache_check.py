"""Whether each refreshed cache row was rewritten by the run (the manual run's last check).

A cache row counts as verified when ``"<client_id>_cached_responses"`` holds a row of the
job's platform computed at or after the run started (by the earlier of the database's and
this host's clock).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from psycopg2.sql import SQL, Identifier
from rich.text import Text

from analytics_refresh.config.settings import Settings
from analytics_refresh.errors import first_line
from analytics_refresh.model.outcome import RunResult
from analytics_refresh.store import db
from analytics_refresh.store import statements as sql


@dataclass(frozen=True)
class CacheCheck:
    """Whether a job's cache row was rewritten by this run."""

    state: str  # verified | stale | no_table | error
    detail: str = ""


def verify(settings: Settings, result: RunResult) -> dict[tuple[str, str], CacheCheck]:
    """Check the cache row of every successful job against the run's start."""
    done = [r for r in result.records if r.status == "succeeded"]
    if not done or result.run_id is None:
        return {}
    by_client: dict[str, list[str]] = {}
    for record in done:
        by_client.setdefault(record.job.client_id, []).append(record.job.platform)
    checks: dict[tuple[str, str], CacheCheck] = {}
    with db.connection(db.database_url(settings)) as conn, conn.cursor() as cur:
        cur.execute(sql.RUN_STARTED, (result.run_id,))
        # The earlier of the database's and this host's clock: the API stamps rows with
        # its own clock, and a skew of seconds must not make a fresh row look old.
        since = min(cur.fetchone()[0], datetime.fromtimestamp(result.started_at, timezone.utc))
        for client_id, platforms in by_client.items():
            for platform, check in cache_checks(cur, client_id, platforms, since).items():
                checks[(client_id, platform)] = check
    return checks


def cache_checks(cur, client_id: str, platforms: list[str], since: datetime) -> dict:
    """Return {platform: CacheCheck}: has a row of each platform been computed since ``since``?"""
    table = Identifier(f"{client_id}_cached_responses")
    cur.execute(sql.TABLE_EXISTS, (table.as_string(cur),))
    if not cur.fetchone()[0]:
        return dict.fromkeys(platforms, CacheCheck("no_table", "no cache table"))
    try:
        query = SQL(sql.NEWEST_CACHE_ROWS).format(table=table)
        cur.execute(query, {"since": since, "platforms": platforms})
        rows = {platform: (fresh, newest) for platform, fresh, newest in cur.fetchall()}
    except Exception as exc:  # a cache table of another shape: say so, check the rest
        reason = first_line(exc)
        return dict.fromkeys(platforms, CacheCheck("error", f"cannot read: {reason}"))
    checks = {}
    for platform in platforms:
        fresh, newest = rows.get(platform, (None, None))
        if fresh is not None:
            checks[platform] = CacheCheck("verified", f"{fresh.astimezone():%H:%M:%S}")
        elif newest is None:
            checks[platform] = CacheCheck("stale", f"no {platform} row")
        else:
            checks[platform] = CacheCheck("stale", f"newest {newest.astimezone():%Y-%m-%d %H:%M}")
    return checks


def cache_text(check: CacheCheck | None) -> Text:
    if check is None:
        return Text("-")
    if check.state == "verified":
        return Text(f"✓ {check.detail}", style="green")
    if check.state == "stale":
        return Text(f"✗ {check.detail}", style="red")
    return Text(check.detail, style="yellow")
