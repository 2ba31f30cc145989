"""The change query for the reference schema: one change key per client and platform.

The runner's ``REFRESH_CHANGE_SQL`` runs a query returning ``(client_id, platform,
change_key)`` and skips a dashboard whose key has not moved since its last refresh. For the
reference schema that query is ``CHANGE_SQL``: per connected credential, the version that
schema.sql's statement-level triggers keep in ``refresh_requests`` (bumped once per
statement that inserts, updates or deletes any of the key's order lines or stock rows),
and the UTC day the answer's window ends on. It reads one row of each table per key, so
its cost grows with the number of keys, never with the number of rows.

The version sees what a ``max(updated_at)`` key misses: a deleted row (the newest stamp
stays put, or even goes back), and a row written by a transaction that started before the
newest committed stamp and commits after the runner read the keys (rows are stamped when
written, not when committed; the version is bumped under the key's row lock, so it moves
at every commit). Keys are compared for equality, so the order of commits never matters.
The date makes every key change at midnight UTC, when every dashboard's window moves.

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

# The stamp-only form, for comparison: one pass over every order line, and blind to deletes
# and late commits.
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
