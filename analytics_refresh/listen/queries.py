"""Every SQL statement of the listener, by name; values always travel as parameters."""

CHANNEL = "analytics_refresh"
LISTEN = "LISTEN analytics_refresh"
PROBE = "SELECT pg_notify('analytics_refresh', %s)"
REQUEST = "SELECT analytics_refresh_request(%s::uuid, %s::text)"
PING = "SELECT 1"

# Every pending key with how long it has been quiet (since its newest change) and how long
# its first unreflected change has waited, and whether someone holds it now. A key is
# pending while a source row of its client holds a version newer than the one its last
# refresh covered; `all` follows both source platforms. O(rows of refresh_requests).
PENDING = """
    WITH wanted AS (
        SELECT r.client_id, k.platform, r.platform AS source, r.version, r.requested_at,
               r.pending_since
        FROM refresh_requests AS r
        CROSS JOIN LATERAL (VALUES (r.platform), ('all')) AS k (platform)
        WHERE k.platform = ANY (%(platforms)s::text[])
    )
    SELECT w.client_id::text, w.platform,
           extract(epoch FROM now() - max(w.requested_at))::float8 AS quiet_for,
           extract(epoch FROM now() - min(greatest(coalesce(w.pending_since, w.requested_at),
                                                   c.covered_at)))::float8 AS waiting_for,
           extract(epoch FROM max(c.claimed_until) - now())::float8 AS held_for,
           max(c.claimed_by) AS holder
    FROM wanted AS w
    LEFT JOIN refresh_claims AS c ON c.client_id = w.client_id AND c.platform = w.platform
    WHERE w.version > CASE w.source WHEN 'shopify' THEN coalesce(c.covered_shopify, 0)
                                    ELSE coalesce(c.covered_amazon, 0) END
      AND EXISTS (SELECT 1 FROM client_api_credentials AS a
                  WHERE a.client_id = w.client_id AND a.status = 'connected'
                    AND (w.platform = 'all' OR a.platform = w.platform))
    GROUP BY w.client_id, w.platform
"""

# -- claims -----------------------------------------------------------------------------------
ENSURE_ROWS = """
    INSERT INTO refresh_claims (client_id, platform)
    SELECT * FROM unnest(%(clients)s::uuid[], %(platforms)s::text[])
    ON CONFLICT DO NOTHING
"""
# A listener takes each free key that is still pending, skipping rows another holder has
# locked this instant, and reads the versions its refresh will cover.
CLAIM = """
    WITH free AS (
        SELECT c.client_id, c.platform
        FROM refresh_claims AS c
        JOIN unnest(%(clients)s::uuid[], %(platforms)s::text[]) AS w (client_id, platform)
          ON c.client_id = w.client_id AND c.platform = w.platform
        WHERE (c.claimed_until IS NULL OR c.claimed_until < now())
          AND EXISTS (SELECT 1 FROM refresh_requests AS r
                      WHERE r.client_id = c.client_id
                        AND (c.platform = 'all' OR r.platform = c.platform)
                        AND r.version > CASE r.platform WHEN 'shopify' THEN c.covered_shopify
                                                        ELSE c.covered_amazon END)
        FOR UPDATE OF c SKIP LOCKED
    )
    UPDATE refresh_claims AS c
    SET claimed_by = %(holder)s, claimed_until = now() + %(lease)s * interval '1 second'
    FROM free
    WHERE c.client_id = free.client_id AND c.platform = free.platform
    RETURNING c.client_id::text, c.platform, now(),
        (SELECT r.version FROM refresh_requests AS r
         WHERE r.client_id = c.client_id AND r.platform = 'shopify'),
        (SELECT r.version FROM refresh_requests AS r
         WHERE r.client_id = c.client_id AND r.platform = 'amazon')
"""
# A run takes one key unless a live holder has it (a failed key's pause does not stop a
# run, whose schedule says when it is due).
CLAIM_FOR_RUN = """
    INSERT INTO refresh_claims AS c (client_id, platform, claimed_by, claimed_until)
    VALUES (%(client_id)s, %(platform)s, %(holder)s, now() + %(lease)s * interval '1 second')
    ON CONFLICT (client_id, platform) DO UPDATE
        SET claimed_by = excluded.claimed_by, claimed_until = excluded.claimed_until
        WHERE c.claimed_by IS NULL OR c.claimed_until < now() OR c.claimed_by = %(holder)s
    RETURNING now(),
        (SELECT r.version FROM refresh_requests AS r
         WHERE r.client_id = %(client_id)s AND r.platform = 'shopify'),
        (SELECT r.version FROM refresh_requests AS r
         WHERE r.client_id = %(client_id)s AND r.platform = 'amazon')
"""
RENEW = """
    UPDATE refresh_claims SET claimed_until = now() + %(lease)s * interval '1 second'
    WHERE claimed_by = %(holder)s
"""
# How each claimed key ended: a success covers the versions read at its claim; a failure
# pauses the key (doubling, capped) so a failing backend is not called in a loop; a key
# never attempted (a stop) is only let go.
RELEASE = """
    WITH b (client_id, platform, outcome, shopify, amazon, read_at, holder, pause, pause_max)
        AS (VALUES %s)
    UPDATE refresh_claims AS c SET
        claimed_by = NULL,
        claimed_until = CASE WHEN b.outcome = 'failed'
            THEN now() + least(b.pause_max, b.pause * 2 ^ least(c.failures, 16))
                         * interval '1 second' END,
        failures = CASE b.outcome WHEN 'succeeded' THEN 0
                                  WHEN 'failed' THEN c.failures + 1 ELSE c.failures END,
        covered_shopify = CASE WHEN b.outcome = 'succeeded'
            THEN greatest(c.covered_shopify, coalesce(b.shopify, 0)) ELSE c.covered_shopify END,
        covered_amazon = CASE WHEN b.outcome = 'succeeded'
            THEN greatest(c.covered_amazon, coalesce(b.amazon, 0)) ELSE c.covered_amazon END,
        covered_at = CASE WHEN b.outcome = 'succeeded' THEN b.read_at ELSE c.covered_at END
    FROM b
    WHERE c.client_id = b.client_id::uuid AND c.platform = b.platform
      AND c.claimed_by = b.holder
"""
RELEASE_TEMPLATE = (
    "(%s, %s, %s, %s::bigint, %s::bigint, %s::timestamptz, %s, %s::float8, %s::float8)"
)
# A source row's first unreflected change is cleared once every key that follows it has
# covered its version, so the next burst is timed from its own first change.
CLEAR_PENDING = """
    UPDATE refresh_requests AS r SET pending_since = NULL
    WHERE r.client_id = ANY (%(clients)s::uuid[]) AND r.pending_since IS NOT NULL
      AND NOT EXISTS (
          SELECT 1
          FROM unnest(%(platforms)s::text[]) AS k (platform)
          LEFT JOIN refresh_claims AS c ON c.client_id = r.client_id AND c.platform = k.platform
          WHERE k.platform IN (r.platform, 'all')
            AND EXISTS (SELECT 1 FROM client_api_credentials AS a
                        WHERE a.client_id = r.client_id AND a.status = 'connected'
                          AND (k.platform = 'all' OR a.platform = k.platform))
            AND r.version > CASE r.platform WHEN 'shopify' THEN coalesce(c.covered_shopify, 0)
                                            ELSE coalesce(c.covered_amazon, 0) END)
"""
LET_GO = "UPDATE refresh_claims SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = %s"

# -- the listener's own row -------------------------------------------------------------------
REGISTER = """
    INSERT INTO refresh_listeners (listener_id, host, pid, mode) VALUES (%s, %s, %s, %s)
    ON CONFLICT (listener_id) DO UPDATE SET heartbeat_at = now(), stopped_at = NULL
"""
BEAT = """
    UPDATE refresh_listeners SET heartbeat_at = now(), mode = %(mode)s,
                                 refreshes = %(refreshes)s
    WHERE listener_id = %(listener_id)s
"""
STOPPED = (
    "UPDATE refresh_listeners SET stopped_at = now(), heartbeat_at = now() WHERE listener_id = %s"
)
# Rounds of a listener that was killed: nothing renews their lease any more.
ABANDON_ROUNDS = """
    UPDATE refresh_runs SET status = 'abandoned', finished_at = now(),
           note = 'a listener round left running; its lease was no longer renewed'
    WHERE trigger = 'listen' AND status = 'running'
      AND coalesce(heartbeat_at, started_at) < now() - %s * interval '1 second'
"""
LIVE_LISTENERS = """
    SELECT listener_id, host, pid, mode, refreshes, started_at,
           extract(epoch FROM now() - heartbeat_at)::float8
    FROM refresh_listeners
    WHERE stopped_at IS NULL AND heartbeat_at > now() - %s * interval '1 second'
    ORDER BY started_at
"""
PRUNE_LISTENERS = """
    DELETE FROM refresh_listeners WHERE heartbeat_at < now() - interval '7 days'
"""
