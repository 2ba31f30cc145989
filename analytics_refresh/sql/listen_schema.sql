-- The listeners' tables (`analytics-refresh listen`). Idempotent, run by `db init` after
-- runner_schema.sql, whose refresh_requests holds the durable per-key change record.

-- The per-key change record, until runner_schema.sql carries it.
CREATE TABLE IF NOT EXISTS refresh_requests (
    client_id      uuid NOT NULL,
    platform       text NOT NULL CHECK (platform IN ('shopify', 'amazon')),
    version        bigint NOT NULL DEFAULT 0,
    requested_at   timestamptz NOT NULL DEFAULT now(),
    pending_since  timestamptz,
    PRIMARY KEY (client_id, platform)
);
CREATE OR REPLACE FUNCTION analytics_refresh_request(client_id uuid, platform text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO refresh_requests AS r (client_id, platform, version, requested_at, pending_since)
    SELECT $1, p, 1, now(), now()
    FROM unnest(CASE WHEN $2 IS NULL THEN ARRAY['shopify', 'amazon'] ELSE ARRAY[$2] END) AS p
    ON CONFLICT ON CONSTRAINT refresh_requests_pkey DO UPDATE
        SET version = r.version + 1, requested_at = now(),
            pending_since = coalesce(r.pending_since, now());
    PERFORM pg_notify('analytics_refresh', $1::text || ':' || coalesce($2, '*'));
END
$fn$;

-- One row per key a listener or a run has claimed: who holds it and until when (a lease a
-- live holder renews every few seconds, so a killed one's keys free themselves), and the
-- change versions its last refresh covered. The 'all' key covers both source platforms.
CREATE TABLE IF NOT EXISTS refresh_claims (
    client_id        uuid NOT NULL,
    platform         text NOT NULL CHECK (platform IN ('shopify', 'amazon', 'all')),
    covered_shopify  bigint NOT NULL DEFAULT 0,
    covered_amazon   bigint NOT NULL DEFAULT 0,
    -- When the versions covered were read: the refresh that covered them began after.
    covered_at       timestamptz,
    claimed_by       text,
    -- Until when the holder's claim holds; after a failed refresh, the time before which no
    -- one tries the key again (claimed_by is then NULL).
    claimed_until    timestamptz,
    failures         integer NOT NULL DEFAULT 0,
    PRIMARY KEY (client_id, platform)
);

-- One row per listener process: status lists the live ones (heartbeat_at recent).
CREATE TABLE IF NOT EXISTS refresh_listeners (
    listener_id   text PRIMARY KEY,
    host          text NOT NULL,
    pid           integer,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    stopped_at    timestamptz,
    -- 'notify' while LISTEN works, 'poll' where it does not (a pooler in transaction mode).
    mode          text NOT NULL DEFAULT 'notify',
    refreshes     bigint NOT NULL DEFAULT 0
);
