-- The change keys of the reference schema (dashboard_api/changes.py explains and measures
-- it): REFRESH_CHANGE_SQL_FILE=dashboard_api/change_keys.sql.
-- The key reads "v<version>/<window end>": the version schema.sql's triggers bump on every
-- insert, update and delete of the key's order lines and stock rows (0: never changed),
-- and the UTC day the answer's window ends on, so that every key changes at midnight UTC,
-- when every dashboard's window moves. One row per connected key: O(keys), not O(rows).
SELECT c.client_id::text AS client_id,
       c.platform,
       'v' || coalesce(r.version, 0)::text || '/'
           || to_char((now() AT TIME ZONE 'UTC')::date, 'YYYY-MM-DD') AS change_key
FROM client_api_credentials AS c
LEFT JOIN refresh_requests AS r
    ON r.client_id = c.client_id AND r.platform = c.platform
WHERE c.status = 'connected'
