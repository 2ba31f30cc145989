"""Each client's cached dashboards, in its own table ``"<client_id>_cached_responses"``.

The table name is built only from a validated UUID and quoted with ``sql.Identifier``.
A refresh replaces a row with one ``INSERT ... ON CONFLICT DO UPDATE``, so a reader sees
the old copy or the new one, never neither. Refreshes of one key are serialised by a
transaction-level advisory lock; one that waited answers what the other just stored.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from psycopg2 import sql
from psycopg2.extras import Json

TABLE_SUFFIX = "_cached_responses"
# First key of the two-key advisory locks this module takes, so they never collide with
# the runner's or another application's single-key locks.
LOCK_CLASS = 0x0DA5_CAC0
MEMO_MAX_BYTES = 64 * 1024 * 1024

CREATE_TABLE = sql.SQL("""
    CREATE TABLE IF NOT EXISTS {table} (
        cache_key   text PRIMARY KEY,
        platform    text NOT NULL,
        params      jsonb NOT NULL,
        response    jsonb NOT NULL,
        computed_at timestamptz NOT NULL,
        expires_at  timestamptz NOT NULL,
        compute_ms  integer NOT NULL
    );
    -- Stored uncompressed: compressing a dashboard of megabytes costs more time on every
    -- refresh and every read than the disk it saves in a table of a few rows.
    ALTER TABLE {table} ALTER COLUMN response SET STORAGE EXTERNAL
""")
TABLE_EXISTS = "SELECT to_regclass(%s) IS NOT NULL"
XACT_LOCK = "SELECT pg_advisory_xact_lock(%s, hashtext(%s))"
SELECT_META = sql.SQL(
    "SELECT computed_at, expires_at, compute_ms FROM {table} WHERE cache_key = %s"
)
# As text: a cached answer is sent as stored, never parsed and serialised again.
SELECT_ROW = sql.SQL("""
    SELECT computed_at, expires_at, compute_ms, response::text
    FROM {table} WHERE cache_key = %s
""")
UPSERT_ROW = sql.SQL("""
    INSERT INTO {table}
        (cache_key, platform, params, response, computed_at, expires_at, compute_ms)
    VALUES (%(cache_key)s, %(platform)s, %(params)s, %(response)s::jsonb,
            %(computed_at)s, %(expires_at)s, %(compute_ms)s)
    ON CONFLICT (cache_key) DO UPDATE SET
        platform = EXCLUDED.platform,
        params = EXCLUDED.params,
        response = EXCLUDED.response,
        computed_at = EXCLUDED.computed_at,
        expires_at = EXCLUDED.expires_at,
        compute_ms = EXCLUDED.compute_ms
""")


@dataclass(frozen=True)
class CachedResponse:
    """One stored dashboard: its JSON (UTF-8) and when it was computed and expires."""

    computed_at: dt.datetime
    expires_at: dt.datetime
    compute_ms: int
    body: bytes

    @property
    def fresh(self) -> bool:
        return self.expires_at > dt.datetime.now(dt.timezone.utc)

    def answer(self, *, cached: bool) -> bytes:
        """Return the stored JSON with ``"cached"`` added, without parsing it."""
        # The stored object never holds "cached" (see save_cached_response), so adding
        # the key in front keeps the text valid JSON.
        return (b'{"cached": true, ' if cached else b'{"cached": false, ') + self.body[1:]


class Memo:
    """The latest bodies this process read or stored, by client, key and version.

    A large dashboard takes PostgreSQL longer to turn from jsonb into text than the whole
    rest of a cached read; the version (``computed_at``) is still read from the table
    every time, so a body is only reused while it is the one stored.
    """

    def __init__(self, max_bytes: int = MEMO_MAX_BYTES):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str], tuple[dt.datetime, bytes]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, client_id: str, cache_key: str, version: dt.datetime) -> bytes | None:
        with self._lock:
            entry = self._entries.get((client_id, cache_key))
            if entry is None or entry[0] != version:
                return None
            self._entries.move_to_end((client_id, cache_key))
            return entry[1]

    def put(self, client_id: str, cache_key: str, version: dt.datetime, body: bytes) -> None:
        if len(body) > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop((client_id, cache_key), None)
            self._size -= len(old[1]) if old else 0
            self._entries[(client_id, cache_key)] = (version, body)
            self._size += len(body)
            while self._size > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._size -= len(evicted)


def expiry(computed_at: dt.datetime, ttl_seconds: int) -> dt.datetime:
    """Return until when a copy computed at ``computed_at`` holds, to the microsecond."""
    return computed_at + dt.timedelta(seconds=ttl_seconds)


def table_name(client_id: str) -> str:
    """Return the cache table's name for ``client_id``, which must be a UUID."""
    return f"{uuid.UUID(str(client_id))}{TABLE_SUFFIX}"


def _table(client_id: str) -> sql.Identifier:
    return sql.Identifier(table_name(client_id))


def _table_exists(cur, client_id: str) -> bool:
    cur.execute(TABLE_EXISTS, (_table(client_id).as_string(cur),))
    return cur.fetchone()[0]


def ensure_table(conn, client_id: str) -> None:
    """Create the client's cache table unless it exists, and commit."""
    with conn.cursor() as cur:
        if not _table_exists(cur, client_id):
            # Two first requests at once would both try to create it, and the loser of an
            # unlocked race fails on the catalogue's unique index instead of waiting.
            cur.execute(XACT_LOCK, (LOCK_CLASS, table_name(client_id)))
            cur.execute(CREATE_TABLE.format(table=_table(client_id)))
    conn.commit()


def get_cached_response(
    conn, client_id: str, cache_key: str, *, memo: Memo | None = None
) -> CachedResponse | None:
    """Return the stored dashboard under ``cache_key``, or None when there is none."""
    with conn.cursor() as cur:
        if not _table_exists(cur, client_id):
            return None
        cur.execute(SELECT_META.format(table=_table(client_id)), (cache_key,))
        meta = cur.fetchone()
        if meta is None:
            return None
        body = memo.get(client_id, cache_key, meta[0]) if memo else None
        if body is not None:
            return CachedResponse(*meta, body)
        # Read the whole row again: it may have been replaced since the first read.
        cur.execute(SELECT_ROW.format(table=_table(client_id)), (cache_key,))
        computed_at, expires_at, compute_ms, text = cur.fetchone()
    stored = CachedResponse(computed_at, expires_at, compute_ms, text.encode())
    if memo:
        memo.put(client_id, cache_key, computed_at, stored.body)
    return stored


def cached_version(conn, client_id: str, cache_key: str) -> dt.datetime | None:
    """Return when the dashboard under ``cache_key`` was computed, or None."""
    with conn.cursor() as cur:
        if not _table_exists(cur, client_id):
            return None
        cur.execute(SELECT_META.format(table=_table(client_id)), (cache_key,))
        row = cur.fetchone()
    return row[0] if row else None


def save_cached_response(
    conn,
    client_id: str,
    cache_key: str,
    *,
    platform: str,
    params: dict,
    response: dict | str,
    computed_at: dt.datetime,
    ttl_seconds: int,
    compute_ms: int,
    memo: Memo | None = None,
) -> CachedResponse:
    """Store ``response`` (an object, or its JSON text) under ``cache_key``, in place.

    ``"cached"`` is added when a copy is answered, so it is never stored: dropped from an
    object, and JSON text must not hold it.
    """
    if not isinstance(response, str):
        response = json.dumps({key: value for key, value in response.items() if key != "cached"})
    expires_at = expiry(computed_at, ttl_seconds)
    with conn.cursor() as cur:
        cur.execute(
            UPSERT_ROW.format(table=_table(client_id)),
            {
                "cache_key": cache_key,
                "platform": platform,
                "params": Json(params),
                "response": response,
                "computed_at": computed_at,
                "expires_at": expires_at,
                "compute_ms": compute_ms,
            },
        )
    stored = CachedResponse(computed_at, expires_at, compute_ms, response.encode())
    if memo:
        memo.put(client_id, cache_key, computed_at, stored.body)
    return stored


def refresh(
    conn,
    client_id: str,
    cache_key: str,
    seen: dt.datetime | None,
    compute: Callable[[], CachedResponse],
    *,
    memo: Memo | None = None,
) -> tuple[CachedResponse, bool]:
    """Store a new dashboard under ``cache_key`` unless another request just did.

    ``seen`` is the version the caller found before asking (None: no row). Under the key's
    lock, a row whose version differs from it was stored by a refresh that ran while this
    one waited: it is answered as it is (second value False) instead of being computed
    again. Otherwise ``compute`` runs and stores one, in this same transaction (True).
    The caller commits, which releases the lock.
    """
    with conn.cursor() as cur:
        cur.execute(XACT_LOCK, (LOCK_CLASS, lock_name(client_id, cache_key)))
    current = get_cached_response(conn, client_id, cache_key, memo=memo)
    if current is not None and current.computed_at != seen:
        return current, False
    return compute(), True


def lock_name(client_id: str, cache_key: str) -> str:
    """Return the text whose hash names the advisory lock of one cache key."""
    return f"{table_name(client_id)}/{cache_key}"
