-- The reference application's tables. Idempotent: `analytics-refresh db init --with-api-schema`
-- runs it. The refresh runner only reads client_api_credentials.

CREATE TABLE IF NOT EXISTS client_api_credentials (
    id          bigserial PRIMARY KEY,
    client_id   uuid NOT NULL,
    platform    text NOT NULL CHECK (platform IN ('shopify', 'amazon')),
    status      text NOT NULL DEFAULT 'connected',
    credentials jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (client_id, platform)
);

CREATE INDEX IF NOT EXISTS client_api_credentials_connected_idx
    ON client_api_credentials (client_id) WHERE status = 'connected';

-- The stock each client holds on each platform now: one row per SKU.
CREATE TABLE IF NOT EXISTS inventory_items (
    client_id   uuid NOT NULL,
    platform    text NOT NULL CHECK (platform IN ('shopify', 'amazon')),
    sku         text NOT NULL,
    title       text NOT NULL DEFAULT '',
    on_hand     integer NOT NULL DEFAULT 0 CHECK (on_hand >= 0),
    unit_cost   numeric(12, 2) NOT NULL DEFAULT 0 CHECK (unit_cost >= 0),
    unit_price  numeric(12, 2) NOT NULL DEFAULT 0 CHECK (unit_price >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- Also the index the analytics read a client's catalogue through.
    PRIMARY KEY (client_id, platform, sku)
);

-- What each client sold: one row per SKU of an order. Every line of an order carries the
-- order's own ordered_at.
CREATE TABLE IF NOT EXISTS order_lines (
    client_id   uuid NOT NULL,
    platform    text NOT NULL CHECK (platform IN ('shopify', 'amazon')),
    order_id    text NOT NULL,
    sku         text NOT NULL,
    quantity    integer NOT NULL CHECK (quantity > 0),
    unit_price  numeric(12, 2) NOT NULL CHECK (unit_price >= 0),
    ordered_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The analytics read one client's platforms over a time window and nothing else. Keyed in
-- this order, the index hands the lines over grouped by order (an order's lines share its
-- ordered_at), and the included columns let the read come from the index alone once the
-- table is vacuumed.
CREATE INDEX IF NOT EXISTS order_lines_window_idx
    ON order_lines (client_id, platform, ordered_at, order_id)
    INCLUDE (sku, quantity, unit_price);

-- When each row was last written, for change detection (dashboard_api/changes.py). Older
-- installs get the column here; existing rows take the time of this upgrade (a constant
-- default: no table rewrite). Looked up first: ALTER TABLE locks the table out even when
-- IF NOT EXISTS finds the column, and the API may be reading it.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_attribute
        WHERE attrelid = 'order_lines'::regclass AND attname = 'updated_at' AND NOT attisdropped
    ) THEN
        ALTER TABLE order_lines
            ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_attribute
        WHERE attrelid = 'inventory_items'::regclass AND attname = 'updated_at'
            AND NOT attisdropped
    ) THEN
        ALTER TABLE inventory_items
            ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();
    END IF;
END
$$;

-- An UPDATE that does not set updated_at itself gets the time of the change.
CREATE OR REPLACE FUNCTION dashboard_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;

DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['order_lines', 'inventory_items'] LOOP
        IF NOT EXISTS (
            SELECT 1 FROM pg_trigger
            WHERE tgrelid = name::regclass AND tgname = name || '_touch_updated_at'
        ) THEN
            EXECUTE format(
                'CREATE TRIGGER %I BEFORE UPDATE ON %I FOR EACH ROW'
                ' EXECUTE FUNCTION dashboard_touch_updated_at()',
                name || '_touch_updated_at', name
            );
        END IF;
    END LOOP;
END
$$;

-- change record: begin (the same text in analytics_refresh/sql/runner_schema.sql and
-- dashboard_api/schema.sql, whichever is installed first creates it)
-- One row per client x platform whose data changed: a version bumped by every change (by
-- the application's triggers, or by its loader through analytics_refresh_request()), so a
-- change key built on it moves on deletes and on late commits alike. The row lock of the
-- upsert orders the bumps of one key by commit, and keys are compared for equality only.
CREATE TABLE IF NOT EXISTS refresh_requests (
    client_id      uuid NOT NULL,
    platform       text NOT NULL CHECK (platform IN ('shopify', 'amazon')),
    version        bigint NOT NULL DEFAULT 0,
    requested_at   timestamptz NOT NULL DEFAULT now(),  -- the newest change
    pending_since  timestamptz,  -- the first change not yet reflected, or NULL
    PRIMARY KEY (client_id, platform)
);

-- Record a change of one key (or, with no platform, of every platform of the client) and
-- wake any listener. Keys are locked in a fixed order, so two statements touching the same
-- keys wait for each other instead of deadlocking.
CREATE OR REPLACE FUNCTION analytics_refresh_request(client_id uuid, platform text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql AS $request$
BEGIN
    IF client_id IS NULL THEN
        RAISE EXCEPTION 'analytics_refresh_request: client_id must not be NULL';
    END IF;
    IF platform IS NOT NULL AND platform NOT IN ('shopify', 'amazon') THEN
        RAISE EXCEPTION 'analytics_refresh_request: platform must be shopify, amazon or NULL, not %',
            platform;
    END IF;
    INSERT INTO refresh_requests AS r (client_id, platform, version, requested_at, pending_since)
    SELECT analytics_refresh_request.client_id, p, 1, now(), now()
    FROM unnest(CASE WHEN analytics_refresh_request.platform IS NULL
                     THEN ARRAY['amazon', 'shopify']
                     ELSE ARRAY[analytics_refresh_request.platform] END) AS p
    ORDER BY p
    ON CONFLICT ON CONSTRAINT refresh_requests_pkey DO UPDATE SET
        version = r.version + 1,
        requested_at = now(),
        pending_since = coalesce(r.pending_since, now());
    PERFORM pg_notify('analytics_refresh', analytics_refresh_request.client_id::text || ':'
                      || coalesce(analytics_refresh_request.platform, '*'));
END
$request$;
-- change record: end

-- Every change of the rows a dashboard is computed from bumps its key's version in
-- refresh_requests, once per statement and distinct (client_id, platform) it touched,
-- whatever the statement (an insert, an update, a delete; one row or a million; a
-- TRUNCATE, which names no rows, bumps every platform of every client). The change query (change_keys.sql) reads those versions; a listener is woken by them.
-- Statement-level with transition tables: one trigger per event, as PostgreSQL requires.
CREATE OR REPLACE FUNCTION dashboard_request_refresh() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    k record;
BEGIN
    IF TG_OP = 'INSERT' THEN
        FOR k IN SELECT DISTINCT client_id, platform FROM new_rows ORDER BY 1, 2 LOOP
            PERFORM analytics_refresh_request(k.client_id, k.platform);
        END LOOP;
    ELSIF TG_OP = 'UPDATE' THEN
        -- A row moved to another client or platform changes both keys.
        FOR k IN SELECT client_id, platform FROM old_rows
                 UNION SELECT client_id, platform FROM new_rows ORDER BY 1, 2 LOOP
            PERFORM analytics_refresh_request(k.client_id, k.platform);
        END LOOP;
    ELSIF TG_OP = 'DELETE' THEN
        FOR k IN SELECT DISTINCT client_id, platform FROM old_rows ORDER BY 1, 2 LOOP
            PERFORM analytics_refresh_request(k.client_id, k.platform);
        END LOOP;
    ELSE
        -- TRUNCATE names no rows: every client's every platform may have lost some.
        FOR k IN SELECT DISTINCT client_id FROM client_api_credentials ORDER BY 1 LOOP
            PERFORM analytics_refresh_request(k.client_id);
        END LOOP;
    END IF;
    RETURN NULL;
END
$$;

DO $$
DECLARE
    name text;
    event text;
    referencing text;
BEGIN
    FOREACH name IN ARRAY ARRAY['order_lines', 'inventory_items'] LOOP
        FOREACH event IN ARRAY ARRAY['insert', 'update', 'delete', 'truncate'] LOOP
            IF NOT EXISTS (
                SELECT 1 FROM pg_trigger
                WHERE tgrelid = name::regclass AND tgname = name || '_request_refresh_' || event
            ) THEN
                referencing := CASE event
                    WHEN 'insert' THEN 'REFERENCING NEW TABLE AS new_rows'
                    WHEN 'update' THEN 'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows'
                    WHEN 'delete' THEN 'REFERENCING OLD TABLE AS old_rows'
                    ELSE '' END;
                EXECUTE format(
                    'CREATE TRIGGER %I AFTER %s ON %I %s'
                    ' FOR EACH STATEMENT EXECUTE FUNCTION dashboard_request_refresh()',
                    name || '_request_refresh_' || event, upper(event), name, referencing
                );
            END IF;
        END LOOP;
    END LOOP;
END
$$;

-- The change query reads the newest updated_at per client and platform: one descent of
-- these indexes per key, however many rows the key has.
CREATE INDEX IF NOT EXISTS order_lines_changed_idx
    ON order_lines (client_id, platform, updated_at);
CREATE INDEX IF NOT EXISTS inventory_items_changed_idx
    ON inventory_items (client_id, platform, updated_at);
