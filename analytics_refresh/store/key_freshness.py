"""Every key's freshness, read in the database: per-platform aggregates, the worst keys, a stream.

All three read one definition (``sql/key_freshness.sql``): which keys a run would plan and
when each copy was last known current. ``status``, the metrics and the report aggregate it
in SQL, so what they cost in Python and in output stays the same at 300,000 keys as at 3;
only the per-key stream grows with the keys, and it is read through a server-side cursor.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from analytics_refresh.config.settings import Settings
from analytics_refresh.model.promise import promise_for
from analytics_refresh.store import freshness_sql as q
from analytics_refresh.store.records import FAILING_STREAK

# Upper bounds of the age buckets (seconds): 15 minutes to a week, with the 2 h schedule,
# its 2.5 h alert threshold and a missed run or two on the boundaries.
AGE_BUCKETS = (900, 1800, 3600, 7200, 9000, 10800, 14400, 21600, 43200, 86400, 172800, 604800)
FETCH_ROWS = 5000


def promise_seconds(settings: Settings) -> float:
    """Return the promise's age bound: no dashboard older than this (promise.py)."""
    return promise_for(settings).max_age_seconds


@dataclass(slots=True)
class KeyRow:
    """One expected key as the record knows it."""

    client_id: str
    platform: str
    last_attempt_at: datetime | None
    last_status: str | None
    last_error: str | None
    consecutive_failures: int
    last_success_at: datetime | None
    changed_at: datetime | None
    expires_at: datetime | None  # until when its copy holds (None: not declared)
    expired: bool
    pending: bool  # a change the latest checking run saw is not reflected yet
    current_at: datetime | None  # last known current; None: never
    age_seconds: float | None
    changed_seconds: float | None
    stale: bool

    @property
    def failing(self) -> bool:
        return self.last_status == "failed"


@dataclass
class PlatformSummary:
    """One platform's keys, counted."""

    platform: str
    keys: int = 0
    never: int = 0
    stale: int = 0
    outside_promise: int = 0
    failing: int = 0
    failing_repeatedly: int = 0
    oldest_current_at: datetime | None = None  # among keys ever current
    newest_current_at: datetime | None = None
    first_promise_end: datetime | None = None  # when the next key leaves the promise
    age_sum: float = 0.0
    newest_success_at: datetime | None = None  # a refresh request's, not a check's
    copy_lifetime: float | None = None  # the longest a copy was declared to live (seconds)
    # Keys per bucket of AGE_BUCKETS, not cumulative; index len(AGE_BUCKETS): older still.
    by_bucket: list[int] = field(default_factory=lambda: [0] * (len(AGE_BUCKETS) + 1))

    def cumulative(self) -> list[tuple[str, int]]:
        """Return (le, keys at most that old) per bucket, ending with +Inf (every key)."""
        out, total = [], 0
        for bound, count in zip(AGE_BUCKETS, self.by_bucket, strict=False):
            total += count
            out.append((f"{bound:g}", total))
        out.append(("+Inf", self.keys))
        return out


@dataclass
class Summary:
    """The database's clock and every configured platform's counts."""

    now: datetime | None
    platforms: dict[str, PlatformSummary]
    worst: list[KeyRow] = field(default_factory=list)  # stalest first
    streaks: list[KeyRow] = field(default_factory=list)  # longest failure streak first

    def total(self, name: str) -> int:
        return sum(getattr(p, name) for p in self.platforms.values())


def coverage(conn) -> dict:
    """Return the latest checking runs as the fragment's parameters (check_run ... check_runs).

    The unsharded one, and those of the newest shard count (a count used before has older
    runs) indexed by shard + 1, with None where a shard has not checked yet.
    """
    with conn.cursor() as cur:
        cur.execute(q.CHECKS)
        rows = cur.fetchall()
    whole = next(((run, at) for run, shard, at in rows if shard == ""), (None, None))
    parts = {}
    for run, shard, at in rows:
        index, _, count = shard.partition("/")
        if count:
            parts[(int(count), int(index))] = (run, at)
    newest = max(parts.items(), key=lambda item: item[1][1], default=None)
    count = newest[0][0] if newest else None
    slots = [parts.get((count, i), (None, None)) for i in range(count or 0)]
    return {
        "check_run": whole[0],
        "check_started": whole[1],
        "part_count": count,
        "part_runs": [run for run, _ in slots],
        "part_starts": [at for _, at in slots],
        "check_runs": [run for run, _, _ in rows],
    }


def _params(conn, settings: Settings, max_age_seconds: float | None, **extra) -> dict:
    shard = settings.shard
    promise = promise_for(settings)
    return {
        **coverage(conn),
        "current_by": None,
        "platforms": list(settings.platforms),
        "shard_index": shard.index if shard else None,
        "shard_count": shard.count if shard else None,
        "max_age_seconds": promise.max_age_seconds,
        "staleness_seconds": promise.staleness_seconds,
        "keeps_copies": promise.keeps_copies,
        "max_age": promise.max_age_seconds if max_age_seconds is None else max_age_seconds,
        "streak": FAILING_STREAK,
        **extra,
    }


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def _add(p: PlatformSummary, row: dict) -> None:
    for name in ("keys", "never", "stale", "outside_promise", "failing", "failing_repeatedly"):
        setattr(p, name, getattr(p, name) + row[name])
    p.oldest_current_at = _earliest(p.oldest_current_at, row["oldest_current_at"])
    p.newest_current_at = _latest(p.newest_current_at, row["newest_current_at"])
    p.first_promise_end = _earliest(p.first_promise_end, row["first_promise_end"])
    p.age_sum += row["age_sum"]
    p.newest_success_at = _latest(p.newest_success_at, row["newest_success_at"])
    if row["copy_lifetime"] is not None:
        p.copy_lifetime = max(p.copy_lifetime or 0.0, row["copy_lifetime"])
    if row["bucket"] is not None:  # NULL: never current, in no finite bucket
        p.by_bucket[row["bucket"]] += row["keys"]


def _older_than(platforms: dict[str, PlatformSummary], worst: int) -> float:
    """Return an age every one of the ``worst`` stalest keys is at least (0: no bound).

    The counts say how many keys each age bucket holds: walking from the never current and
    the oldest bucket down, the bucket where ``worst`` keys are reached bounds them below.
    """
    seen = sum(p.never for p in platforms.values())
    if seen >= worst:  # the never current alone: any bound keeps them
        return float(AGE_BUCKETS[-1])
    for index in range(len(AGE_BUCKETS), 0, -1):
        seen += sum(p.by_bucket[index] for p in platforms.values())
        if seen >= worst:
            # One second under the bound: the ages in SQL and the comparison differ in
            # rounding, and a few keys more sort no slower.
            return max(0.0, AGE_BUCKETS[index - 1] - 1.0)
    return 0.0


def _merge_worst(
    known: list[KeyRow], missing: list[KeyRow], worst: int, platforms: tuple[str, ...]
) -> list[KeyRow]:
    """Return the ``worst`` stalest of both lists, in the statements' order (_ORDER).

    A uuid sorts in PostgreSQL as its bytes, and so does its lower-case text.
    """

    def order(row: KeyRow):
        at = row.current_at
        return (at is not None, at.timestamp() if at else 0.0, row.client_id,
                platforms.index(row.platform))  # fmt: skip

    return sorted([*missing, *known], key=order)[:worst]


def _missing_row(client_id: str, platform: str) -> KeyRow:
    """Return a key refresh_state has no row for: never refreshed, stale, outside the promise."""
    return KeyRow(
        client_id, platform, None, None, None, 0, None, None, None, False, False, None, None,
        None, True,
    )  # fmt: skip


def _add_missing(p: PlatformSummary, count: int) -> None:
    for name in ("keys", "never", "stale", "outside_promise"):
        setattr(p, name, getattr(p, name) + count)


def read(
    conn, settings: Settings, *, worst: int, streaks: int = 0, max_age_seconds: float | None = None
) -> Summary:
    """Return every configured platform's counts, the worst keys and the longest streaks.

    Stale means older than ``max_age_seconds`` (default: the promise). Three statements
    over the known keys (counts, worst, streaks), a count of the connected keys, and, only
    where that count says some are missing, one over the keys never refreshed; each free
    to use parallel workers, all judging at the instant read first.
    """
    summary = Summary(None, {p: PlatformSummary(p) for p in settings.platforms})
    with conn.cursor() as cur:
        cur.execute(q.READ_WORK_MEM)
        cur.execute("SELECT now()")
        (summary.now,) = cur.fetchone()
        params = _params(
            conn, settings, max_age_seconds, now=summary.now, bounds=list(AGE_BUCKETS),
            worst=worst, streaks=streaks,
        )  # fmt: skip
        ids = q.client_id_reader(conn)
        cur.execute(q.COUNTS.replace("__CLIENT_ID__", ids), params)
        names = [c.name for c in cur.description]
        for row in cur.fetchall():
            _add(summary.platforms[row[0]], dict(zip(names, row, strict=True)))
        missing = []
        cur.execute(q.CONNECTED.replace("__CLIENT_ID__", ids), params)
        connected = dict(zip(("shopify", "amazon", "all"), cur.fetchone(), strict=True))
        short = [p for p in settings.platforms if connected[p] != summary.platforms[p].keys]
        if short:  # some connected key has no state row: count and name those
            cur.execute(
                q.MISSING_READ.replace("__CLIENT_ID__", ids), {**params, "platforms": short}
            )
            for platform, count, client_id, _order in cur.fetchall():
                if count is not None:
                    _add_missing(summary.platforms[platform], count)
                else:
                    missing.append(_missing_row(client_id, platform))
        if worst > 0:
            older = _older_than(summary.platforms, worst)
            params["current_by"] = summary.now - timedelta(seconds=older) if older else None
            cur.execute(q.WORST.replace("__CLIENT_ID__", ids), params)
            known = [KeyRow(*r) for r in cur.fetchall()]
            summary.worst = _merge_worst(known, missing, worst, tuple(settings.platforms))
        if streaks > 0:
            cur.execute(q.STREAKS.replace("__CLIENT_ID__", ids), params)
            summary.streaks = [KeyRow(*r) for r in cur.fetchall()]
    return summary


def stream(
    conn,
    settings: Settings,
    *,
    max_age_seconds: float,
    stale_only: bool = False,
    limit: int | None = None,
) -> Iterator[KeyRow]:
    """Yield every expected key (or the stale ones), stalest first, a page at a time."""
    with conn.cursor() as cur:
        cur.execute("SELECT now()")
        (now,) = cur.fetchone()
    params = _params(conn, settings, max_age_seconds, now=now, stale_only=stale_only, limit=limit)
    statement = q.with_client_ids(q.KEYS, conn)
    was_autocommit = conn.autocommit
    conn.autocommit = False  # a server-side cursor lives inside a transaction
    try:
        with conn.cursor(name="analytics_refresh_keys") as cur:
            cur.itersize = FETCH_ROWS
            cur.execute(statement, params)
            for row in cur:
                yield KeyRow(*row)
        conn.commit()
    finally:
        if not conn.closed:
            conn.rollback()
            conn.autocommit = was_autocommit
