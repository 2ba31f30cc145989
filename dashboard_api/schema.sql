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
    ordered_at  timestamptz NOT NULL
);

-- The analytics read one client's platforms over a time window and nothing else. Keyed in
-- this order, the index hands the lines over grouped by order (an order's lines share its
-- ordered_at), and the included columns let the read come from the index alone once the
-- table is vacuumed.
CREATE INDEX IF NOT EXISTS order_lines_window_idx
    ON order_lines (client_id, platform, ordered_at, order_id)
    INCLUDE (sku, quantity, unit_price);
