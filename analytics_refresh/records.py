"""Reading the record: per-key state and recent runs.

Every per-key question (skip-fresh, ordering, the adaptive limit's yardstick) reads
``refresh_state``, one row per client x platform, so its cost grows with the number of keys
and never with the length of the history; status and the metrics aggregate it in the
database instead (key_freshness.py).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from datetime import datetime

from . import db
from . import statements as sql
from .current import apply_checks
from .outcome import KeyState
from .plan import SOURCE_PLATFORMS, Job, build_plan, stream_connected, valid_client_id
from .settings import Settings

# A key failing this many runs in a row is "failing repeatedly" (status, metrics, alerts).
FAILING_STREAK = 3


Key = tuple[str, str]


# Past this many keys one scan of the table costs less than sending the list.
ALL_STATES_FROM = 20_000


def key_states(conn, jobs: Collection | None = None) -> dict[Key, KeyState]:
    """Return the state of every key (or of the keys of ``jobs``), with when each was checked."""
    with conn.cursor() as cur:
        if jobs is None or len(jobs) > ALL_STATES_FROM:
            cur.execute(sql.KEY_STATES)
        else:
            clients = [job.client_id for job in jobs]
            cur.execute(sql.KEY_STATES_OF, (clients, [job.platform for job in jobs]))
        states = {(row[0], row[1]): KeyState(*row) for row in cur}
    apply_checks(conn, states)
    return states


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
