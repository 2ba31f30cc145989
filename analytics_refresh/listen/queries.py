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
           max(c.claimed_by) AS holder,
           min(greatest(coalesce(w.pending_since, w.requested_at), c.covered_at)) AS first_at
    FROM wanted AS w
    LEFT JOIN refresh_claims AS c ON c.client_id = w.client_id AND c.platform = w.platform
    WHERE w.version > CASE w.source WHEN 'shopify' THEN coalesce(c.covered_shopify, 0)
                                    ELSE coalesce(c.covered_amazon, 0) END
      AND EXISTS (SELECT 1
                  FROM (SELECT __CLIENT_ID__ AS client_id, platform, status
                        FROM client_api_credentials) AS a
                  WHERE a.client_id = w.client_id AND a.status = 'connected'
                    AND (w.platform = 'all' OR a.platform = w.platform))
    GROUP BY w.client_id, w.platform
"""

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
