"""Every SQL statement the runner sends, each once, by name (the schema is sql/*.sql).

Values always travel as parameters; the only identifiers composed are cache table names,
through ``psycopg2.sql.Identifier`` at the call site.
"""

# -- connections and the schema -----------------------------------------------------------
# A statement's time includes its lock waits, so statement_timeout alone bounds both; a
# shorter statement_timeout or any lock_timeout the database or role sets is kept.
SET_TIMEOUTS = """
    SELECT set_config('statement_timeout',
                      CASE WHEN reset_val::bigint > 0 AND reset_val::bigint < %(ms)s::bigint
                           THEN reset_val ELSE %(ms)s END,
                      false)
    FROM pg_settings WHERE name = 'statement_timeout'
"""
SET_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', %(ms)s, false)"
NO_STATEMENT_TIMEOUT = "SET statement_timeout = 0"
INIT_LOCK = "SELECT pg_advisory_lock(hashtext('analytics-refresh db init'))"
INIT_UNLOCK = "SELECT pg_advisory_unlock(hashtext('analytics-refresh db init'))"
MISSING_TABLES = "SELECT t FROM unnest(%s::text[]) AS t WHERE to_regclass(t) IS NULL"
# pg_attribute, not information_schema: the latter hides columns the role has no privilege
# on, which would call a current table outdated.
MISSING_COLUMNS = """
    SELECT t, c FROM unnest(%s::text[], %s::text[]) AS x(t, c) WHERE NOT EXISTS (
        SELECT 1 FROM pg_attribute
        WHERE attrelid = to_regclass(t) AND attname = c AND NOT attisdropped)
"""
DATABASE_NOW = "SELECT now()"
UTC = "SET TIME ZONE 'UTC'"
SERVER_VERSION = "SHOW server_version"

# -- the plan -------------------------------------------------------------------------------
# Streamed through a server-side cursor: 100,000 clients never sit in memory as rows.
SELECT_CONNECTED = """
    SELECT client_id::text, platform::text
    FROM client_api_credentials
    WHERE status = 'connected'
    ORDER BY client_id::text, platform::text
"""
# The same for the clients given with --client (as 32 hex digits): however the table spells
# an id (upper case, hyphens, braces), a one-client run reads its rows, not 100,000 others'.
SELECT_CONNECTED_OF = """
    SELECT client_id::text, platform::text
    FROM client_api_credentials
    WHERE status = 'connected' AND translate(lower(client_id::text), '{}-', '') = ANY(%s)
    ORDER BY client_id::text, platform::text
"""
CREDENTIAL_STATUSES = """
    SELECT status, count(*) FROM client_api_credentials GROUP BY status ORDER BY status
"""

# -- a run's record -------------------------------------------------------------------------
INSERT_RUN = """
    INSERT INTO refresh_runs (run_id, trigger, host, shard, pid, machine, status, exit_code,
                              note, heartbeat_at, finished_at, lease_seconds, lock_pid)
    VALUES (%(run_id)s, %(trigger)s, %(host)s, %(shard)s, %(pid)s, %(machine)s, %(status)s,
            %(exit_code)s, %(note)s, now(),
            CASE WHEN %(status)s = 'running' THEN NULL ELSE now() END,
            %(lease_seconds)s, %(lock_pid)s)
    ON CONFLICT (run_id) DO NOTHING
"""
RENEW_LEASE = """
    UPDATE refresh_runs SET heartbeat_at = now() WHERE run_id = %(run_id)s AND status = 'running'
"""
# Rows left 'running' that this run's lock says cannot belong to a run holding a lock now:
# an unsharded run holds every lock's ground; a shard's run knows its own shard and every
# other shard count are not running (lock.py). Their lease tells alive from dead, each
# judged by the length it promised (lease_seconds).
RUNNING_ELSEWHERE = """
    SELECT run_id::text, host, pid,
           extract(epoch FROM now() - coalesce(heartbeat_at, started_at))::float8, machine,
           lease_seconds, lock_pid
    FROM refresh_runs
    WHERE status = 'running' AND run_id <> %(run_id)s
      -- A listener's rounds hold no run lock; claims keep them apart from runs instead.
      AND trigger <> 'listen'
      AND (%(shard)s = '' OR shard = %(shard)s OR split_part(shard, '/', 2) <> %(count)s)
"""
# Rows left 'running' whose lock session still lives and holds advisory locks: the runs
# that may be what keeps this run's lock from it (the lock, not the row, says which ground
# it covers, so every shard and layout is a candidate).
LOCK_HOLDERS = """
    SELECT r.run_id::text, r.host, r.pid,
           extract(epoch FROM now() - coalesce(r.heartbeat_at, r.started_at))::float8,
           r.machine, r.lease_seconds, r.lock_pid
    FROM refresh_runs AS r
    JOIN pg_stat_activity AS a ON a.pid = r.lock_pid AND a.datname = current_database()
         AND a.application_name = 'analytics-refresh lock'
    WHERE r.status = 'running' AND r.run_id <> %(run_id)s
      AND EXISTS (SELECT 1 FROM pg_locks AS l
                  WHERE l.pid = r.lock_pid AND l.locktype = 'advisory' AND l.granted)
"""
# Who this run connects as, and who owns a session: what pg_terminate_backend allows.
SESSION_ROLES = """
    SELECT current_user::text, a.usename::text,
           (SELECT rolsuper FROM pg_roles WHERE rolname = a.usename)
    FROM pg_stat_activity AS a WHERE a.pid = %s
"""
TERMINATE = "SELECT pg_terminate_backend(%s)"
CLAIMS_TABLE = "SELECT to_regclass('refresh_claims') IS NOT NULL"
BACKEND_ALIVE = "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = %s)"
MARK_ABANDONED = """
    UPDATE refresh_runs SET status = 'abandoned', finished_at = now(), note = %(note)s
    WHERE run_id = %(run_id)s AND status = 'running'
"""
INSERT_PLANNED_JOBS = """
    INSERT INTO refresh_jobs (run_id, client_id, platform, status) VALUES %s
    ON CONFLICT DO NOTHING
"""
# A batch of finished jobs: their refresh_jobs rows and their keys' refresh_state rows in
# one statement, hence one transaction. A skipped job changes no state.
FINISH_JOBS = """
    WITH batch (run_id, client_id, platform, status, attempts, http_status, duration_ms,
                platform_count, sku_count, error, change_key, expires_at, change_at)
        AS (VALUES %s),
    jobs AS (
        UPDATE refresh_jobs AS j
        SET status = b.status, attempts = b.attempts, http_status = b.http_status,
            duration_ms = b.duration_ms, platform_count = b.platform_count,
            sku_count = b.sku_count, error = b.error, finished_at = now(),
            expires_at = CASE WHEN b.status = 'succeeded' THEN b.expires_at END,
            -- A change first seen by an earlier run whose refresh failed counts from then.
            change_at = CASE WHEN b.status = 'succeeded' THEN coalesce(
                (SELECT p.change_pending_at FROM refresh_state AS p
                 WHERE p.client_id = b.client_id AND p.platform = b.platform),
                b.change_at) END,
            -- The key's success before this one (-infinity: none) and that copy's expiry,
            -- as the state had them before this statement: the freshness report reads
            -- each gap between refreshes from one row. A row written again (a lost
            -- acknowledgement) keeps what its first write found.
            prev_success_at = CASE WHEN j.status = 'not_attempted'
                                   THEN coalesce(s.last_success_at, '-infinity')
                                   ELSE j.prev_success_at END,
            prev_expires_at = CASE WHEN j.status = 'not_attempted' THEN s.expires_at
                                   ELSE j.prev_expires_at END
        FROM batch AS b
        LEFT JOIN refresh_state AS s ON s.client_id = b.client_id AND s.platform = b.platform
        WHERE j.run_id = b.run_id AND j.client_id = b.client_id AND j.platform = b.platform
    )
    INSERT INTO refresh_state AS s (
        client_id, platform, last_run_id, last_attempt_at, last_status, last_http_status,
        last_error, consecutive_failures, last_success_at, last_success_run_id,
        last_duration_ms, last_platform_count, last_sku_count, change_key, changed_at,
        verified_at, expires_at, change_pending_at)
    SELECT b.client_id, b.platform, b.run_id, now(), b.status, b.http_status, b.error,
           CASE WHEN b.status = 'failed' THEN 1 ELSE 0 END,
           CASE WHEN b.status = 'succeeded' THEN now() END,
           CASE WHEN b.status = 'succeeded' THEN b.run_id END,
           CASE WHEN b.status = 'succeeded' THEN b.duration_ms END,
           CASE WHEN b.status = 'succeeded' THEN b.platform_count END,
           CASE WHEN b.status = 'succeeded' THEN b.sku_count END,
           CASE WHEN b.status = 'succeeded' THEN b.change_key END,
           CASE WHEN b.status = 'succeeded' AND b.change_key IS NOT NULL THEN now() END,
           CASE WHEN b.status = 'succeeded' THEN now() END,
           CASE WHEN b.status = 'succeeded' THEN b.expires_at END,
           CASE WHEN b.status = 'failed' THEN b.change_at END
    FROM batch AS b
    -- A run marked abandoned (it lost its lease) no longer speaks for the keys.
    WHERE b.status IN ('succeeded', 'failed')
      AND EXISTS (SELECT 1 FROM refresh_runs AS r
                  WHERE r.run_id = b.run_id AND r.status = 'running')
    ON CONFLICT (client_id, platform) DO UPDATE SET
        last_run_id = excluded.last_run_id,
        last_attempt_at = excluded.last_attempt_at,
        last_status = excluded.last_status,
        last_http_status = excluded.last_http_status,
        last_error = excluded.last_error,
        -- Written again after a lost acknowledgement, a run's row counts once.
        consecutive_failures = CASE
            WHEN excluded.last_status <> 'failed' THEN 0
            WHEN s.last_run_id = excluded.last_run_id THEN s.consecutive_failures
            ELSE s.consecutive_failures + 1 END,
        last_success_at = coalesce(excluded.last_success_at, s.last_success_at),
        last_success_run_id = coalesce(excluded.last_success_run_id, s.last_success_run_id),
        last_duration_ms = CASE WHEN excluded.last_status = 'succeeded'
                                THEN excluded.last_duration_ms ELSE s.last_duration_ms END,
        last_platform_count = CASE WHEN excluded.last_status = 'succeeded'
                                   THEN excluded.last_platform_count
                                   ELSE s.last_platform_count END,
        last_sku_count = CASE WHEN excluded.last_status = 'succeeded'
                              THEN excluded.last_sku_count ELSE s.last_sku_count END,
        change_key = CASE WHEN excluded.last_status = 'succeeded' THEN excluded.change_key
                          ELSE s.change_key END,
        changed_at = CASE
            WHEN excluded.last_status <> 'succeeded' OR excluded.change_key IS NULL
                THEN s.changed_at
            WHEN s.change_key IS DISTINCT FROM excluded.change_key
                 AND s.last_success_run_id IS DISTINCT FROM excluded.last_run_id THEN now()
            ELSE s.changed_at END,
        verified_at = coalesce(excluded.verified_at, s.verified_at),
        -- A backend that stops declaring an expiry is believed: NULL again.
        expires_at = CASE WHEN excluded.last_status = 'succeeded' THEN excluded.expires_at
                          ELSE s.expires_at END,
        change_pending_at = CASE WHEN excluded.last_status = 'succeeded' THEN NULL
                                 ELSE coalesce(s.change_pending_at,
                                               excluded.change_pending_at) END
"""
FINISH_JOBS_TEMPLATE = (
    "(%s::uuid, %s::uuid, %s::text, %s::text, %s::integer, %s::integer, %s::integer, %s::integer, "
    "%s::integer, %s::text, %s::text, %s::timestamptz, %s::timestamptz)"
)
FINISH_RUN = """
    UPDATE refresh_runs
    SET status = %(status)s, exit_code = %(exit_code)s, finished_at = now(), note = %(note)s,
        jobs_total = %(total)s, jobs_succeeded = %(succeeded)s, jobs_failed = %(failed)s,
        jobs_not_attempted = %(not_attempted)s, jobs_skipped = %(skipped)s,
        jobs_unchanged = %(unchanged)s, jobs_changed = %(changed)s, jobs_due = %(due)s,
        jobs_expiring = %(expiring)s, checked_changes = %(checked_changes)s,
        concurrency_limit = %(concurrency_limit)s, heartbeat_at = now()
    WHERE run_id = %(run_id)s AND status = 'running'
"""
# Where the adaptive limit settled in the last run of this shard that did its jobs.
LEARNED_LIMIT = """
    SELECT concurrency_limit FROM refresh_runs
    WHERE shard = %s AND status IN ('succeeded', 'partial') AND concurrency_limit IS NOT NULL
    ORDER BY started_at DESC LIMIT 1
"""

# -- reading the record ---------------------------------------------------------------------
# With when the run of each key's last success started: change detection judges a key due
# by when its last refresh was planned, not when that job happened to end.
KEY_STATES = """
    SELECT s.client_id::text, s.platform, s.last_attempt_at, s.last_status, s.last_error,
           s.last_http_status, s.consecutive_failures, s.last_success_at, s.last_duration_ms,
           s.change_key, s.changed_at, s.verified_at, r.started_at, s.expires_at
    FROM refresh_state AS s
    LEFT JOIN refresh_runs AS r ON r.run_id = s.last_success_run_id
"""
# The same, for the keys of a small plan (a one-client run need not read 300,000 rows).
KEY_STATES_OF = (
    KEY_STATES
    + """
    JOIN unnest(%s::uuid[], %s::text[]) AS k(client_id, platform)
      ON k.client_id = s.client_id AND k.platform = s.platform
"""
)
# The latest finished run of each shard label that read the change keys of its whole shard:
# every key of that shard it wrote no row for was found unchanged when it started.
CHECKING_RUNS = """
    SELECT DISTINCT ON (shard) run_id::text, shard, started_at
    FROM refresh_runs
    WHERE checked_changes AND status <> 'running'
    ORDER BY shard, started_at DESC
"""
RUN_KEYS = """
    SELECT client_id::text, platform FROM refresh_jobs WHERE run_id = %s::uuid
"""
# How long this shard's recent runs took: part of the lead a copy is refreshed ahead with.
RECENT_RUN_SECONDS = """
    SELECT max(extract(epoch FROM finished_at - started_at))::float8
    FROM (SELECT started_at, finished_at FROM refresh_runs
          -- An abandoned run's end is when another run noticed it, not how long it ran.
          WHERE shard = %s AND finished_at IS NOT NULL
            AND status NOT IN ('skipped', 'abandoned')
          ORDER BY started_at DESC LIMIT 5) AS recent
"""
RECENT_RUNS = """
    SELECT run_id::text, trigger, host, shard, started_at, finished_at, status, exit_code,
           jobs_total, jobs_succeeded, jobs_failed, jobs_not_attempted, jobs_skipped, note,
           jobs_unchanged, checked_changes
    FROM refresh_runs
    WHERE trigger <> 'listen'  -- a listener's rounds are shown as its refresh count
    ORDER BY started_at DESC
    LIMIT %s
"""
LAST_SUCCESSFUL_RUN = """
    SELECT extract(epoch FROM max(finished_at))::float8
    FROM refresh_runs
    WHERE status = 'succeeded' AND shard = %s AND trigger <> 'listen'
"""
RUN_STARTED = "SELECT started_at FROM refresh_runs WHERE run_id = %s"

# -- pruning (bounded batches: each statement holds its row locks briefly) ------------------
PRUNE_CANDIDATES = """
    SELECT run_id FROM refresh_runs
    WHERE status <> 'running' AND finished_at < now() - make_interval(days => %(days)s)
    ORDER BY finished_at
    LIMIT %(limit)s
"""
PRUNE_JOBS = """
    DELETE FROM refresh_jobs
    WHERE (run_id, client_id, platform) IN (
        SELECT run_id, client_id, platform FROM refresh_jobs
        WHERE run_id = ANY(%(ids)s::uuid[])
        LIMIT %(limit)s)
"""
PRUNE_RUNS = """
    DELETE FROM refresh_runs WHERE run_id = ANY(%(ids)s::uuid[]) AND status <> 'running'
"""

# -- the application's cache tables (manual run, demo) --------------------------------------
TABLE_EXISTS = "SELECT to_regclass(%s) IS NOT NULL"
NEWEST_CACHE_ROWS = """
    SELECT platform, max(computed_at) FILTER (WHERE computed_at >= %(since)s), max(computed_at)
    FROM {table}
    WHERE platform = ANY(%(platforms)s)
    GROUP BY platform
"""
COUNT_FRESH_CACHE_ROWS = "SELECT count(*) FROM {table} WHERE computed_at >= to_timestamp(%s)"
# What `db seed` loaded: the sample clients' order lines.
COUNT_CLIENT_ORDER_LINES = "SELECT count(*) FROM order_lines WHERE client_id = ANY (%s::uuid[])"
