"""The change query cannot write, whatever its text: one SELECT, run read-only."""

# ruff: noqa: S608 (hostile query texts are what these tests are made of)

from __future__ import annotations

import psycopg2
import pytest

from analytics_refresh.cli import main
from analytics_refresh.store.change_query import ChangeQueryError, read_only, refusal
from tests.conftest import connect_clients, log_lines
from tests.runs import ALICE, BOB

KEYS = "SELECT client_id::text, platform, 'k' FROM client_api_credentials"
WRITE = "INSERT INTO victims VALUES (1)"
VICTIMS = "CREATE TABLE victims (n int)"
# A volatile function that writes: only the transaction's read-only mode can stop it.
SNEAK = """
    CREATE FUNCTION sneak() RETURNS text VOLATILE LANGUAGE plpgsql AS $$
    BEGIN INSERT INTO victims VALUES (1); RETURN 'k'; END $$
"""

HOSTILE = {
    "balanced parentheses": f"{KEYS}) AS x; COMMIT; {WRITE}; SELECT * FROM ({KEYS}",
    "a second statement": f"{KEYS}; {WRITE}",
    "session default first": (
        f"SET SESSION default_transaction_read_only = off; COMMIT; {WRITE}; {KEYS}"
    ),
    "read-write transaction": f"COMMIT; BEGIN READ WRITE; {WRITE}; {KEYS}",
    "data-modifying WITH": f"WITH w AS ({WRITE} RETURNING n) {KEYS}",
    "nested data-modifying WITH": (
        f"SELECT * FROM (WITH w AS ({WRITE} RETURNING 1) SELECT 'a', 'b', 'c' FROM w) AS q"
    ),
    "SELECT INTO": "SELECT client_id, platform, 'k' INTO stolen FROM client_api_credentials",
    "FOR UPDATE": f"{KEYS} FOR UPDATE",
    "FOR SHARE in a subquery": (
        "SELECT * FROM (SELECT client_id, platform, 'k' FROM client_api_credentials "
        "FOR NO KEY UPDATE) AS q"
    ),
    "a plain INSERT": f"{WRITE} RETURNING n, n, n",
    "a comment hiding nothing from the parser": f"{KEYS} /* ; */ ; {WRITE} -- ;",
    "a dollar-quoted semicolon": f"SELECT $q$;$q$, 'b', 'c'; {WRITE}",
    "a line comment at the end": f"{KEYS}; {WRITE} -- the rest",
    "EXPLAIN ANALYZE": f"EXPLAIN ANALYZE {WRITE}",
    "a DO block": f"DO $$ BEGIN {WRITE}; END $$",
    "not SQL": f"{KEYS} ) ; (",
}
HARMLESS = {
    "a comment with a semicolon": f"/* ; {WRITE}; */ {KEYS} -- ; {WRITE}",
    "a dollar-quoted statement": f"SELECT client_id::text, platform, $x$; {WRITE};$x$ "
    "FROM client_api_credentials",
    "a trailing semicolon": f"{KEYS};",
    "a read-only WITH": f"WITH c AS ({KEYS}) SELECT * FROM c",
    "a UNION": f"{KEYS} WHERE platform = 'shopify' UNION ALL {KEYS} WHERE platform = 'amazon'",
}


@pytest.fixture
def victims(db):
    """A table a hostile query would write to, and a function that writes to it."""
    with db.cursor() as cur:
        cur.execute(VICTIMS)
        cur.execute(SNEAK)
    connect_clients(db, {ALICE: ("shopify", "amazon"), BOB: ("shopify",)})
    return db


def written(db) -> int:
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM victims")
        count = cur.fetchone()[0]
        cur.execute("SELECT to_regclass('stolen') IS NOT NULL")
        return count + int(cur.fetchone()[0])


def hostile_session(db_url):
    """A connection whose session defaults invite writes."""
    conn = psycopg2.connect(db_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SET SESSION default_transaction_read_only = off")
        cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
    return conn


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_text_that_could_write_is_refused_by_the_parser(text):
    assert refusal(text) is not None


@pytest.mark.parametrize("text", HARMLESS.values(), ids=HARMLESS.keys())
def test_one_select_is_accepted_whatever_its_comments_and_quotes_hold(text, victims, db_url):
    assert refusal(text) is None
    conn = hostile_session(db_url)
    try:
        with read_only(conn, text, 5.0) as cur:
            rows = cur.fetchall()
    finally:
        conn.close()
    assert len(rows) >= 3
    assert written(victims) == 0


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_text_writes_nothing_even_on_a_read_write_session(text, victims, db_url):
    conn = hostile_session(db_url)
    try:
        with pytest.raises(ChangeQueryError, match="refused"), read_only(conn, text, 5.0):
            pass
        assert conn.autocommit  # the connection comes back in its own mode
    finally:
        conn.close()
    assert written(victims) == 0


@pytest.mark.parametrize(
    "text",
    [
        "SELECT client_id::text, platform, sneak() FROM client_api_credentials",
        "SELECT 'a', 'b', set_config('transaction_read_only', 'off', true) || sneak()",
        "SELECT 'a', 'b', nextval('refresh_jobs_seq_for_test')::text",
    ],
    ids=["volatile function", "read-write from inside", "a sequence"],
)
def test_a_function_that_writes_fails_in_the_read_only_transaction(text, victims, db_url):
    with victims.cursor() as cur:
        cur.execute("CREATE SEQUENCE refresh_jobs_seq_for_test")
    assert refusal(text) is None  # the parser cannot see inside a function
    conn = hostile_session(db_url)
    try:
        with (
            pytest.raises(ChangeQueryError, match=r"read-only|read-write"),
            read_only(conn, text, 5.0),
        ):
            pass
    finally:
        conn.close()
    assert written(victims) == 0
    with victims.cursor() as cur:
        cur.execute("SELECT last_value, is_called FROM refresh_jobs_seq_for_test")
        assert cur.fetchone() == (1, False)


def test_the_server_reads_string_escapes_as_the_parser_did(victims, db_url):
    # With standard_conforming_strings off a backslash escapes a quote: the server would
    # then see the text's second string end early and run the INSERT after it.
    text = f"SELECT '\\', '; {WRITE}; --', 'c'"
    assert refusal(text) is None
    conn = hostile_session(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SET standard_conforming_strings = off")
        with read_only(conn, text, 5.0) as cur:
            assert cur.fetchall() == [("\\", f"; {WRITE}; --", "c")]
    finally:
        conn.close()
    assert written(victims) == 0


def test_a_run_with_the_balanced_parentheses_escape_writes_nothing(
    victims, db_url, backend, secret, tmp_path
):
    env = {
        "DATABASE_URL": db_url,
        "ANALYTICS_API_URL": backend.url,
        "API_SECRET_KEY": secret,
        "LOG_DIR": str(tmp_path / "logs"),
        "REFRESH_TIMEOUT": "5",
        "REFRESH_ADAPTIVE": "false",
        "REFRESH_CHANGE_SQL": HOSTILE["balanced parentheses"],
    }
    assert main(["run"], env) == 0
    warning = [line for line in log_lines(env) if "REFRESH_CHANGE_SQL could not be used" in line]
    assert warning
    assert "refused, not run" in warning[0]
    assert len(backend.refreshes()) == 5  # every job refreshed: never a silent skip
    assert written(victims) == 0
