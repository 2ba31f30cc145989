-- The keys the record knows that a run would plan now, each with when its copy was last
-- known current: the one definition of freshness that status and the metrics read
-- (aggregated in the database, never shipped row by row). A key is a connected client x
-- platform, plus each connected client's combined 'all' dashboard, as plan.py plans them;
-- the shard and the configured platforms narrow it the same way. The connected keys the
-- record does not know yet (never refreshed) are missing_keys.sql.
--
-- A copy is current while it is known to exist, be unexpired and match its data (as
-- current.py judges it for the run): a change-aware run writes nothing for a key it finds
-- unchanged, but its run row says it read the change keys (checked_changes). So a key was
-- last known current at its last success or at the start of the latest finished checking
-- run covering it that wrote no row for it, whichever is later, and never past its copy's
-- expiry; a key that run did write a row for, and that has not succeeded since, is
-- pending: a change (or a due refresh) not reflected yet.
--
-- Shaped for 300,000 keys: no CTE is materialized and nothing but refresh_state is read
-- per key, so PostgreSQL can spread the scan over parallel workers; the latest checking
-- runs arrive as parameters (key_freshness.coverage reads them first); and the ages, the
-- promise and the counts are derived from these columns by the statements in
-- key_freshness.py, the way each needs them.
--
-- Parameters: platforms text[]; shard_index, shard_count integer (NULL: unsharded); the
-- latest checking runs: check_run uuid and check_started timestamptz (unsharded; NULL:
-- none), part_count integer (the newest shard count of sharded ones; NULL: none),
-- part_runs uuid[] and part_starts timestamptz[] (indexed by shard + 1), check_runs uuid[]
-- (all of them); current_by timestamptz (NULL: no bound).
-- Columns: client_id, platform, platform_order, last_attempt_at, last_status, last_error,
-- consecutive_failures, last_success_at, changed_at, expires_at, pending, pending_since
-- (when the change it waits on was seen; NULL: none), current_at (NULL: never).
SELECT s.client_id,
       s.platform,
       array_position(%(platforms)s::text[], s.platform) AS platform_order,
       s.last_attempt_at,
       s.last_status,
       s.last_error,
       s.consecutive_failures,
       s.last_success_at,
       s.changed_at,
       s.expires_at,
       v.pending,
       coalesce(s.change_pending_at, CASE WHEN v.pending THEN chk.started_at END) AS pending_since,
       c.current_at
FROM refresh_state AS s
-- The latest checking run covering the key: the unsharded one or its shard's. Only with
-- sharded checking runs is each client's shard computed (plan.shard_of).
CROSS JOIN LATERAL (
    SELECT CASE WHEN %(part_count)s::integer IS NOT NULL THEN 1 + mod(
               ('x' || encode(substring(sha256(uuid_send(s.client_id)) FROM 1 FOR 4), 'hex'))
                   ::bit(32)::bigint::numeric * 4294967296
               + ('x' || encode(substring(sha256(uuid_send(s.client_id)) FROM 5 FOR 4), 'hex'))
                   ::bit(32)::bigint,
               %(part_count)s::integer)::integer END AS slot
) AS sh
CROSS JOIN LATERAL (
    SELECT CASE WHEN (%(part_starts)s::timestamptz[])[sh.slot] > %(check_started)s::timestamptz
                     OR %(check_started)s::timestamptz IS NULL
                THEN (%(part_runs)s::uuid[])[sh.slot] ELSE %(check_run)s::uuid END AS run_id,
           greatest(%(check_started)s::timestamptz,
                    (%(part_starts)s::timestamptz[])[sh.slot]) AS started_at
) AS chk
-- The keys the latest checking runs wrote a row for: in a quiet run, the few it refreshed.
LEFT JOIN refresh_jobs AS wr
    ON wr.run_id = ANY(%(check_runs)s::uuid[])
   AND wr.run_id = chk.run_id AND wr.client_id = s.client_id AND wr.platform = s.platform
CROSS JOIN LATERAL (
    SELECT CASE
               -- Confirmed unchanged by the covering run (only a key with a change key can
               -- be; without one, verified_at is its success itself).
               WHEN chk.run_id IS NOT NULL AND wr.run_id IS NULL
                    AND s.last_success_at IS NOT NULL AND s.change_key IS NOT NULL
                   THEN chk.started_at
               WHEN wr.run_id IS NOT NULL THEN NULL
               WHEN s.change_key IS NOT NULL THEN s.verified_at
           END AS confirmed_at,
           wr.run_id IS NOT NULL
               AND NOT coalesce(s.last_success_at >= chk.started_at, false) AS pending
) AS v
-- GREATEST skips NULLs: never current stays NULL.
CROSS JOIN LATERAL (
    SELECT CASE WHEN s.expires_at < greatest(s.last_success_at, v.confirmed_at) THEN s.expires_at
                ELSE greatest(s.last_success_at, v.confirmed_at) END AS current_at
) AS c
WHERE s.platform = ANY(%(platforms)s::text[])
  -- current_by (NULL: any key): only a key current by then at the latest, read from its
  -- row before any join (current_at is at least the earlier of its success and its expiry).
  AND (%(current_by)s::timestamptz IS NULL OR s.last_success_at IS NULL
       OR s.last_success_at <= %(current_by)s::timestamptz
       OR s.expires_at <= %(current_by)s::timestamptz)
  -- plan.shard_of: the first 8 bytes of the SHA-256 of the id's 16 bytes, read as an
  -- unsigned big-endian number (two unsigned halves), modulo the shard count.
  AND (%(shard_count)s::integer IS NULL OR mod(
      ('x' || encode(substring(sha256(uuid_send(s.client_id)) FROM 1 FOR 4), 'hex'))
          ::bit(32)::bigint::numeric * 4294967296
      + ('x' || encode(substring(sha256(uuid_send(s.client_id)) FROM 5 FOR 4), 'hex'))
          ::bit(32)::bigint,
      %(shard_count)s::integer) = %(shard_index)s::integer)
  -- Connected: its platform, or for 'all' any platform, has a connected credential row
  -- (a duplicate row plans no second job, nor counts twice here).
  AND EXISTS (
      SELECT 1 FROM client_api_credentials
      WHERE __CLIENT_ID__ = s.client_id
        AND status = 'connected' AND platform::text IN ('shopify', 'amazon')
        AND (platform::text = s.platform OR s.platform = 'all'))
