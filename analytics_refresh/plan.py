"""Which jobs a run does: one per connected client x configured platform.

A client gets a ``shopify`` or ``amazon`` job only where it has a connected credential for
that platform, and an ``all`` job where it has any. Rows that cannot be trusted (a client
id that is not a UUID, an unknown platform, a duplicate) are skipped with an error line;
their values are never placed in SQL text.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from . import statements as sql
from .settings import PLATFORMS, Settings, Shard

log = logging.getLogger(__name__)

SOURCE_PLATFORMS = ("shopify", "amazon")
FETCH_ROWS = 5000


@dataclass(frozen=True, slots=True)
class Job:
    """One refresh: a client's dashboard on one platform."""

    client_id: str
    platform: str

    def __str__(self) -> str:
        return f"{self.client_id} ({self.platform})"


@dataclass
class Plan:
    """The jobs of a run and how they were chosen."""

    platforms: tuple[str, ...]
    client_count: int = 0
    jobs: list[Job] = field(default_factory=list)
    rejected_rows: int = 0
    # Each planned client's connected platforms (its ``all`` dashboard combines them).
    connected: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Ids given with --client that have no connected credential (a typo, a disconnection).
    unknown_clients: list[str] = field(default_factory=list)


def shard_of(client_id: str, count: int) -> int:
    """Return the shard (0-based, of ``count``) that owns ``client_id``, stable everywhere."""
    digest = hashlib.sha256(uuid.UUID(client_id).bytes).digest()
    return int.from_bytes(digest[:8], "big") % count


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def valid_client_id(value: str) -> str | None:
    """Return the canonical form of a UUID client id, or None when it is not one."""
    # The database hands back canonical text: skip the parse for it (300,000 keys a status).
    if isinstance(value, str) and _CANONICAL_UUID.fullmatch(value):
        return value
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        return None


def stream_connected(conn, clients: Iterable[str] = ()) -> Iterator[tuple[str, str]]:
    """Yield (client_id, platform) of every connected credential (or of ``clients``), by client."""
    wanted = [uuid.UUID(c).hex for c in clients if valid_client_id(c) is not None]
    was_autocommit = conn.autocommit
    conn.autocommit = False  # a server-side cursor lives inside a transaction
    try:
        with conn.cursor(name="analytics_refresh_plan") as cur:
            cur.itersize = FETCH_ROWS
            if wanted:
                cur.execute(sql.SELECT_CONNECTED_OF, (wanted,))
            else:
                cur.execute(sql.SELECT_CONNECTED)
            yield from cur
        conn.commit()
    finally:
        if not conn.closed:
            conn.rollback()
            conn.autocommit = was_autocommit


def build_plan(rows: Iterable[tuple[str, str]], settings: Settings) -> Plan:
    """Turn connected credential rows (ordered by client) into the run's jobs."""
    plan = Plan(platforms=settings.platforms)
    wanted_clients = {valid_client_id(c) for c in settings.clients} if settings.clients else None
    shard: Shard | None = settings.shard

    current: str | None = None
    connected: list[str] = []
    finished: set[str] = set()  # 100,000 ids are a few MB; rows are still streamed
    seen_clients: set[str] = set()

    def flush() -> None:
        if current is None or not connected:
            return
        plan.client_count += 1
        plan.connected[current] = tuple(connected)
        for platform in PLATFORMS:
            if platform in settings.platforms and (platform == "all" or platform in connected):
                plan.jobs.append(Job(current, platform))

    for raw_client, raw_platform in rows:
        client_id = valid_client_id(raw_client)
        if client_id is None:
            plan.rejected_rows += 1
            log.error("❌ Skipping credential row: client id %r is not a UUID", raw_client)
            continue
        if raw_platform not in SOURCE_PLATFORMS:
            plan.rejected_rows += 1
            log.error(
                "❌ Skipping credential row for %s: unknown platform %r", client_id, raw_platform
            )
            continue
        if wanted_clients is not None:
            if client_id not in wanted_clients:
                continue
            seen_clients.add(client_id)
        if shard is not None and shard_of(client_id, shard.count) != shard.index:
            continue
        if client_id != current:
            if client_id in finished:
                # Spelled differently (upper case, no hyphens) the same client sorts apart
                # from its other rows: a duplicate, not a second client.
                plan.rejected_rows += 1
                log.error(
                    "❌ Skipping duplicate credential row for %s (%s)", client_id, raw_platform
                )
                continue
            flush()
            if current is not None:
                finished.add(current)
            current, connected = client_id, []
        if raw_platform in connected:
            plan.rejected_rows += 1
            log.error("❌ Skipping duplicate credential row for %s (%s)", client_id, raw_platform)
            continue
        connected.append(raw_platform)
    flush()
    if wanted_clients is not None:
        plan.unknown_clients = [
            c for c in settings.clients if valid_client_id(c) not in seen_clients
        ]
    return plan
