"""Whether each key's copy is current: it exists, has not expired, and matches its data.

A change-aware run writes nothing for a key it finds unchanged; its run row says it read
the change keys of its whole shard (``checked_changes``). So a key was last known current
at its last success, or at the start of the latest finished checking run of its shard that
wrote no row for it, whichever is later, and never past the moment its copy expired. A
key the latest checking run did write a row for, and that has not succeeded since, had a
change (or a due refresh) that is not reflected yet: that run confirms nothing.

``apply_checks`` fills in ``KeyState.verified_at`` and ``KeyState.pending`` this way with
two small reads (the latest checking run per shard label, and the rows of those runs,
which in a quiet run are the few keys it refreshed); ``is_current`` is the predicate that
status, metrics and reports share.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from . import statements as sql
from .plan import shard_of

if TYPE_CHECKING:
    from .outcome import KeyState
    from .records import Key


@dataclass(frozen=True)
class CheckingRun:
    """The latest finished run of one shard label that read its change keys."""

    run_id: str
    shard: str  # '' (every key) or 'INDEX/COUNT'
    started_at: datetime

    def covers(self, client_id: str) -> bool:
        if not self.shard:
            return True
        index, count = (int(part) for part in self.shard.split("/"))
        return shard_of(client_id, count) == index


def checking_runs(conn) -> list[CheckingRun]:
    """Return the latest finished change-checking run of each shard label."""
    with conn.cursor() as cur:
        cur.execute(sql.CHECKING_RUNS)
        return [CheckingRun(*row) for row in cur.fetchall()]


def _written(conn, runs: list[CheckingRun]) -> dict[str, set[tuple[str, str]]]:
    rows: dict[str, set[tuple[str, str]]] = {}
    with conn.cursor() as cur:
        for run in runs:
            cur.execute(sql.RUN_KEYS, (run.run_id,))
            rows[run.run_id] = {(c, p) for c, p in cur.fetchall()}
    return rows


def apply_checks(conn, states: MutableMapping[Key, KeyState]) -> None:
    """Set each state's ``verified_at`` and ``pending`` from the latest checking runs."""
    runs = checking_runs(conn)
    if not runs or not states:
        return
    written = _written(conn, runs)
    sharded = any(run.shard for run in runs)
    latest_by_client: dict[str, CheckingRun | None] = {}
    for key, state in states.items():
        client_id = key[0]
        if client_id in latest_by_client:
            run = latest_by_client[client_id]
        else:
            covering = runs if not sharded else [r for r in runs if r.covers(client_id)]
            run = max(covering, key=lambda r: r.started_at, default=None)
            latest_by_client[client_id] = run
        if run is None:
            continue
        refreshed_since = (
            state.last_success_at is not None and state.last_success_at >= run.started_at
        )
        if key in written[run.run_id]:
            state.verified_at = None
            state.pending = not refreshed_since
        elif state.last_success_at is not None and state.change_key is not None:
            state.verified_at = run.started_at
            state.pending = False


def is_current(state: KeyState, now: datetime) -> bool:
    """Whether the key's copy is known to exist, be unexpired and match its data now."""
    return state.last_success_at is not None and not state.pending and not state.expired(now)
