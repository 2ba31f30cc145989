"""Every key's freshness, read in the database: per-platform aggregates, the worst keys, a stream.

All three read one definition (``sql/key_freshness.sql``): which keys a run would plan and
when each copy was last known current. ``status``, the metrics and the report aggregate it
in SQL, so what they cost in Python and in output stays the same at 300,000 keys as at 3;
only the per-key stream grows with the keys, and it is read through a server-side cursor.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .promise import promise_for
from .records import FAILING_STREAK
from .settings import Settings

FRAGMENT = (Path(__file__).with_name("sql") / "key_freshness.sql").read_text(encoding="utf-8")
# The reference schema's uuid column is read as it is. An application's own table may keep
# ids as text, as typed: those Python's uuid.UUID reads (any case, hyphens, braces, a urn:
# prefix) become uuids, the rest are no key (the plan skips them too). Only a text column
# pays for the parsing.
UUID_ID = "client_id"
_HEX = r"translate(lower(regexp_replace(client_id::text, '^(urn:)?(uuid:)?', '', 'i')), '{}-', '')"
TEXT_ID = rf"(CASE WHEN {_HEX} ~ '^[0-9a-f]{{32}}$' THEN {_HEX}::uuid END)"
ID_IS_UUID = """
    SELECT coalesce((SELECT atttypid = 'uuid'::regtype FROM pg_attribute
                     WHERE attrelid = to_regclass('client_api_credentials')
                       AND attname = 'client_id' AND NOT attisdropped), true)
"""
# Upper bounds of the age buckets (seconds): 15 minutes to a week, with the 2 h schedule,
# its 2.5 h alert threshold and a missed run or two on the boundaries.
AGE_BUCKETS = (900, 1800, 3600, 7200, 9000, 10800, 14400, 21600, 43200, 86400, 172800, 604800)
FETCH_ROWS = 5000

# Stale: never current, its copy expired, or older than the age asked for.
_STALE = (
    "(current_at IS NULL OR expired "
    "OR current_at < now() - make_interval(secs => %(max_age)s::float8))"
)
_KEY_COLUMNS = f"""
    client_id::text, platform, last_attempt_at, last_status, last_error, consecutive_failures,
    last_success_at, changed_at, expires_at, expired, pending, current_at, age_seconds,
    CASE WHEN changed_at IS NOT NULL
         THEN greatest(0, extract(epoch FROM now() - changed_at))::float8 END, {_STALE}
"""
# Stalest first (never current ahead of all), then in plan order: client, platform.
_ORDER = "ORDER BY current_at ASC NULLS FIRST, client_id, platform_order"
_NO_KEY = "NULL::text, NULL, NULL::timestamptz, NULL, NULL, NULL::integer, NULL::timestamptz, "
_NO_KEY += "NULL::timestamptz, NULL::timestamptz, NULL::boolean, NULL::boolean, "
_NO_KEY += "NULL::timestamptz, NULL::float8, NULL::float8, NULL::boolean"

# One pass over the keys (materialized once) answers the counts, the worst keys and the
# longest failure streaks: each further pass would cost as much as the first.
READ = f"""
    WITH f AS MATERIALIZED ({FRAGMENT}),
    counted AS (
        SELECT platform, width_bucket(age_seconds, %(bounds)s::float8[]) AS bucket,
               count(*) AS keys,
               count(*) FILTER (WHERE current_at IS NULL) AS never,
               count(*) FILTER (WHERE {_STALE}) AS stale,
               count(*) FILTER (WHERE outside_promise) AS outside_promise,
               count(*) FILTER (WHERE last_status = 'failed') AS failing,
               count(*) FILTER (WHERE consecutive_failures >= %(streak)s) AS failing_repeatedly,
               min(current_at) AS oldest_current_at, max(current_at) AS newest_current_at,
               min(promise_until) AS first_promise_end,
               coalesce(sum(age_seconds), 0) AS age_sum,
               max(last_success_at) AS newest_success_at,
               max(extract(epoch FROM expires_at - last_success_at))::float8 AS copy_lifetime
        FROM f GROUP BY platform, bucket
    ),
    worst AS (SELECT * FROM f {_ORDER} LIMIT %(worst)s),
    streaks AS (
        SELECT * FROM f WHERE consecutive_failures >= %(streak)s
        ORDER BY consecutive_failures DESC, client_id, platform_order
        LIMIT %(streaks)s
    )
    SELECT 'counts', (SELECT json_agg(counted) FROM counted)::text, {_NO_KEY}
    UNION ALL SELECT 'worst', NULL, * FROM (SELECT {_KEY_COLUMNS} FROM worst {_ORDER}) AS w
    UNION ALL SELECT 'streak', NULL, * FROM (
        SELECT {_KEY_COLUMNS} FROM streaks
        ORDER BY consecutive_failures DESC, client_id, platform_order) AS k
"""  # noqa: S608 (composed of constants; values travel as parameters)
KEYS = f"""
    WITH f AS ({FRAGMENT}) SELECT {_KEY_COLUMNS} FROM f
    WHERE NOT %(stale_only)s OR {_STALE}
    {_ORDER}
    LIMIT %(limit)s
"""  # noqa: S608 (composed of constants; values travel as parameters)


def with_client_ids(template: str, conn) -> str:
    """Return ``template`` with the client id read as the credentials table holds it."""
    with conn.cursor() as cur:
        cur.execute(ID_IS_UUID)
        (is_uuid,) = cur.fetchone()
    return template.replace("__CLIENT_ID__", UUID_ID if is_uuid else TEXT_ID)


# Reads of 300,000 rows sort and hash in memory rather than in temporary files.
READ_WORK_MEM = "SET work_mem = '64MB'"


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


def _params(settings: Settings, max_age_seconds: float | None, **extra) -> dict:
    shard = settings.shard
    promise = promise_for(settings)
    return {
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


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _add(p: PlatformSummary, row: dict) -> None:
    for name in ("keys", "never", "stale", "outside_promise", "failing", "failing_repeatedly"):
        setattr(p, name, getattr(p, name) + row[name])
    p.oldest_current_at = _earliest(p.oldest_current_at, _time(row["oldest_current_at"]))
    p.newest_current_at = _latest(p.newest_current_at, _time(row["newest_current_at"]))
    p.first_promise_end = _earliest(p.first_promise_end, _time(row["first_promise_end"]))
    p.age_sum += row["age_sum"]
    p.newest_success_at = _latest(p.newest_success_at, _time(row["newest_success_at"]))
    if row["copy_lifetime"] is not None:
        p.copy_lifetime = max(p.copy_lifetime or 0.0, row["copy_lifetime"])
    if row["bucket"] is not None:  # NULL: never current, in no finite bucket
        p.by_bucket[row["bucket"]] += row["keys"]


def read(
    conn, settings: Settings, *, worst: int, streaks: int = 0, max_age_seconds: float | None = None
) -> Summary:
    """Return every configured platform's counts, the worst keys and the longest streaks.

    Stale means older than ``max_age_seconds`` (default: the promise).
    """
    params = _params(
        settings, max_age_seconds, bounds=list(AGE_BUCKETS), worst=worst, streaks=streaks
    )
    summary = Summary(None, {p: PlatformSummary(p) for p in settings.platforms})
    with conn.cursor() as cur:
        cur.execute(READ_WORK_MEM)
        cur.execute("SELECT now()")
        (summary.now,) = cur.fetchone()
        cur.execute(with_client_ids(READ, conn), params)
        for kind, counts, *key in cur:
            if kind == "counts":
                for row in json.loads(counts or "[]"):
                    _add(summary.platforms[row["platform"]], row)
            else:
                (summary.worst if kind == "worst" else summary.streaks).append(KeyRow(*key))
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
    params = _params(settings, max_age_seconds, stale_only=stale_only, limit=limit)
    statement = with_client_ids(KEYS, conn)
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
