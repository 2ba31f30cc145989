-- The keys a run would plan now that refresh_state has no row for: connected, never
-- refreshed (a client just connected, or a platform just added). Usually none. The
-- complement of key_freshness.sql, with its parameters (platforms, shard_index,
-- shard_count) and its reading of the credentials (__CLIENT_ID__), over
-- the connected rows of connected_credentials.sql.
-- Columns: client_id, platform, platform_order.
WITH connected AS NOT MATERIALIZED (__CONNECTED__)
-- Anti-joins over the credential rows as they are; only the few keys found are made
-- distinct (a duplicate row, or a client's two platforms for its 'all').
SELECT DISTINCT k.client_id, k.platform,
       array_position(%(platforms)s::text[], k.platform) AS platform_order
FROM (
    SELECT c.client_id, c.platform FROM connected AS c
    WHERE c.platform = ANY(%(platforms)s::text[])
      AND NOT EXISTS (SELECT 1 FROM refresh_state AS s
                      WHERE s.client_id = c.client_id AND s.platform = c.platform)
    UNION ALL
    SELECT c.client_id, 'all' FROM connected AS c
    WHERE 'all' = ANY(%(platforms)s::text[])
      AND NOT EXISTS (SELECT 1 FROM refresh_state AS s
                      WHERE s.client_id = c.client_id AND s.platform = 'all')
) AS k
