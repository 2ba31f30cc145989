-- One client's inventory dashboard over a window, in two passes over its order lines.
-- Parameters: client_id, platforms (text[]), previous_start, current_start, end_at
-- (timestamptz), first_day, last_day (date), days, low_stock_days, overstock_days.
-- Answers one row: per-platform totals and the daily series (JSON), the SKU list (JSON
-- text, passed on without parsing) and its length.

WITH orders AS (
    -- Pass 1 (both periods): one row per order. The lines of an order carry the order's
    -- ordered_at, so grouping in index order (platform, ordered_at, order_id) streams
    -- without hashing or sorting hundreds of thousands of order ids.
    SELECT platform, ordered_at, order_id,
           sum(quantity) AS units,
           sum(quantity * unit_price) AS sales
    FROM order_lines
    WHERE client_id = %(client_id)s
      AND platform = ANY (%(platforms)s)
      AND ordered_at >= %(previous_start)s
      AND ordered_at < %(end_at)s
    GROUP BY platform, ordered_at, order_id
),
daily AS (
    SELECT platform,
           (ordered_at AT TIME ZONE 'UTC')::date AS day,
           count(*) AS orders,
           sum(units) AS units,
           sum(sales) AS sales
    FROM orders
    GROUP BY 1, 2
),
sku_sales AS (
    -- Pass 2 (current period only): what each SKU sold.
    SELECT platform, sku,
           sum(quantity) AS units,
           sum(quantity * unit_price) AS sales
    FROM order_lines
    WHERE client_id = %(client_id)s
      AND platform = ANY (%(platforms)s)
      AND ordered_at >= %(current_start)s
      AND ordered_at < %(end_at)s
    GROUP BY platform, sku
),
skus AS (
    -- Every SKU in stock or sold. A SKU sold but missing from the catalogue has no stock
    -- and no known cost, so it adds nothing to stock value or cost of goods sold.
    SELECT platform, sku,
           coalesce(i.title, '') AS title,
           coalesce(s.units, 0) AS units,
           coalesce(s.sales, 0) AS sales,
           coalesce(i.on_hand, 0) AS on_hand,
           coalesce(i.on_hand * i.unit_cost, 0) AS stock_value,
           coalesce(s.units * i.unit_cost, 0) AS cogs,
           coalesce(i.on_hand, 0) * %(days)s::numeric / nullif(s.units, 0) AS cover
    FROM (
        SELECT platform, sku, title, on_hand, unit_cost
        FROM inventory_items
        WHERE client_id = %(client_id)s AND platform = ANY (%(platforms)s)
    ) AS i
    FULL JOIN sku_sales AS s USING (platform, sku)
),
rated AS (
    SELECT *,
           CASE
               WHEN on_hand = 0 THEN 'out_of_stock'
               WHEN units = 0 THEN 'dead_stock'
               WHEN cover < %(low_stock_days)s THEN 'low_stock'
               WHEN cover > %(overstock_days)s THEN 'overstock'
               ELSE 'healthy'
           END AS status
    FROM skus
),
stock AS (
    SELECT platform,
           sum(on_hand) AS inventory_units,
           sum(stock_value) AS inventory_value,
           sum(cogs) AS cogs,
           jsonb_object_agg(status, n) AS statuses
    FROM (
        SELECT platform, status,
               sum(on_hand) AS on_hand, sum(stock_value) AS stock_value,
               sum(cogs) AS cogs, count(*) AS n
        FROM rated
        GROUP BY platform, status
    ) AS by_status
    GROUP BY platform
),
sold AS (
    SELECT platform,
           sum(sales) FILTER (WHERE day >= %(first_day)s) AS sales,
           sum(units) FILTER (WHERE day >= %(first_day)s) AS units,
           sum(orders) FILTER (WHERE day >= %(first_day)s) AS orders,
           sum(sales) FILTER (WHERE day < %(first_day)s) AS previous_sales,
           sum(units) FILTER (WHERE day < %(first_day)s) AS previous_units,
           sum(orders) FILTER (WHERE day < %(first_day)s) AS previous_orders
    FROM daily
    GROUP BY platform
)
SELECT
    (
        SELECT json_agg(json_build_object(
                   'platform', p.platform,
                   'sales', coalesce(sold.sales, 0),
                   'units', coalesce(sold.units, 0),
                   'orders', coalesce(sold.orders, 0),
                   'previous_sales', coalesce(sold.previous_sales, 0),
                   'previous_units', coalesce(sold.previous_units, 0),
                   'previous_orders', coalesce(sold.previous_orders, 0),
                   'inventory_units', coalesce(stock.inventory_units, 0),
                   'inventory_value', coalesce(stock.inventory_value, 0),
                   'cogs', coalesce(stock.cogs, 0),
                   'statuses', coalesce(stock.statuses, '{}'::jsonb)
               ) ORDER BY p.platform)
        FROM unnest(%(platforms)s::text[]) AS p (platform)
        LEFT JOIN sold USING (platform)
        LEFT JOIN stock USING (platform)
    ) AS platforms,
    (
        SELECT json_agg(json_build_object(
                   'date', d.day::date,
                   'sales', coalesce(t.sales, 0),
                   'units', coalesce(t.units, 0),
                   'orders', coalesce(t.orders, 0)
               ) ORDER BY d.day)
        FROM generate_series(%(first_day)s::date, %(last_day)s::date, interval '1 day')
             AS d (day)
        LEFT JOIN (
            SELECT day, sum(sales) AS sales, sum(units) AS units, sum(orders) AS orders
            FROM daily
            GROUP BY day
        ) AS t ON t.day = d.day::date
    ) AS daily,
    (
        -- A record's columns become the object's keys (faster than json_build_object).
        SELECT coalesce(json_agg(s ORDER BY s.sales DESC, s.units_sold DESC, s.platform, s.sku),
                        '[]')::text
        FROM (
            SELECT platform, sku, title,
                   units AS units_sold,
                   sales,
                   on_hand AS stock_on_hand,
                   stock_value,
                   round(cover, 1) AS days_of_cover,
                   status
            FROM rated
        ) AS s
    ) AS skus,
    (SELECT count(*) FROM rated) AS sku_count
