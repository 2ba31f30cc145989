"""``analytics-refresh request``: record a change durably and wake the listeners, as a
loader does through the SQL function ``analytics_refresh_request``."""

from __future__ import annotations

import psycopg2

from .. import db
from ..errors import DatabaseError
from ..settings import Settings
from . import queries as sql


def request(settings: Settings, client_id: str, platform: str | None) -> str:
    """Ask for a refresh of ``client_id`` (one platform, or every one); return what was done."""
    source = None if platform in (None, "all") else platform
    url = db.database_url(settings)
    with db.connection(url) as conn:
        if db.missing_tables(conn, ("refresh_requests",)):
            raise DatabaseError(
                "table refresh_requests is missing: the change record is not set up",
                hint="run `analytics-refresh db init` once against this database",
            )
        try:
            with conn.cursor() as cur:
                cur.execute(sql.REQUEST, (client_id, source))
        except psycopg2.errors.UndefinedFunction as exc:
            raise DatabaseError(
                "function analytics_refresh_request is missing",
                hint="run `analytics-refresh db init` once against this database",
            ) from exc
    which = f"{source}" if source else "every platform"
    return f"Requested a refresh of {client_id} ({which}); listeners refresh it once it settles"
