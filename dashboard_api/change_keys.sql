-- The change keys of the reference schema (dashboard_api/changes.py explains and measures
-- it): REFRESH_CHANGE_SQL_FILE=dashboard_api/change_keys.sql.
-- The key reads "<newest order line>/<newest stock row>", UTC, to the microsecond; a side
-- with no rows is empty. Written out in UTC so that the session's time zone never changes it.
SELECT c.client_id::text AS client_id,
       c.platform,
       coalesce(o.changed_at, '') || '/' || coalesce(i.changed_at, '') AS change_key
FROM client_api_credentials AS c
CROSS JOIN LATERAL (
    SELECT to_char(max(l.updated_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    FROM order_lines AS l
    WHERE l.client_id = c.client_id AND l.platform = c.platform
) AS o (changed_at)
CROSS JOIN LATERAL (
    SELECT to_char(max(s.updated_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    FROM inventory_items AS s
    WHERE s.client_id = c.client_id AND s.platform = c.platform
) AS i (changed_at)
WHERE c.status = 'connected'
