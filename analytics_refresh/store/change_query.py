"""The change query (``REFRESH_CHANGE_SQL``): checked to be one plain SELECT, run read-only.

psycopg2 sends a text as one simple-protocol message, so a text holding several statements
runs them all, and no wrapping of the text by string operations can stop it (a text that
balances the parentheses escapes ``SELECT * FROM (...)``). So the text is judged by
PostgreSQL's own parser (pglast, libpg_query) before anything runs: exactly one statement,
a SELECT, with no data-modifying WITH, no SELECT INTO and no locking clause anywhere in it.

It then runs in a transaction made read-only before it (``SET TRANSACTION READ ONLY``
after ``BEGIN``, whatever the session's defaults say), which a single SELECT cannot end or
change: a function that writes fails inside it. The string escapes are fixed for that
transaction to the ones the parser used, so the server reads the text as it was judged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pglast
import pglast.parser
import psycopg2
import psycopg2.errors
from pglast import ast
from pglast.visitors import Visitor

from analytics_refresh.clock import Deadline
from analytics_refresh.errors import first_line
from analytics_refresh.store import db

READ_ONLY = "SET TRANSACTION READ ONLY"
# The parser reads '...' with standard_conforming_strings on; so does the server here.
SAME_ESCAPES = "SET LOCAL standard_conforming_strings TO on"
# Anything that writes or locks rows, at any depth of the statement.
_REFUSED = {
    ast.InsertStmt: "it holds an INSERT",
    ast.UpdateStmt: "it holds an UPDATE",
    ast.DeleteStmt: "it holds a DELETE",
    ast.MergeStmt: "it holds a MERGE",
    ast.IntoClause: "it is a SELECT INTO, which creates a table",
    ast.LockingClause: "it holds a locking clause (FOR UPDATE/SHARE)",
}


class ChangeQueryError(Exception):
    """The change query failed or returned rows it should not have."""


class _Refusals(Visitor):
    """Collects the first reason a statement could write."""

    def __init__(self) -> None:
        super().__init__()
        self.reason: str | None = None

    def visit(self, ancestors, node) -> None:
        for kind, reason in _REFUSED.items():
            if isinstance(node, kind) and self.reason is None:
                self.reason = reason


def refusal(text: str) -> str | None:
    """Return why ``text`` is not exactly one read-only SELECT, or None when it is."""
    try:
        statements = pglast.parse_sql(text)
    except pglast.parser.ParseError as exc:
        return f"PostgreSQL's parser refuses it: {first_line(exc)}"
    if len(statements) != 1:
        return f"it holds {len(statements)} statements; exactly one SELECT is expected"
    statement = statements[0].stmt
    if not isinstance(statement, ast.SelectStmt):
        return f"it is not a SELECT (a {type(statement).__name__.removesuffix('Stmt')})"
    refusals = _Refusals()
    refusals(statement)
    return refusals.reason


@contextlib.contextmanager
def read_only(conn, text: str, seconds: float, deadline: Deadline | None = None) -> Iterator:
    """Run ``text`` read-only within ``seconds``; yield the cursor holding its rows.

    Raises ChangeQueryError naming the problem: refused by the check, failed, or past its
    bound. The connection comes back in its own mode, rolled back.
    """
    reason = refusal(text)
    if reason is not None:
        raise ChangeQueryError(f"it was refused, not run: {reason}")
    was_autocommit = conn.autocommit
    conn.autocommit = False  # psycopg2 sends BEGIN before the first statement
    try:
        with conn.cursor() as cur:
            cur.execute(READ_ONLY)
            cur.execute(SAME_ESCAPES)
            db.bound(conn, seconds)
            try:
                cur.execute(text)
            except psycopg2.errors.QueryCanceled as exc:
                raise ChangeQueryError(f"it ran past its bound of {seconds:g}s") from exc
            except psycopg2.Error as exc:
                raise ChangeQueryError(f"it failed: {first_line(exc)}") from exc
            yield cur
    finally:
        if not conn.closed:
            conn.rollback()
            conn.autocommit = was_autocommit
            db.bound(conn, db.statement_seconds(deadline))
