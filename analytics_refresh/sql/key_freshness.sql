-- Every key a run would plan now, with when its copy was last known current: the one
-- definition of freshness that status, the metrics and the report read (aggregated in the
-- database, never shipped row by row). A key is a connected client x platform, plus each
-- connected client's combined 'all' dashboard, as plan.py plans them; the shard and the
-- configured platforms narrow it the same way.
--
-- Parameters: platforms text[]; shard_index, shard_count integer (NULL: unsharded);
-- promise_seconds float8 (how long a copy may go without being known current).
-- Columns: client_id, platform, platform_order, last_attempt_at, last_status, last_error,
-- consecutive_failures, last_success_at, changed_at, current_at (NULL: never),
-- promise_until (NULL: never current, so outside the promise already), age_seconds (since
-- current_at; NULL: never).
WITH credentials AS (
    -- __CLIENT_ID__: the id as a uuid, NULL when it is none (key_freshness.py: a uuid
    -- column as it is; a text column's value read as plan.valid_client_id reads it).
    SELECT __CLIENT_ID__ AS client_id, platform::text AS platform
    FROM client_api_credentials
    WHERE status = 'connected' AND platform::text IN ('shopify', 'amazon')
), connected AS (
    SELECT client_id, platform
    FROM credentials
    WHERE client_id IS NOT NULL
      -- plan.shard_of: the first 8 bytes of the SHA-256 of the id's 16 bytes, read as an
      -- unsigned big-endian number (two unsigned halves), modulo the shard count.
      AND (%(shard_count)s::integer IS NULL OR mod(
              ('x' || encode(substring(sha256(uuid_send(client_id)) FROM 1 FOR 4), 'hex'))
                  ::bit(32)::bigint::numeric * 4294967296
              + ('x' || encode(substring(sha256(uuid_send(client_id)) FROM 5 FOR 4), 'hex'))
                  ::bit(32)::bigint,
              %(shard_count)s::integer) = %(shard_index)s::integer)
), keys AS (
    -- Each connected platform once (a duplicate row plans no second job), and each
    -- connected client's combined dashboard.
    SELECT DISTINCT client_id, platform FROM connected WHERE platform = ANY(%(platforms)s::text[])
    UNION ALL
    SELECT DISTINCT client_id, 'all' FROM connected WHERE 'all' = ANY(%(platforms)s::text[])
)
SELECT k.client_id,
       k.platform,
       array_position(%(platforms)s::text[], k.platform) AS platform_order,
       s.last_attempt_at,
       s.last_status,
       s.last_error,
       coalesce(s.consecutive_failures, 0) AS consecutive_failures,
       s.last_success_at,
       s.changed_at,
       current_at,
       current_at + make_interval(secs => %(promise_seconds)s::float8) AS promise_until,
       -- Not greatest(0, ...): it would turn a NULL age into 0. A copy stamped ahead of
       -- the database's clock (another host's) is 0 old.
       CASE WHEN current_at > now() THEN 0
            ELSE extract(epoch FROM now() - current_at)::float8 END AS age_seconds
FROM keys AS k
LEFT JOIN refresh_state AS s ON s.client_id = k.client_id AND s.platform = k.platform
-- Last known current: refreshed, or its data found unchanged since by a run that compared
-- change keys (only a key with a change key is ever confirmed so; without one, verified_at
-- is the time of the success itself). GREATEST skips NULLs; never current stays NULL.
CROSS JOIN LATERAL (
    SELECT greatest(s.last_success_at, CASE WHEN s.change_key IS NOT NULL THEN s.verified_at END)
        AS current_at
) AS c
