-- The runner's own tables. Idempotent: `analytics-refresh db init` runs it on every upgrade.

CREATE TABLE IF NOT EXISTS refresh_runs (
    run_id              uuid PRIMARY KEY,
    trigger             text NOT NULL,
    host                text NOT NULL,
    started_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz,
    status              text NOT NULL CHECK (status IN (
                            'running', 'succeeded', 'partial', 'failed',
                            'interrupted', 'skipped', 'abandoned')),
    exit_code           integer,
    jobs_total          integer NOT NULL DEFAULT 0,
    jobs_succeeded      integer NOT NULL DEFAULT 0,
    jobs_failed         integer NOT NULL DEFAULT 0,
    jobs_not_attempted  integer NOT NULL DEFAULT 0
);

-- Columns added after the first release; ADD COLUMN IF NOT EXISTS keeps init idempotent.
ALTER TABLE refresh_runs ADD COLUMN IF NOT EXISTS jobs_skipped integer NOT NULL DEFAULT 0;
-- '' for an unsharded run, else 'INDEX/COUNT': each shard has its own lock and history.
ALTER TABLE refresh_runs ADD COLUMN IF NOT EXISTS shard text NOT NULL DEFAULT '';
ALTER TABLE refresh_runs ADD COLUMN IF NOT EXISTS pid integer;
-- Why a run ended the way it did (interrupted by SIGTERM, deadline, lock lost...).
ALTER TABLE refresh_runs ADD COLUMN IF NOT EXISTS note text;

CREATE INDEX IF NOT EXISTS refresh_runs_started_idx ON refresh_runs (started_at DESC);
CREATE INDEX IF NOT EXISTS refresh_runs_running_idx ON refresh_runs (shard) WHERE status = 'running';

CREATE TABLE IF NOT EXISTS refresh_jobs (
    run_id          uuid NOT NULL REFERENCES refresh_runs (run_id) ON DELETE CASCADE,
    client_id       uuid NOT NULL,
    platform        text NOT NULL CHECK (platform IN ('shopify', 'amazon', 'all')),
    status          text NOT NULL CHECK (status IN (
                        'succeeded', 'failed', 'not_attempted', 'skipped')),
    attempts        integer NOT NULL DEFAULT 0,
    http_status     integer,
    duration_ms     integer,
    platform_count  integer,
    sku_count       integer,
    error           text,
    finished_at     timestamptz,
    PRIMARY KEY (run_id, client_id, platform)
);

-- Per-key questions read refresh_state now; this index only cost every successful write.
DROP INDEX IF EXISTS refresh_jobs_last_success_idx;

-- A live run renews its lease every few seconds: a run row left 'running' whose lease is
-- fresh belongs to a run still alive (say, after a database restart took its lock).
ALTER TABLE refresh_runs ADD COLUMN IF NOT EXISTS heartbeat_at timestamptz;
-- The boot and pid namespace of the run's process: where its pid can be checked.
ALTER TABLE refresh_runs ADD COLUMN IF NOT EXISTS machine text;
-- Where the adaptive concurrency limit settled: the next run starts there.
ALTER TABLE refresh_runs ADD COLUMN IF NOT EXISTS concurrency_limit integer;
-- The lease a live run promises to renew within (seconds): others judge its row by it.
ALTER TABLE refresh_runs ADD COLUMN IF NOT EXISTS lease_seconds real;
-- The server process of the run's lock session: a session left behind by a vanished host
-- can be ended once the run's lease has expired.
ALTER TABLE refresh_runs ADD COLUMN IF NOT EXISTS lock_pid integer;

-- One row per client x platform: its last attempt, its last success, its failure streak.
-- Written in the same statement as the job's refresh_jobs row, by runs still 'running' only
-- (an abandoned run's late job rows leave it as it was); every per-key question (status,
-- skip, order, metrics) reads it instead of the history.
CREATE TABLE IF NOT EXISTS refresh_state (
    client_id             uuid NOT NULL,
    platform              text NOT NULL CHECK (platform IN ('shopify', 'amazon', 'all')),
    last_run_id           uuid,
    last_attempt_at       timestamptz,
    last_status           text CHECK (last_status IN ('succeeded', 'failed')),
    last_http_status      integer,
    last_error            text,
    consecutive_failures  integer NOT NULL DEFAULT 0,
    last_success_at       timestamptz,
    last_success_run_id   uuid,
    last_duration_ms      integer,
    last_platform_count   integer,
    last_sku_count        integer,
    PRIMARY KEY (client_id, platform)
);
-- The change key stored with the last success (REFRESH_CHANGE_SQL), and when it was first
-- seen to differ from the one before.
ALTER TABLE refresh_state ADD COLUMN IF NOT EXISTS change_key text;
ALTER TABLE refresh_state ADD COLUMN IF NOT EXISTS changed_at timestamptz;
-- When the cache was last known current: refreshed, or its data found unchanged since.
ALTER TABLE refresh_state ADD COLUMN IF NOT EXISTS verified_at timestamptz;

-- Until when the key's copy holds, as the API's answer declared it (expires_at, or
-- Cache-Control max-age / Expires); NULL when it declared nothing.
ALTER TABLE refresh_state ADD COLUMN IF NOT EXISTS expires_at timestamptz;
-- When a change of the key's data was first seen and not yet refreshed (a refresh failed).
ALTER TABLE refresh_state ADD COLUMN IF NOT EXISTS change_pending_at timestamptz;
ALTER TABLE refresh_jobs ADD COLUMN IF NOT EXISTS expires_at timestamptz;
-- When the change this refresh covered was first seen (NULL: none seen, or not known).
ALTER TABLE refresh_jobs ADD COLUMN IF NOT EXISTS change_at timestamptz;
-- A quiet run writes nothing per skipped key: its decisions are counted here, by kind, and
-- checked_changes says it read the change keys of its whole shard, so every key it did not
-- refresh was current when it started.
ALTER TABLE refresh_runs ADD COLUMN IF NOT EXISTS jobs_unchanged integer NOT NULL DEFAULT 0;
ALTER TABLE refresh_runs ADD COLUMN IF NOT EXISTS jobs_changed integer NOT NULL DEFAULT 0;
ALTER TABLE refresh_runs ADD COLUMN IF NOT EXISTS jobs_due integer NOT NULL DEFAULT 0;
ALTER TABLE refresh_runs ADD COLUMN IF NOT EXISTS jobs_expiring integer NOT NULL DEFAULT 0;
ALTER TABLE refresh_runs ADD COLUMN IF NOT EXISTS checked_changes boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS refresh_runs_checked_idx ON refresh_runs (shard, started_at DESC)
    WHERE checked_changes;
-- A refresh names the key's success before it (-infinity: none) and that copy's expiry:
-- the freshness report finds each gap between refreshes on one row, without sorting the
-- history.
ALTER TABLE refresh_jobs ADD COLUMN IF NOT EXISTS prev_success_at timestamptz;
ALTER TABLE refresh_jobs ADD COLUMN IF NOT EXISTS prev_expires_at timestamptz;

-- An install upgraded from a release without the state table: fill it from the history,
-- once (only while it is empty), so status and ordering know every key at once. One pass
-- over refresh_jobs with hash joins: minutes at most, and only on that first upgrade.
DO $fill$
BEGIN
    IF EXISTS (SELECT 1 FROM refresh_state) THEN
        RETURN;
    END IF;
    INSERT INTO refresh_state (
        client_id, platform, last_run_id, last_attempt_at, last_status, last_http_status,
        last_error, consecutive_failures, last_success_at, last_success_run_id,
        last_duration_ms, last_platform_count, last_sku_count)
    WITH finished AS MATERIALIZED (
        SELECT client_id, platform, run_id, status, http_status, error, finished_at,
               duration_ms, platform_count, sku_count
        FROM refresh_jobs
        WHERE status IN ('succeeded', 'failed') AND finished_at IS NOT NULL
    ), last_attempt AS (
        SELECT DISTINCT ON (client_id, platform) *
        FROM finished ORDER BY client_id, platform, finished_at DESC
    ), last_success AS (
        SELECT DISTINCT ON (client_id, platform) *
        FROM finished WHERE status = 'succeeded'
        ORDER BY client_id, platform, finished_at DESC
    ), streak AS (
        SELECT f.client_id, f.platform, count(*) AS failures
        FROM finished f
        LEFT JOIN last_success s USING (client_id, platform)
        WHERE f.status = 'failed' AND (s.finished_at IS NULL OR f.finished_at > s.finished_at)
        GROUP BY f.client_id, f.platform
    )
    SELECT a.client_id, a.platform, a.run_id, a.finished_at, a.status, a.http_status,
           a.error, coalesce(k.failures, 0), s.finished_at, s.run_id, s.duration_ms,
           s.platform_count, s.sku_count
    FROM last_attempt a
    LEFT JOIN last_success s USING (client_id, platform)
    LEFT JOIN streak k USING (client_id, platform)
    ON CONFLICT (client_id, platform) DO NOTHING;
END
$fill$;

-- What each client cost the backend, per UTC day: the freshness report's cost figures read
-- these sums instead of every job row of weeks of history. Kept by the triggers below on
-- every write to refresh_jobs (insert, update, delete, a prune, a truncate), whoever
-- writes it; an install upgraded from a release without it is filled from the history once.
DO $job_days$
BEGIN
    IF to_regclass('refresh_job_days') IS NOT NULL THEN
        RETURN;
    END IF;
    CREATE TABLE refresh_job_days (
        client_id       uuid NOT NULL,
        day             date NOT NULL,
        jobs            bigint NOT NULL DEFAULT 0,  -- job rows finished that day
        timed_jobs      bigint NOT NULL DEFAULT 0,  -- of them, refreshes with a duration
        backend_ms      bigint NOT NULL DEFAULT 0,  -- their durations (succeeded, failed)
        unchanged_rows  bigint NOT NULL DEFAULT 0,  -- rows of keys skipped as unchanged
        PRIMARY KEY (client_id, day)
    );
    -- No run may write a job row between the fill and the triggers taking over.
    LOCK TABLE refresh_jobs IN SHARE MODE;
    INSERT INTO refresh_job_days (client_id, day, jobs, timed_jobs, backend_ms, unchanged_rows)
    SELECT client_id, (finished_at AT TIME ZONE 'UTC')::date, count(*),
           count(duration_ms) FILTER (WHERE status IN ('succeeded', 'failed')),
           coalesce(sum(duration_ms) FILTER (WHERE status IN ('succeeded', 'failed')), 0),
           count(*) FILTER (WHERE status = 'skipped' AND error LIKE 'unchanged%')
    FROM refresh_jobs
    WHERE finished_at IS NOT NULL
    GROUP BY 1, 2;
END
$job_days$;

-- One statement's job rows added to their clients' days (the rows it wrote) and taken from
-- them (the rows it replaced or deleted); a day left with no row is dropped. The sums are
-- upserted in key order, so two writers of one client take its day rows' locks in the same
-- order. Only the transition tables of the event exist, hence the statement is composed.
-- It runs with its owner's rights (whoever ran `db init`, who owns refresh_job_days): a
-- runner whose role may write refresh_jobs and nothing else still keeps the sums, and a
-- trigger function cannot be called from a query. Its search_path is pinned below to the
-- schema of refresh_jobs, so a restore (search_path '') or another role's path finds the
-- same table. A refresh_job_days dropped by hand stops the sums, not the writes; the next
-- `db init` makes it again from the history.
CREATE OR REPLACE FUNCTION analytics_refresh_job_days() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $job_days$
DECLARE
    signed text := concat_ws(' UNION ALL ',
        CASE WHEN TG_OP IN ('INSERT', 'UPDATE') THEN 'SELECT 1 AS sign, * FROM new_rows' END,
        CASE WHEN TG_OP IN ('UPDATE', 'DELETE') THEN 'SELECT -1 AS sign, * FROM old_rows' END);
    emptied_clients uuid[];
    emptied_days date[];
BEGIN
    IF to_regclass('refresh_job_days') IS NULL THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        TRUNCATE refresh_job_days;
        RETURN NULL;
    END IF;
    EXECUTE format($upsert$
        WITH summed AS (
        INSERT INTO refresh_job_days AS d (client_id, day, jobs, timed_jobs, backend_ms,
                                           unchanged_rows)
        SELECT client_id, (finished_at AT TIME ZONE 'UTC')::date, sum(sign),
               coalesce(sum(sign) FILTER (WHERE %1$s AND duration_ms IS NOT NULL), 0),
               coalesce(sum(sign * duration_ms) FILTER (WHERE %1$s), 0),
               coalesce(sum(sign) FILTER (WHERE %2$s), 0)
        FROM (%3$s) AS j
        WHERE finished_at IS NOT NULL
        GROUP BY 1, 2
        HAVING sum(sign) <> 0 OR sum(sign * duration_ms) FILTER (WHERE %1$s) <> 0
            OR sum(sign) FILTER (WHERE %2$s) <> 0
            OR sum(sign) FILTER (WHERE %1$s AND duration_ms IS NOT NULL) <> 0
        ORDER BY 1, 2
        ON CONFLICT (client_id, day) DO UPDATE SET
            jobs = d.jobs + excluded.jobs, timed_jobs = d.timed_jobs + excluded.timed_jobs,
            backend_ms = d.backend_ms + excluded.backend_ms,
            unchanged_rows = d.unchanged_rows + excluded.unchanged_rows
        RETURNING d.client_id, d.day, d.jobs)
        SELECT array_agg(client_id), array_agg(day) FROM summed WHERE jobs <= 0
        $upsert$,
        $work$status IN ('succeeded', 'failed')$work$,
        $skip$status = 'skipped' AND error LIKE 'unchanged%'$skip$,
        signed) INTO emptied_clients, emptied_days;
    -- The emptied days are named by the upsert, whose row locks keep them empty until this
    -- transaction ends: deleting them by key stays linear however many rows a prune takes
    -- (a filter on jobs <= 0 would be planned from statistics that know no such row).
    IF emptied_clients IS NOT NULL THEN
        DELETE FROM refresh_job_days AS d
        USING unnest(emptied_clients, emptied_days) AS g(client_id, day)
        WHERE d.client_id = g.client_id AND d.day = g.day;
    END IF;
    RETURN NULL;
END
$job_days$;

DO $pin$
BEGIN
    EXECUTE format('ALTER FUNCTION analytics_refresh_job_days() SET search_path = %I, pg_temp',
                   (SELECT n.nspname FROM pg_class AS c
                    JOIN pg_namespace AS n ON n.oid = c.relnamespace
                    WHERE c.oid = 'refresh_jobs'::regclass));
END
$pin$;
REVOKE ALL ON FUNCTION analytics_refresh_job_days() FROM PUBLIC;

DROP TRIGGER IF EXISTS refresh_job_days_insert ON refresh_jobs;
CREATE TRIGGER refresh_job_days_insert AFTER INSERT ON refresh_jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION analytics_refresh_job_days();
DROP TRIGGER IF EXISTS refresh_job_days_update ON refresh_jobs;
CREATE TRIGGER refresh_job_days_update AFTER UPDATE ON refresh_jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION analytics_refresh_job_days();
DROP TRIGGER IF EXISTS refresh_job_days_delete ON refresh_jobs;
CREATE TRIGGER refresh_job_days_delete AFTER DELETE ON refresh_jobs
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION analytics_refresh_job_days();
DROP TRIGGER IF EXISTS refresh_job_days_truncate ON refresh_jobs;
CREATE TRIGGER refresh_job_days_truncate AFTER TRUNCATE ON refresh_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION analytics_refresh_job_days();

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
