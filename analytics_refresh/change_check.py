"""The checklist's line for the change query: run it read-only, as a run would, and judge
what comes back (its shape, its rows, its time) before a scheduled run relies on it.

A run that finds the query broken refreshes every key, which hides the problem behind a
green exit code at many times the load; here the same problem is a failure naming the
variable, with the reason PostgreSQL or the shape check gave.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

from . import changes
from .plan import Job

# A query slower than this share of its bound is a warning: it will not stay under it long.
SLOW_SHARE = 0.5
# What a query may begin with (SELECT, WITH ... SELECT, VALUES, TABLE).
QUERY_KEYWORDS = ("SELECT", "WITH", "VALUES", "TABLE")
COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)


def first_keyword(query: str) -> str:
    """Return the query's first word in capitals, past comments and parentheses."""
    text = COMMENTS.sub(" ", query)
    match = re.match(r"[\s(]*([A-Za-z]+)", text)
    return match[1].upper() if match else "no statement"


def change_query_result(conn, settings, jobs: Sequence[Job]) -> tuple[str, str, str | None]:
    """Return (state, detail, fix) for the configured change query."""
    named = settings.change_sql_source or "REFRESH_CHANGE_SQL"
    started = time.monotonic()
    try:
        keys = changes.read_keys(conn, settings.change_sql)
    except changes.ChangeQueryError as exc:
        kind = first_keyword(settings.change_sql)
        # PostgreSQL reports a DELETE inside the run's wrapping SELECT as a syntax error at
        # some later word, which points at the wrong place: name the statement instead.
        reason = f"expected one SELECT, got {kind} ({exc})" if kind not in QUERY_KEYWORDS else exc
        return (
            "fail",
            f"{named}: {reason}; every run would refresh every key",
            "correct the query: one read-only SELECT returning (client_id, platform, "
            "change_key) rows, e.g. dashboard_api/change_keys.sql for the reference schema",
        )
    elapsed = time.monotonic() - started
    wanted = {(job.client_id, job.platform) for job in jobs if job.platform != "all"}
    covered = len(wanted & set(keys))
    detail = (
        f"{named}: {len(keys)} keys in {elapsed * 1000:.0f} ms (read-only), "
        f"{covered} of the {len(wanted)} planned keys"
    )
    if elapsed > changes.QUERY_SECONDS * SLOW_SHARE:
        return (
            "warn",
            f"{detail}; slow: a run gives it at most {changes.QUERY_SECONDS:g} s",
            "index what the query reads (each key's newest row), or keep the keys in a table",
        )
    if wanted and not covered:
        return (
            "warn",
            f"{detail}; none of the planned keys has a change key, so every run refreshes "
            "every key",
            "the query must return the client_id and platform of client_api_credentials",
        )
    return ("ok", detail, None)
