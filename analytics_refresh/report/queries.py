"""The freshness report's SQL, each statement once, by name.

The work is done where the rows are: one sorted pass over the window's successful refreshes
turns each key's history into the gaps between its refreshes, and only the late part of
each gap (a few rows per key at most) comes back to Python. Times are judged in whole
minutes: a minute is late when the key is late at its first second, so an interval
[a, b) holds ceil(b) - ceil(a) late minutes (in minutes since the epoch).
"""

# The keys the report judges (connected now, as a run would plan them) and the keys only
# the history knows (drawn "not connected", never counted).
CREATE_KEYS = """
    CREATE TEMP TABLE report_keys (
        client_id uuid NOT NULL, platform text NOT NULL, expected boolean NOT NULL,
        PRIMARY KEY (client_id, platform)
    ) ON COMMIT DROP
"""
INSERT_KEYS = """
    INSERT INTO report_keys (client_id, platform, expected)
    SELECT c, p, true FROM unnest(%s::uuid[], %s::text[]) AS k(c, p)
"""

# Whether an optional table of the change record exists (refresh_requests: the pending
# changes a loader or a trigger recorded).
TABLE_EXISTS = "SELECT to_regclass(%s) IS NOT NULL"
# Whether the report's role may read a table (the day sums: else every job row is read).
TABLE_READABLE = "SELECT coalesce(has_table_privilege(to_regclass(%s), 'SELECT'), false)"

# What the runs say: how many ran a change check, were a listener's, per day.
RUN_KINDS = """
    SELECT count(*) FILTER (WHERE coalesce(checked_changes, false)),
           count(*) FILTER (WHERE trigger = 'listen')
    FROM refresh_runs
    WHERE started_at < %(hi)s AND coalesce(finished_at, %(hi)s) >= %(lo)s
"""

# Two passes over the window's job rows, run at once on two connections. COST keeps only
# sums per client and day (the backend's seconds, legacy skip rows). ROWS keeps the few
# rows that matter one by one: late gaps, failures, refreshes that covered a change, each
# key's first success and its first one in the window, and successes whose previous one
# the row does not name. A success row names the key's success before it (prev_success_at;
# -infinity: none), so a late gap is found on its own row and no sort of the history is
# needed; rows written without it are put in order per key afterwards.
COST = """
    SELECT client_id::text, finished_at::date,
           sum(duration_ms) FILTER (WHERE status IN ('succeeded', 'failed')) / 1000.0,
           count(*) FILTER (WHERE status = 'skipped' AND error LIKE 'unchanged%%')
    FROM refresh_jobs
    -- Whole UTC days, today's to its end, as refresh_job_days sums them (a row a run
    -- finishes while the report is read is its day's cost all the same).
    WHERE finished_at >= %(lo)s AND finished_at < date_trunc('day', %(hi)s) + interval '1 day'
    -- By the uuid itself: its text is made once per group, not once per row.
    GROUP BY client_id, finished_at::date
"""
# The same sums from the days refresh_job_days keeps (its triggers add every job row to its
# client's UTC day): a row per client and day instead of every job row. The window's days
# are whole, from its first midnight to today.
COST_DAYS = """
    SELECT client_id::text, day,
           CASE WHEN timed_jobs > 0 THEN backend_ms / 1000.0 END, unchanged_rows
    FROM refresh_job_days
    WHERE day >= (%(lo)s::timestamptz AT TIME ZONE 'UTC')::date
      AND day <= (%(hi)s::timestamptz AT TIME ZONE 'UTC')::date
      AND jobs > 0
"""
# Per key, from ROWS: its first success ever (the row naming none before it), the earliest
# success a row names, its newest success among the rows.
TOTALS = """
    CREATE TEMP TABLE report_totals ON COMMIT DROP AS
    SELECT client_id, platform, true AS per_key,
           min(least(at, change)) FILTER (WHERE status = 'succeeded' AND prev = '-infinity')
               AS first_at,
           min(prev) FILTER (WHERE status = 'succeeded' AND isfinite(prev)) AS known_before,
           max(at) FILTER (WHERE status = 'succeeded') AS last_at,
           max(expires) FILTER (WHERE status = 'succeeded') AS last_expires
    FROM report_rows
    GROUP BY client_id, platform
"""
ROWS = """
    CREATE TEMP TABLE report_rows ON COMMIT DROP AS
    SELECT client_id, platform, status, finished_at AS at, error, change_at AS change,
           expires_at AS expires, prev_success_at AS prev, prev_expires_at AS prev_expires,
           status = 'succeeded' AND prev_success_at IS NULL AS unknown
    FROM refresh_jobs
    WHERE finished_at >= %(lo)s AND finished_at < %(hi)s
      AND (status = 'failed'
           OR (status = 'succeeded' AND (prev_success_at IS NULL OR change_at IS NOT NULL
               OR prev_success_at = '-infinity' OR prev_success_at < %(lo)s
               OR finished_at > least(
                   nullif(prev_success_at, '-infinity') + make_interval(secs => %(age_s)s),
                   CASE WHEN %(expiry)s THEN prev_expires_at END,
                   change_at + make_interval(secs => %(change_s)s)))))
"""

# The last success before the window of each key whose rows do not name their previous
# success: what its first gap in the window starts from.
BEFORE_UNKNOWN = """
    INSERT INTO report_gaps (client_id, platform, prev_at, prev_expires, end_at, change)
    SELECT j.client_id, j.platform, NULL, max(j.expires_at), max(j.finished_at), NULL
    FROM refresh_jobs AS j
    JOIN (SELECT DISTINCT client_id, platform FROM report_rows WHERE unknown) AS u
      ON u.client_id = j.client_id AND u.platform = j.platform
    WHERE j.status = 'succeeded' AND j.finished_at < %(lo)s
    GROUP BY j.client_id, j.platform
"""
CREATE_GAPS = """
    CREATE TEMP TABLE report_gaps (
        client_id uuid, platform text, prev_at timestamptz, prev_expires timestamptz,
        end_at timestamptz, change timestamptz
    ) ON COMMIT DROP
"""
# The successes of the window whose previous one is not named, in order per key.
GAPS_OF_UNKNOWN = """
    INSERT INTO report_gaps (client_id, platform, prev_at, prev_expires, end_at, change)
    SELECT client_id, platform, lag(at) OVER w, lag(expires) OVER w, at, change
    FROM (
        SELECT client_id, platform, at, expires, change FROM report_rows WHERE unknown
        UNION ALL
        SELECT client_id, platform, end_at, prev_expires, NULL::timestamptz
        FROM report_gaps
    ) AS s
    WINDOW w AS (PARTITION BY client_id, platform ORDER BY at)
"""
# The late gaps named on their rows, and the gap still open: from the last success (the
# state keeps it past any prune) to now, judged by the change still pending.
KNOWN_GAPS = """
    INSERT INTO report_gaps (client_id, platform, prev_at, prev_expires, end_at, change)
    SELECT client_id, platform, prev, prev_expires, at, change
    FROM report_rows WHERE status = 'succeeded' AND NOT unknown
    UNION ALL
    SELECT k.client_id, k.platform, greatest(s.last_success_at, t.last_at),
           CASE WHEN t.last_at IS NULL OR s.last_success_at >= t.last_at THEN s.expires_at
                ELSE t.last_expires END,
           %(hi)s, p.change
    FROM report_keys AS k
    LEFT JOIN refresh_state AS s ON s.client_id = k.client_id AND s.platform = k.platform
    LEFT JOIN report_totals AS t
           ON t.per_key AND t.client_id = k.client_id AND t.platform = k.platform
    LEFT JOIN report_pending AS p ON p.client_id = k.client_id AND p.platform = k.platform
    WHERE k.expected
      AND (s.last_success_at IS NOT NULL OR t.last_at IS NOT NULL OR p.change IS NOT NULL)
"""

# The late part of every gap of a judged key: from the earliest of its age passing the
# promise's bound, its copy expiring, the change its closing refresh covered (or the one
# still pending) passing the staleness bound. Lateness never starts before the gap: a
# refresh that ended is taken to cover what was asked of it until then.
CREATE_PIECES = """
    CREATE TEMP TABLE report_pieces ON COMMIT DROP AS
    WITH late AS (
        SELECT g.client_id, g.platform, nullif(g.prev_at, '-infinity') AS prev_at, g.end_at,
               nullif(g.prev_at, '-infinity') + make_interval(secs => %(age_s)s) AS by_age,
               CASE WHEN %(expiry)s AND g.prev_at IS NOT NULL THEN g.prev_expires END
                   AS by_expiry,
               g.change + make_interval(secs => %(change_s)s) AS by_change
        FROM report_gaps AS g
        JOIN report_keys AS k ON k.client_id = g.client_id AND k.platform = g.platform
        WHERE k.expected AND g.end_at IS NOT NULL
    )
    SELECT DISTINCT client_id, platform,
           -- Past an age or a wait (strictly older, as the promise says), at an expiry.
           CASE WHEN least(by_age, by_expiry, by_change) < prev_at THEN prev_at
                WHEN least(by_age, by_expiry, by_change) = by_expiry
                    THEN least(by_age, by_expiry, by_change)
                ELSE least(by_age, by_expiry, by_change) + interval '1 microsecond'
           END AS late_from,
           end_at AS late_to,
           CASE least(by_age, by_expiry, by_change)
               WHEN by_change THEN 'change' WHEN by_expiry THEN 'expired' ELSE 'age' END
               AS reason,
           prev_at
    FROM late
    WHERE greatest(prev_at, least(by_age, by_expiry, by_change)) < end_at
      AND end_at > %(lo)s
"""

# The first change not yet reflected at the end of the window, per key: a request still
# pending (refresh_requests), or the change a failed refresh after the last success
# covered. Filled by PENDING_FROM_JOBS and, where the table exists, PENDING_FROM_REQUESTS.
CREATE_PENDING = """
    CREATE TEMP TABLE report_pending (
        client_id uuid NOT NULL, platform text NOT NULL, change timestamptz NOT NULL,
        PRIMARY KEY (client_id, platform)
    ) ON COMMIT DROP
"""
PENDING_FROM_FAILURES = """
    INSERT INTO report_pending (client_id, platform, change)
    SELECT f.client_id, f.platform, min(f.change)
    FROM report_failures AS f
    JOIN report_keys AS k ON k.client_id = f.client_id AND k.platform = f.platform
    LEFT JOIN refresh_state AS s ON s.client_id = f.client_id AND s.platform = f.platform
    LEFT JOIN report_totals AS t
           ON t.per_key AND t.client_id = f.client_id AND t.platform = f.platform
    WHERE f.change IS NOT NULL
      AND f.at > coalesce(greatest(s.last_success_at, t.last_at), '-infinity')
    GROUP BY f.client_id, f.platform
"""
# A change the runs saw and no refresh has shown yet, where the state keeps it.
COLUMN_EXISTS = """
    SELECT EXISTS (SELECT 1 FROM pg_attribute
                   WHERE attrelid = to_regclass(%s) AND attname = %s AND NOT attisdropped)
"""
PENDING_FROM_STATE = """
    INSERT INTO report_pending AS p (client_id, platform, change)
    SELECT s.client_id, s.platform, s.change_pending_at
    FROM refresh_state AS s
    JOIN report_keys AS k ON k.client_id = s.client_id AND k.platform = s.platform
    WHERE s.change_pending_at IS NOT NULL AND s.change_pending_at < %(hi)s
      AND s.change_pending_at > coalesce(s.last_success_at, '-infinity')
    ON CONFLICT (client_id, platform) DO UPDATE SET change = least(p.change, excluded.change)
"""
# Every failed refresh of the window.
FAILURES = """
    CREATE TEMP VIEW report_failures AS
    SELECT client_id, platform, at, error, change FROM report_rows WHERE status = 'failed'
"""
# A request names a client's platform; the combined (all) dashboard waits on any of them.
PENDING_FROM_REQUESTS = """
    INSERT INTO report_pending AS p (client_id, platform, change)
    SELECT k.client_id, k.platform,
           min(CASE WHEN r.pending_since > coalesce(greatest(s.last_success_at, t.last_at),
                                                    '-infinity')
                    THEN r.pending_since ELSE r.requested_at END)
    FROM refresh_requests AS r
    JOIN report_keys AS k
      ON k.client_id = r.client_id AND (k.platform = r.platform OR k.platform = 'all')
    LEFT JOIN refresh_state AS s ON s.client_id = k.client_id AND s.platform = k.platform
    LEFT JOIN report_totals AS t
           ON t.per_key AND t.client_id = k.client_id AND t.platform = k.platform
    -- Only the listener clears pending_since: a change older than the key's last success
    -- is shown by it; a newer one (requested_at) is then pending since at least then.
    WHERE r.pending_since IS NOT NULL AND r.requested_at < %(hi)s
      AND r.requested_at > coalesce(greatest(s.last_success_at, t.last_at), '-infinity')
    GROUP BY k.client_id, k.platform
    ON CONFLICT (client_id, platform) DO UPDATE SET change = least(p.change, excluded.change)
"""

# When each judged key starts to count: its first recorded success or change. A success
# before the window (named by a row, found in the history, or kept by the state) counts
# it from the window's start.
KEY_STARTS = """
    CREATE TEMP TABLE report_starts ON COMMIT DROP AS
    SELECT k.client_id, k.platform,
           least(u.first_at, u.known_before, g.first_at, p.change, s.last_success_at)
               AS start_at
    FROM report_keys AS k
    LEFT JOIN report_totals AS u
           ON u.per_key AND u.client_id = k.client_id AND u.platform = k.platform
    LEFT JOIN (SELECT client_id, platform,
                      least(min(end_at) FILTER (WHERE prev_at IS NULL),
                            min(change) FILTER (WHERE prev_at IS NULL)) AS first_at
               FROM report_gaps GROUP BY client_id, platform) AS g
           ON g.client_id = k.client_id AND g.platform = k.platform
    LEFT JOIN report_pending AS p ON p.client_id = k.client_id AND p.platform = k.platform
    LEFT JOIN refresh_state AS s ON s.client_id = k.client_id AND s.platform = k.platform
    WHERE k.expected
"""

# Every late piece with the breach it belongs to: a piece that starts where the key's
# previous piece ended continues that breach (a refresh that did not cure it).
BREACHES = """
    CREATE TEMP TABLE report_breaches ON COMMIT DROP AS
    SELECT *, sum(CASE WHEN late_from > coalesce(prev_to, late_from - interval '1 second')
                       THEN 1 ELSE 0 END)
                  OVER (PARTITION BY client_id, platform ORDER BY late_from) AS breach
    FROM (SELECT *, lag(late_to) OVER (PARTITION BY client_id, platform ORDER BY late_from)
                    AS prev_to
          FROM report_pieces) AS p
"""

# Minutes in the epoch's minute grid; a late interval [a, b) holds ceil(b) - ceil(a).
MINUTE = "ceil(extract(epoch FROM {}) / 60)::bigint"

DAY_FIGURES = f"""
    WITH days AS (
        SELECT d AS day_from, least(d + interval '1 day', %(hi)s) AS day_to
        FROM generate_series(%(lo)s::timestamptz, %(hi)s::timestamptz - interval '1 microsecond',
                             interval '1 day') AS d
    ), late AS (
        SELECT d.day_from,
               sum(greatest(0, {MINUTE.format("least(b.late_to, d.day_to)")}
                    - {MINUTE.format("greatest(b.late_from, d.day_from)")})) AS minutes
        FROM days AS d JOIN report_breaches AS b
          ON b.late_from < d.day_to AND b.late_to > d.day_from
        GROUP BY d.day_from
    ), starts AS (
        SELECT d.day_from, count(*) AS breaches
        FROM (SELECT client_id, platform, breach, min(late_from) AS began
              FROM report_breaches GROUP BY client_id, platform, breach) AS b
        JOIN days AS d ON b.began >= d.day_from AND b.began < d.day_to
        GROUP BY d.day_from
    )
    SELECT d.day_from, d.day_to, coalesce(l.minutes, 0), coalesce(s.breaches, 0)
    FROM days AS d
    LEFT JOIN late AS l USING (day_from)
    LEFT JOIN starts AS s USING (day_from)
    ORDER BY d.day_from
"""  # noqa: S608 (only the constant MINUTE expression is formatted in)

# Every judged key's late minutes per day (only keys late at all come back).
KEY_DAY_LATE = f"""
    WITH days AS (
        SELECT d AS day_from, least(d + interval '1 day', %(hi)s) AS day_to
        FROM generate_series(%(lo)s::timestamptz, %(hi)s::timestamptz - interval '1 microsecond',
                             interval '1 day') AS d
    )
    SELECT b.client_id::text, b.platform, d.day_from,
           sum(greatest(0, {MINUTE.format("least(b.late_to, d.day_to)")}
                - {MINUTE.format("greatest(b.late_from, d.day_from)")}))::bigint
    FROM days AS d JOIN report_breaches AS b
      ON b.late_from < d.day_to AND b.late_to > d.day_from
    GROUP BY b.client_id, b.platform, d.day_from
    HAVING sum(greatest(0, {MINUTE.format("least(b.late_to, d.day_to)")}
                - {MINUTE.format("greatest(b.late_from, d.day_from)")})) > 0
"""  # noqa: S608 (only the constant MINUTE expression is formatted in)

# The late pieces of the keys drawn one by one in the grid.
KEY_PIECES = """
    SELECT client_id::text, platform, greatest(late_from, %(lo)s), late_to, reason, prev_at
    FROM report_breaches
    WHERE (client_id, platform) IN (
        SELECT * FROM unnest(%(clients)s::uuid[], %(platforms)s::text[]))
    ORDER BY client_id, platform, late_from
"""
# The minute each judged key starts to count in (the counted minutes follow from them).
START_MINUTES = f"""
    SELECT {MINUTE.format("start_at")} FROM report_starts WHERE start_at IS NOT NULL
"""  # noqa: S608 (only the constant MINUTE expression is formatted in)
KEY_STARTS_OF = """
    SELECT client_id::text, platform, start_at FROM report_starts
    WHERE (client_id, platform) IN (
        SELECT * FROM unnest(%(clients)s::uuid[], %(platforms)s::text[]))
"""

# Keys with a state that no run would plan now (their credential was disconnected).
DISCONNECTED = """
    SELECT s.client_id::text, s.platform FROM refresh_state AS s
    WHERE NOT EXISTS (SELECT 1 FROM report_keys AS k
                      WHERE k.client_id = s.client_id AND k.platform = s.platform)
    ORDER BY 1, 2 LIMIT %s
"""

# The grid's last line: per hour, how many of the other judged keys were late in it.
REST_HOURS = """
    SELECT h, count(DISTINCT (b.client_id, b.platform))
    FROM report_breaches AS b
    CROSS JOIN LATERAL generate_series(
        date_trunc('hour', greatest(b.late_from, %(lo)s)),
        b.late_to - interval '1 microsecond', interval '1 hour') AS h
    WHERE b.late_to > %(lo)s
      AND (b.client_id, b.platform) NOT IN (
          SELECT * FROM unnest(%(clients)s::uuid[], %(platforms)s::text[]))
    GROUP BY h
"""

# Per day: refreshes that covered a change, from the change to the dashboard (seconds).
LATENCY = """
    SELECT date_trunc('day', at), count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY s),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY s), max(s)
    FROM (SELECT at, extract(epoch FROM at - change)::float8 AS s FROM report_rows
          WHERE status = 'succeeded' AND change IS NOT NULL) AS x
    GROUP BY 1 ORDER BY 1
"""

# Per day: jobs that ran against those skipped as unchanged, as the runs counted them
# (older change-aware runs wrote a skipped row each instead: COST counts those).
SKIPPED = """
    SELECT date_trunc('day', started_at)::date, sum(jobs_succeeded + jobs_failed),
           sum(coalesce(jobs_unchanged, 0))
    FROM refresh_runs
    WHERE started_at >= %(lo)s AND started_at < %(hi)s
    GROUP BY 1 ORDER BY 1
"""

# Failures: the reasons, with digits folded so "HTTP 503 after 3 attempts" groups, and
# the keys failing most.
FAILURE_REASONS = """
    SELECT regexp_replace(coalesce(error, 'no reason recorded'), '[0-9]+', 'N', 'g') AS reason,
           count(*), count(DISTINCT (client_id, platform)), min(error)
    FROM report_failures
    GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT %(limit)s
"""
FAILING_KEYS = """
    SELECT f.client_id::text, f.platform, count(*), max(f.at),
           coalesce(max(s.consecutive_failures), 0), max(s.last_error)
    FROM report_failures AS f
    LEFT JOIN refresh_state AS s ON s.client_id = f.client_id AND s.platform = f.platform
    GROUP BY f.client_id, f.platform
    HAVING count(*) >= %(streak)s OR coalesce(max(s.consecutive_failures), 0) >= %(streak)s
    ORDER BY coalesce(max(s.consecutive_failures), 0) DESC, count(*) DESC, 1, 2
    LIMIT %(limit)s
"""
FAILURE_HOURS = """
    SELECT client_id::text, platform, date_trunc('hour', at), max(error)
    FROM report_failures
    WHERE (client_id, platform) IN (
        SELECT * FROM unnest(%(clients)s::uuid[], %(platforms)s::text[]))
    GROUP BY 1, 2, 3
"""
