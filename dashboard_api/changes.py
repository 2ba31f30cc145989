"""The change query for the reference schema: one change key per client and platform.

The runner's ``REFRESH_CHANGE_SQL`` runs a query returning ``(client_id, platform,
change_key)`` and skips a dashboard whose key has not moved since its last refresh. For the
reference schema that query is ``CHANGE_SQL``: per connected credential, the newest
``updated_at`` of its order lines and of its stock rows (schema.sql stamps both on insert
and on update). Each ``max()`` is one descent of an index on (client_id, platform,
updated_at), so the cost grows with the number of keys, not with the number of rows.

Measured with ``EXPLAIN (ANALYZE, BUFFERS)``, execution time, best of 5, vacuumed tables,
warm cache; 1M order lines and 100 (or 5,000) stock rows per key:

=====================================  =================  ================================
data, server                           ``CHANGE_SQL``     ``GROUP_BY_SQL`` (one pass over
                                                          the lines)
=====================================  =================  ================================
1,000 clients x 2 platforms, PG 18.4   20 ms              123 ms
1,000 clients x 2 platforms, PG 15.18  26 ms              203 ms
1 client x 2 platforms, PG 18.4        0.04 ms            123 ms
1 client x 2 platforms, PG 15.18       0.03 ms            155 ms
=====================================  =================  ================================

The plan is two backward index-only scans of one row per key (12,000 buffer hits for 2,000
keys), about 10 microseconds a key, so 10,000 keys would take about 0.1 s; the size of the
tables does not enter into it. ``GROUP_BY_SQL`` reads every line, so it grows with them.

A key changes when a row of the key is inserted or updated. It does not change when a row
other than the newest is deleted, nor for a row written by a transaction that started
before the newest committed stamp and commits after the runner read the keys (rows are
stamped when written, not when committed): those are picked up by the next change of the
key or by ``REFRESH_MAX_AGE_MINUTES``.

The query is also the file ``dashboard_api/change_keys.sql``, for the runner's
``REFRESH_CHANGE_SQL_FILE``.

    python -m dashboard_api.changes --database-url URL   # the keys, and the query's plan
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence

from .config import ConfigError, from_environ
from .db import connect_for_script, read_sql

# In a file of its own too, for REFRESH_CHANGE_SQL_FILE.
CHANGE_SQL = read_sql("change_keys.sql")

# The simple form, for comparison: one pass over every order line.
GROUP_BY_SQL = """\
SELECT client_id::text, platform, max(updated_at)::text FROM order_lines GROUP BY 1, 2
"""


def change_keys(conn) -> dict[tuple[str, str], str]:
    """Return each connected (client_id, platform) with its change key."""
    with conn.cursor() as cur:
        cur.execute(CHANGE_SQL)
        return {(client_id, platform): key for client_id, platform, key in cur.fetchall()}


def explain(conn, query: str = CHANGE_SQL) -> str:
    """Return the plan of ``query`` as run, with its timing (EXPLAIN ANALYZE, read-only)."""
    with conn.cursor() as cur:
        cur.execute("SET TRANSACTION READ ONLY")
        cur.execute(f"EXPLAIN (ANALYZE, BUFFERS) {query}")
        plan = "\n".join(line for (line,) in cur.fetchall())
    conn.rollback()
    return plan


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Print the change keys of the database the command line names, then the plan."""
    parser = argparse.ArgumentParser(
        prog="python -m dashboard_api.changes", description="Show the change keys and cost."
    )
    try:
        default_url = from_environ(environ).get("DATABASE_URL")
    except ConfigError as exc:
        parser.error(str(exc))
    parser.add_argument("--database-url", default=default_url, help="env DATABASE_URL")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url (or DATABASE_URL) is required")
    conn = connect_for_script(args.database_url)
    if conn is None:
        return 1
    try:
        for (client_id, platform), key in sorted(change_keys(conn).items()):
            print(f"{client_id}  {platform:<8} {key}")
        conn.rollback()
        print(explain(conn))
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
