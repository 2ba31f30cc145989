"""What ``status`` shows of the listeners: the live ones and the keys still pending."""

from __future__ import annotations

from .. import db
from ..key_claims import LEASE_SECONDS
from . import pending as pending_keys
from . import queries as sql

TABLES = ("refresh_requests", "refresh_claims", "refresh_listeners")


def read(conn, platforms) -> dict | None:
    """Return the live listeners and the pending keys, or None without the listener tables."""
    if db.missing_tables(conn, TABLES):
        return None
    with conn.cursor() as cur:
        cur.execute(sql.LIVE_LISTENERS, (LEASE_SECONDS,))
        listeners = [
            {
                "listener_id": row[0],
                "host": row[1],
                "pid": row[2],
                "mode": row[3],
                "refreshes": row[4],
                "started_at": row[5],
                "heartbeat_age_seconds": round(row[6], 1),
            }
            for row in cur.fetchall()
        ]
    found = pending_keys.read(conn, platforms)
    oldest = max((p.waiting_for for p in found), default=0.0)
    return {
        "listeners": listeners,
        "pending_keys": len(found),
        "oldest_pending_seconds": round(oldest, 1),
    }


def describe(overview: dict | None) -> list[str]:
    """Return the lines ``status`` prints for ``overview``."""
    if overview is None:
        return []
    live = overview["listeners"]
    lines = [f"Listeners: {len(live)} live" + ("" if live else " (none is running)")]
    for item in live:
        lines.append(
            f"  {item['host']} pid {item['pid']}: {item['mode']}, "
            f"{item['refreshes']} refreshes, heartbeat {item['heartbeat_age_seconds']:.0f}s ago"
        )
    pending = overview["pending_keys"]
    oldest = overview["oldest_pending_seconds"]
    lines.append(
        f"Pending keys: {pending}" + (f" (oldest change waiting {oldest:.0f}s)" if pending else "")
    )
    return lines
