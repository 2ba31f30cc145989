-- The listeners' tables (`analytics-refresh listen`). Idempotent, run by `db init` after
-- runner_schema.sql, whose refresh_requests holds the durable per-key change record.

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
