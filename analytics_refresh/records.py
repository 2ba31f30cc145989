"""Reading the record: per-key state, recent runs, and which keys should exist.

Every per-key question (status, skip-fresh, ordering, the adaptive limit's yardstick, the
metrics file) reads ``refresh_state``, one row per client x platform, so its cost grows with
the number of keys and never with the length of the history.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from . import db
from . import statements as sql
from .outcome import KeyState
from .plan import SOURCE_PLATFORMS, Job, build_plan, stream_connected, valid_client_id
from .settings import PLATFORMS, Settings

# A key failing this many runs in a row is "failing repeatedly" (status, metrics, alerts).
FAILING_STREAK = 3


Key = tuple[str, str]


def key_states(conn) -> dict[Key, KeyState]:
    """Return the state of every key the record knows."""
    with conn.cursor() as cur:
        cur.execute(sql.KEY_STATES)
        return {(row[0], row[1]): KeyState(*row) for row in cur}


def database_now(conn) -> datetime:
    """Return the database's clock: the clock every recorded time was set by."""
    with conn.cursor() as cur:
        cur.execute(sql.DATABASE_NOW)
        return cur.fetchone()[0]


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
    db.require_credentials_table(conn)
    plan = build_plan(_trusted(stream_connected(conn)), settings.replace(clients=()))
    return list(dict.fromkeys(plan.jobs))


@dataclass(slots=True)
class Freshness:
    """How old one expected client x platform's cache is, and how its last attempt went."""

    state: KeyState
    # Since the cache was last known current (refreshed, or its data confirmed unchanged);
    # None: never refreshed.
    age_seconds: float | None
    changed_seconds: float | None = None  # since its data last changed (change detection)
    current_at: datetime | None = None  # KeyState.current_at, computed once

    @property
    def client_id(self) -> str:
        return self.state.client_id

    @property
    def platform(self) -> str:
        return self.state.platform

    @property
    def last_success(self) -> datetime | None:
        return self.state.last_success_at

    @property
    def failing(self) -> bool:
        return self.state.last_status == "failed"

    @property
    def failing_repeatedly(self) -> bool:
        return self.state.consecutive_failures >= FAILING_STREAK

    def is_stale(self, max_age_seconds: float) -> bool:
        return self.age_seconds is None or self.age_seconds > max_age_seconds


def freshness(conn, settings: Settings) -> tuple[datetime, list[Freshness]]:
    """Return the database's clock and every expected key's freshness, stalest first."""
    jobs = expected_jobs(conn, settings)
    now = database_now(conn)
    states = key_states(conn)
    rows = []
    order = {p: i for i, p in enumerate(PLATFORMS)}
    for job in jobs:
        state = states.get((job.client_id, job.platform)) or KeyState(job.client_id, job.platform)
        current = state.current_at
        rows.append(Freshness(state, _since(now, current), _since(now, state.changed_at), current))
    # Stalest first (never refreshed ahead of all), then by client and platform.
    rows.sort(
        key=lambda r: (
            -(math.inf if r.age_seconds is None else r.age_seconds),
            r.state.client_id,
            order[r.state.platform],
        )
    )
    return now, rows


def _since(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else max(0.0, (now - then).total_seconds())


def recent_runs(conn, limit: int) -> tuple[datetime, list[dict]]:
    """Return the database's clock and the newest ``limit`` runs as dicts."""
    now = database_now(conn)
    with conn.cursor() as cur:
        cur.execute(sql.RECENT_RUNS, (limit,))
        names = [c.name for c in cur.description]
        runs = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    for run in runs:
        end = run["finished_at"] or now
        run["duration_seconds"] = round((end - run["started_at"]).total_seconds(), 3)
    return now, runs


def last_successful_run(conn, shard: str) -> float | None:
    """Return when the last run of ``shard`` in which every job succeeded ended (epoch)."""
    with conn.cursor() as cur:
        cur.execute(sql.LAST_SUCCESSFUL_RUN, (shard,))
        return cur.fetchone()[0]


def credential_statuses(conn) -> str:
    """Return the credential rows counted by status, e.g. ``connected 3, disconnected 1``."""
    with conn.cursor() as cur:
        cur.execute(sql.CREDENTIAL_STATUSES)
        return ", ".join(f"{s} {n}" for s, n in cur.fetchall()) or "the table is empty"
