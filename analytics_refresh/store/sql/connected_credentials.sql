-- The connected credential rows of the clients in the shard, as they are (a duplicate row
-- stays): client_id (a uuid; NULL for an id that is none) and platform. missing_keys.sql
-- and key_freshness.CONNECTED read it; __CLIENT_ID__ is how the credentials' id is read.
-- Parameters: shard_index, shard_count integer (NULL: unsharded).
SELECT client_id, platform FROM (
    SELECT __CLIENT_ID__ AS client_id, platform::text AS platform
    FROM client_api_credentials
    WHERE status = 'connected' AND platform::text IN ('shopify', 'amazon')
) AS c
WHERE client_id IS NOT NULL
  -- plan.shard_of, as key_freshness.sql reads it.
  AND (%(shard_count)s::integer IS NULL OR mod(
          ('x' || encode(substring(sha256(uuid_send(client_id)) FROM 1 FOR 4), 'hex'))
              ::bit(32)::bigint::numeric * 4294967296
          + ('x' || encode(substring(sha256(uuid_send(client_id)) FROM 5 FOR 4), 'hex'))
              ::bit(32)::bigint,
          %(shard_count)s::integer) = %(shard_index)s::integer)
