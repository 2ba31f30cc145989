"""The statements key_freshness.py runs: which keys a run would plan (``sql/key_freshness.sql``),
and their counts, the stalest, the failure streaks and the per-key stream composed on it.

Each is text composed of constants; every value travels as a parameter. Every statement
judges at one instant, ``%(now)s``, so what key_freshness reads agrees with itself.
"""

from __future__ import annotations

from pathlib import Path

SQL = Path(__file__).with_name("sql")
FRAGMENT = (SQL / "key_freshness.sql").read_text(encoding="utf-8")
CONNECTED_ROWS = (SQL / "connected_credentials.sql").read_text(encoding="utf-8")
MISSING = (
    (SQL / "missing_keys.sql").read_text(encoding="utf-8").replace("__CONNECTED__", CONNECTED_ROWS)
)
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

# Every statement judges at one instant, %(now)s: the database's clock read once before
# them, so the counts, the worst keys and the stream agree with each other.
_AGE = "greatest(0, date_part('epoch', %(now)s::timestamptz - current_at))"
# Stale: never current, its copy expired, or older than the age asked for.
_STALE = (
    "(current_at IS NULL OR coalesce(expires_at <= %(now)s::timestamptz, false) "
    "OR current_at < %(now)s::timestamptz - make_interval(secs => %(max_age)s::float8))"
)
# The promise ends at the first of: the age bound, the copy's expiry (when copies are kept),
# a pending change's wait bound (promise.py); a key never refreshed is outside already.
_MAX_AGE = "make_interval(secs => %(max_age_seconds)s::float8)"
_STALENESS = "make_interval(secs => %(staleness_seconds)s::float8)"
_OUTSIDE = f"""(last_success_at IS NULL
    OR current_at + {_MAX_AGE} <= %(now)s::timestamptz
    OR (%(keeps_copies)s AND expires_at <= %(now)s::timestamptz)
    OR pending_since + {_STALENESS} <= %(now)s::timestamptz)"""
_KEY_COLUMNS = f"""
    client_id::text, platform, last_attempt_at, last_status, last_error,
    coalesce(consecutive_failures, 0), last_success_at, changed_at, expires_at,
    coalesce(expires_at <= %(now)s::timestamptz, false), coalesce(pending, false), current_at,
    CASE WHEN current_at IS NOT NULL THEN {_AGE} END,
    CASE WHEN changed_at IS NOT NULL
         THEN greatest(0, date_part('epoch', %(now)s::timestamptz - changed_at)) END, {_STALE}
"""
# Stalest first (never current ahead of all), then in plan order: client, platform.
_ORDER = "ORDER BY current_at ASC NULLS FIRST, client_id, platform_order"
_STREAK_ORDER = "ORDER BY consecutive_failures DESC, client_id, platform_order"
# A key refresh_state has no row for, in the fragment's columns: never refreshed.
_MISSING_ROWS = f"""
    SELECT client_id, platform, platform_order, NULL::timestamptz AS last_attempt_at,
           NULL::text AS last_status, NULL::text AS last_error, 0 AS consecutive_failures,
           NULL::timestamptz AS last_success_at, NULL::timestamptz AS changed_at,
           NULL::timestamptz AS expires_at, false AS pending,
           NULL::timestamptz AS pending_since, NULL::timestamptz AS current_at
    FROM ({MISSING}) AS m
"""  # noqa: S608 (composed of constants; values travel as parameters)

# The known keys counted per platform and age bucket, in parallel workers where the server
# has them. Each aggregate reads the row's columns; the first promise end is the least of
# the three bounds' minima (a minimum of least() is the least of the minima).
COUNTS = f"""
    -- A copy stamped ahead of the clock (another host's) is 0 old: bucket 0 either way.
    SELECT platform,
           width_bucket(date_part('epoch', %(now)s::timestamptz - current_at), %(bounds)s::float8[])
               AS bucket,
           count(*) AS keys,
           count(*) FILTER (WHERE current_at IS NULL) AS never,
           count(*) FILTER (WHERE {_STALE}) AS stale,
           count(*) FILTER (WHERE {_OUTSIDE}) AS outside_promise,
           count(*) FILTER (WHERE last_status = 'failed') AS failing,
           count(*) FILTER (WHERE consecutive_failures >= %(streak)s) AS failing_repeatedly,
           min(current_at) AS oldest_current_at, max(current_at) AS newest_current_at,
           least(min(current_at) FILTER (WHERE last_success_at IS NOT NULL) + {_MAX_AGE},
                 CASE WHEN %(keeps_copies)s
                      THEN min(expires_at) FILTER (WHERE last_success_at IS NOT NULL) END,
                 min(pending_since) FILTER (WHERE last_success_at IS NOT NULL) + {_STALENESS}
           ) AS first_promise_end,
           coalesce(sum({_AGE}), 0) AS age_sum,
           max(last_success_at) AS newest_success_at,
           max(date_part('epoch', expires_at - last_success_at)) AS copy_lifetime
    FROM ({FRAGMENT}) AS f
    GROUP BY platform, bucket
"""  # noqa: S608 (composed of constants; values travel as parameters)
# The connected keys per platform, from one pass over the credentials and no join: where
# they number the known keys counted, no key is missing and the anti-joins below are not
# read (the usual case once every key has run once).
CONNECTED = f"""
    SELECT count(*) FILTER (WHERE shopify) AS shopify_keys,
           count(*) FILTER (WHERE amazon) AS amazon_keys, count(*) AS all_keys
    FROM (SELECT client_id, bool_or(platform = 'shopify') AS shopify,
                 bool_or(platform = 'amazon') AS amazon
          FROM ({CONNECTED_ROWS}) AS c GROUP BY client_id) AS k
"""  # noqa: S608 (composed of constants; values travel as parameters)
# The keys never refreshed, counted per platform, and the first of them named: materialized,
# since they are few (all of them only before the first run).
MISSING_READ = f"""
    WITH m AS MATERIALIZED ({MISSING})
    SELECT platform, count(*)::integer, NULL::text, NULL::integer FROM m GROUP BY platform
    UNION ALL
    SELECT * FROM (SELECT platform, NULL::integer, client_id::text, platform_order FROM m
                   ORDER BY client_id, platform_order LIMIT %(worst)s) AS named
"""  # noqa: S608 (composed of constants; values travel as parameters)
# The stalest known keys. Only keys current by %(current_by)s at the latest can be among
# them (the counts say how many are), so only their rows are joined and sorted.
WORST = f"""
    SELECT {_KEY_COLUMNS} FROM (
        SELECT * FROM ({FRAGMENT}) AS f
        WHERE %(current_by)s::timestamptz IS NULL OR current_at IS NULL
           OR current_at <= %(current_by)s::timestamptz
        {_ORDER} LIMIT %(worst)s
    ) AS w
    {_ORDER}
"""  # noqa: S608 (composed of constants; values travel as parameters)
STREAKS = f"""
    SELECT {_KEY_COLUMNS} FROM (
        SELECT * FROM ({FRAGMENT}) AS f WHERE consecutive_failures >= %(streak)s
        {_STREAK_ORDER} LIMIT %(streaks)s
    ) AS k
    {_STREAK_ORDER}
"""  # noqa: S608 (composed of constants; values travel as parameters)
# Every key, known or not, for the per-key list: a stream, read a page at a time.
KEYS = f"""
    SELECT {_KEY_COLUMNS} FROM ({FRAGMENT} UNION ALL {_MISSING_ROWS}) AS f
    WHERE NOT %(stale_only)s OR {_STALE}
    {_ORDER}
    LIMIT %(limit)s
"""  # noqa: S608 (composed of constants; values travel as parameters)


def client_id_reader(conn) -> str:
    """Return the expression that reads the credentials' client id as a uuid."""
    with conn.cursor() as cur:
        cur.execute(ID_IS_UUID)
        (is_uuid,) = cur.fetchone()
    return UUID_ID if is_uuid else TEXT_ID


def with_client_ids(template: str, conn) -> str:
    """Return ``template`` with the client id read as the credentials table holds it."""
    return template.replace("__CLIENT_ID__", client_id_reader(conn))


# Reads of 300,000 rows sort and hash in memory rather than in temporary files.
READ_WORK_MEM = "SET work_mem = '64MB'"


# The latest finished checking run of each shard label ('' or 'INDEX/COUNT'); a handful of
# rows, read through refresh_runs_checked_idx before the keys are.
CHECKS = """
    SELECT DISTINCT ON (shard) run_id::text, shard, started_at
    FROM refresh_runs
    WHERE checked_changes AND status <> 'running'
    ORDER BY shard, started_at DESC
"""
