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

-- Serves "last success per client x platform": status, skip-fresh and job ordering.
CREATE INDEX IF NOT EXISTS refresh_jobs_last_success_idx
    ON refresh_jobs (client_id, platform, finished_at DESC) WHERE status = 'succeeded';
