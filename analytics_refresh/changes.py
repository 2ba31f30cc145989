"""Change-aware refresh (``REFRESH_CHANGE_SQL``): refresh what changed, and the rest when due.

Once a run, the configured query (``client_id, platform, change_key`` rows for every client)
runs read-only in the application's database. A job is skipped as ``unchanged`` when its
key equals the one stored with its last success and that success is not yet due again. An
``all`` job's key is the keys of every connected platform of its client, so it is unchanged
only when all of them are; a key the query does not return counts as changed.

Due: every key is refreshed at least once per ``REFRESH_MAX_AGE_MINUTES`` (the period), at
a phase of its own inside the period, a hash of the key, so unchanged keys come due spread
over the period instead of all in one run. A key is due when its last success is older than
the latest of its due instants (phase + k x period) up to now; no key's cache is therefore
older than one period plus one schedule interval plus one run's length.

Expiring: a copy whose answer declared an expiry (``expires_at``, or the caching headers)
is refreshed before it: when the expiry falls before the next run could refresh it (the
schedule's interval and a run's length from now). A backend that declares nothing is
judged by its change key and the max age alone.

An unchanged key is only counted: it gets no row in ``refresh_jobs`` and no write to its
state; the run row's ``checked_changes`` tells readers that every key of the shard the run
wrote no row for was current when it started (current.py).

A query that fails, runs past its bound, or returns rows of the wrong shape is a warning
naming the problem, and the run refreshes every job: never a silent skip.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from . import change_query
from .change_query import ChangeQueryError
from .clock import Deadline
from .plan import SOURCE_PLATFORMS, Job, valid_client_id
from .records import Key, KeyState

log = logging.getLogger(__name__)

# The change query gets this long at most, and never more than a quarter of what the
# deadline leaves: the refreshes it decides about need the rest.
QUERY_SECONDS = 30.0
QUERY_SHARE = 0.25


def read_keys(conn, query: str, deadline: Deadline | None = None) -> dict[Key, str]:
    """Run the configured query read-only; return {(client_id, platform): change_key}.

    Raises ChangeQueryError naming the problem. Rows with a NULL key are left out (those
    keys count as changed).
    """
    seconds = QUERY_SECONDS
    if deadline is not None:
        seconds = max(0.5, min(QUERY_SECONDS, deadline.remaining() * QUERY_SHARE))
    with change_query.read_only(conn, query, seconds, deadline) as cur:
        if cur.description is None:
            raise ChangeQueryError("it returned no rows at all (not a SELECT)")
        if len(cur.description) != 3:
            raise ChangeQueryError(
                f"expected 3 columns (client_id, platform, change_key), got {len(cur.description)}"
            )
        return _keys(cur)


def _keys(rows) -> dict[Key, str]:
    keys: dict[Key, str] = {}
    for number, (raw_client, platform, key) in enumerate(rows, start=1):
        client_id = valid_client_id(str(raw_client)) if raw_client is not None else None
        if client_id is None:
            raise ChangeQueryError(f"row {number}: client_id is not a UUID")
        if platform not in SOURCE_PLATFORMS:
            raise ChangeQueryError(f"row {number}: platform is not shopify or amazon")
        if (client_id, platform) in keys:
            raise ChangeQueryError(f"row {number}: a second row for {client_id} ({platform})")
        keys[(client_id, platform)] = None if key is None else str(key)
    return {k: v for k, v in keys.items() if v is not None}


def job_key(job: Job, keys: Mapping[Key, str], connected: Sequence[str]) -> str | None:
    """Return a job's change key as stored: a digest of its platform's key, or for ``all``
    of every connected platform's key (length-prefixed, so no two sets read alike).

    A digest has a fixed length and plain characters, so what is stored compares equal to
    what the query returns next time, whatever the key's length or bytes.
    """
    if job.platform != "all":
        key = keys.get((job.client_id, job.platform))
        return None if key is None else _digest(key)
    parts = []
    for platform in sorted(connected):
        key = keys.get((job.client_id, platform))
        if key is None:
            return None  # one platform unknown: the combined dashboard counts as changed
        parts.append(f"{platform}:{len(key)}:{key}")
    return _digest("|".join(parts)) if parts else None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def phase_seconds(job: Job, period_seconds: float) -> float:
    """Return the key's stable offset inside the period, from a hash of the key."""
    digest = hashlib.sha256(f"{job.client_id}/{job.platform}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % max(1, int(period_seconds))


def _latest_due_epoch(job: Job, now_epoch: float, period_seconds: float) -> float:
    # latest_due in epoch seconds: a run judges every key, and datetimes cost more.
    return now_epoch - (now_epoch - phase_seconds(job, period_seconds)) % period_seconds


def latest_due(job: Job, now: datetime, period_seconds: float) -> datetime:
    """Return the latest instant up to ``now`` at which the key came due."""
    epoch = now.timestamp()
    since = (epoch - phase_seconds(job, period_seconds)) % period_seconds
    return now - timedelta(seconds=since)


@dataclass
class Decision:
    """Which jobs run, which are skipped as unchanged, and why each one runs."""

    run: list[Job] = field(default_factory=list)
    unchanged: list[Job] = field(default_factory=list)  # no row, no state write: counted
    kinds: dict[Job, str] = field(default_factory=dict)  # changed | expiring | due | unchanged
    keys: dict[Job, str] = field(default_factory=dict)  # stored with each success
    seen: dict[Job, datetime] = field(default_factory=dict)  # when a change was first seen


def decide(
    jobs: Sequence[Job],
    states: Mapping[Key, KeyState],
    keys: Mapping[Key, str],
    *,
    connected: Mapping[str, Sequence[str]],
    now: datetime,
    max_age_minutes: float,
    lead_seconds: float = 0.0,
) -> Decision:
    """Split ``jobs`` into those to refresh (changed, expiring or due) and those skipped as
    unchanged.

    ``connected`` gives each client's connected platforms, which make up its ``all`` key.
    A copy whose declared expiry falls within ``lead_seconds`` (the schedule's interval and
    a run) is refreshed now: the next run might come too late to keep a reader from
    finding it expired.
    """
    period = max_age_minutes * 60
    now_epoch = now.timestamp()
    expiring_before = now + timedelta(seconds=lead_seconds)
    decision = Decision()
    for job in jobs:
        key = job_key(job, keys, connected.get(job.client_id, ()))
        if key is not None:
            decision.keys[job] = key
        state = states.get((job.client_id, job.platform))
        last = state.last_success_at if state else None
        if key is None or last is None or state.change_key != key:
            kind = "changed"
            if last is not None and key is not None and state.change_key is not None:
                decision.seen[job] = now  # a change of known data, not a first refresh
        elif state.expires_at is not None and state.expires_at <= expiring_before:
            kind = "expiring"
        elif (state.success_planned_at or last).timestamp() < _latest_due_epoch(
            job, now_epoch, period
        ):
            # Judged by when the last refresh was planned: a job that ended just after its
            # due instant would otherwise wait a whole extra period plus a run.
            kind = "due"
        else:
            kind = "unchanged"
        decision.kinds[job] = kind
        (decision.unchanged if kind == "unchanged" else decision.run).append(job)
    return decision
