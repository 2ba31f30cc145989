-- Every key a run would plan now, with when its copy was last known current: the one
-- definition of freshness that status, the metrics and the report read (aggregated in the
-- database, never shipped row by row). A key is a connected client x platform, plus each
-- connected client's combined 'all' dashboard, as plan.py plans them; the shard and the
-- configured platforms narrow it the same way.
--
-- A copy is current while it is known to exist, be unexpired and match its data (as
-- current.py judges it for the run): a change-aware run writes nothing for a key it finds
-- unchanged, but its run row says it read the change keys (checked_changes). So a key was
-- last known current at its last success or at the start of the latest finished checking
-- run covering it that wrote no row for it, whichever is later, and never past its copy's
-- expiry; a key that run did write a row for, and that has not succeeded since, is
-- pending: a change (or a due refresh) not reflected yet.
--
-- Parameters: platforms text[]; shard_index, shard_count integer (NULL: unsharded); the
-- promise (promise.py): max_age_seconds, staleness_seconds float8, keeps_copies boolean.
-- Columns: client_id, platform, platform_order, last_attempt_at, last_status, last_error,
-- consecutive_failures, last_success_at, changed_at, expires_at, expired, pending,
-- current_at (NULL: never), age_seconds (since current_at; NULL: never), promise_until
-- (when it leaves the promise unless refreshed; NULL: never refreshed, outside already),
-- outside_promise.
WITH credentials AS NOT MATERIALIZED (
    -- __CLIENT_ID__: the id as a uuid, NULL when it is none (key_freshness.py: a uuid
    -- column as it is; a text column's value read as plan.valid_client_id reads it).
    SELECT __CLIENT_ID__ AS client_id, platform::text AS platform
    FROM client_api_credentials
    WHERE status = 'connected' AND platform::text IN ('shopify', 'amazon')
), connected AS NOT MATERIALIZED (
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
, checks AS (
    -- The latest finished checking run of each shard label ('' or 'INDEX/COUNT').
    SELECT DISTINCT ON (shard) run_id, shard, started_at,
           nullif(split_part(shard, '/', 1), '')::integer AS idx,
           nullif(split_part(shard, '/', 2), '')::integer AS cnt
    FROM refresh_runs
    WHERE checked_changes AND status <> 'running'
    ORDER BY shard, started_at DESC
), whole AS (
    SELECT run_id, started_at FROM checks WHERE shard = ''
), parts AS (
    -- Sharded checking runs of the newest shard count (a count used before has older
    -- runs), as arrays indexed by shard + 1: read once, not joined per key.
    SELECT n.cnt, array_agg(c.run_id ORDER BY i) AS run_ids,
           array_agg(c.started_at ORDER BY i) AS starts
    FROM (SELECT cnt FROM checks WHERE cnt IS NOT NULL ORDER BY started_at DESC LIMIT 1) AS n
    CROSS JOIN generate_series(0, n.cnt - 1) AS i
    LEFT JOIN checks AS c ON c.cnt = n.cnt AND c.idx = i
    GROUP BY n.cnt
), written AS (
    -- The keys those runs wrote a row for: in a quiet run, the few it refreshed.
    SELECT j.run_id, j.client_id, j.platform FROM refresh_jobs AS j
    WHERE j.run_id IN (SELECT run_id FROM checks)
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
       s.expires_at,
       coalesce(s.expires_at <= now(), false) AS expired,
       v.pending,
       c.current_at,
       -- Not greatest(0, ...): it would turn a NULL age into 0. A copy stamped ahead of
       -- the database's clock (another host's) is 0 old.
       CASE WHEN c.current_at > now() THEN 0
            ELSE extract(epoch FROM now() - c.current_at)::float8 END AS age_seconds,
       e.promise_until,
       s.last_success_at IS NULL OR e.promise_until <= now() AS outside_promise
FROM keys AS k
LEFT JOIN refresh_state AS s ON s.client_id = k.client_id AND s.platform = k.platform
-- The latest checking runs, each a value computed once (initplans), not a join per key.
CROSS JOIN (
    SELECT (SELECT run_id FROM whole) AS run_id, (SELECT started_at FROM whole) AS started_at,
           (SELECT cnt FROM parts) AS cnt, (SELECT run_ids FROM parts) AS run_ids,
           (SELECT starts FROM parts) AS starts
) AS g
-- Only with sharded checking runs is each client's shard computed (plan.shard_of).
CROSS JOIN LATERAL (
    SELECT CASE WHEN g.cnt IS NOT NULL THEN 1 + mod(
               ('x' || encode(substring(sha256(uuid_send(k.client_id)) FROM 1 FOR 4), 'hex'))
                   ::bit(32)::bigint::numeric * 4294967296
               + ('x' || encode(substring(sha256(uuid_send(k.client_id)) FROM 5 FOR 4), 'hex'))
                   ::bit(32)::bigint,
               g.cnt)::integer END AS slot
) AS sh
-- The latest checking run covering the key: the unsharded one or its shard's.
CROSS JOIN LATERAL (
    SELECT CASE WHEN g.starts[sh.slot] > g.started_at OR g.started_at IS NULL
                THEN g.run_ids[sh.slot] ELSE g.run_id END AS run_id,
           greatest(g.started_at, g.starts[sh.slot]) AS started_at
) AS chk
LEFT JOIN written AS wr
    ON wr.run_id = chk.run_id AND wr.client_id = k.client_id AND wr.platform = k.platform
CROSS JOIN LATERAL (
    SELECT CASE
               -- Confirmed unchanged by the covering run (only a key with a change key can
               -- be; without one, verified_at is its success itself).
               WHEN chk.run_id IS NOT NULL AND wr.run_id IS NULL
                    AND s.last_success_at IS NOT NULL AND s.change_key IS NOT NULL
                   THEN chk.started_at
               WHEN wr.run_id IS NOT NULL THEN NULL
               WHEN s.change_key IS NOT NULL THEN s.verified_at
           END AS verified_at,
           wr.run_id IS NOT NULL
               AND NOT coalesce(s.last_success_at >= chk.started_at, false) AS pending
) AS v
CROSS JOIN LATERAL (
    -- GREATEST skips NULLs: never current stays NULL.
    SELECT CASE WHEN s.expires_at < greatest(s.last_success_at, v.verified_at) THEN s.expires_at
                ELSE greatest(s.last_success_at, v.verified_at) END AS current_at
) AS c
CROSS JOIN LATERAL (
    -- The promise ends at the first of: the age bound, the copy's expiry (when copies are
    -- kept), a pending change's wait bound.
    SELECT CASE WHEN s.last_success_at IS NOT NULL THEN least(
               c.current_at + make_interval(secs => %(max_age_seconds)s::float8),
               CASE WHEN %(keeps_copies)s THEN s.expires_at END,
               coalesce(s.change_pending_at, CASE WHEN v.pending THEN chk.started_at END)
                   + make_interval(secs => %(staleness_seconds)s::float8)
           ) END AS promise_until
) AS e
