"""Loopback servers and tables for the operations tools' tests.

``CachingBackend`` is tests/backend.py's scripted API that also writes the cache row a
real dashboard API writes on a successful answer. ``PingRecorder`` is a healthchecks.io
stand-in that records every ping; ``SilentMonitor`` accepts connections and never answers.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import psycopg2
from psycopg2 import sql

from tests.backend import Answer, Backend

CACHE_TABLE = """
    CREATE TABLE {table} (
        cache_key   text PRIMARY KEY,
        platform    text NOT NULL,
        params      jsonb NOT NULL DEFAULT '{{}}'::jsonb,
        response    jsonb NOT NULL,
        computed_at timestamptz NOT NULL DEFAULT now(),
        expires_at  timestamptz NOT NULL DEFAULT now() + interval '3 hours',
        compute_ms  integer NOT NULL DEFAULT 0
    )
"""

UPSERT_CACHE = """
    INSERT INTO {table} (cache_key, platform, params, response, computed_at)
    VALUES (%(key)s, %(platform)s, '{{}}', '{{}}', now())
    ON CONFLICT (cache_key) DO UPDATE SET computed_at = now()
"""


def cache_table(client_id: str) -> sql.Identifier:
    return sql.Identifier(f"{client_id}_cached_responses")


def create_cache_table(conn, client_id: str) -> None:
    """Create a client's cache table with the columns the reference API creates."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL(CACHE_TABLE).format(table=cache_table(client_id)))


class CachingBackend(Backend):
    """A scripted backend that rewrites the client's cache row on every 2xx answer."""

    def __init__(self, db_url: str):
        super().__init__()
        self.db_url = db_url
        self.broken_cache: set[tuple[str, str]] = set()  # answer 200, write nothing
        # A short poll makes stop() quick; the default waits up to half a second.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def next_answer(self, client_id: str, platform: str) -> Answer:
        answer = super().next_answer(client_id, platform)
        ok = 200 <= answer.status < 300 and not answer.drop
        if client_id and ok and (client_id, platform) not in self.broken_cache:
            self.write_cache(client_id, platform)
        return answer

    def write_cache(self, client_id: str, platform: str) -> None:
        conn = psycopg2.connect(self.db_url)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass(%s)", (cache_table(client_id).as_string(cur),))
                if cur.fetchone()[0] is not None:
                    query = sql.SQL(UPSERT_CACHE).format(table=cache_table(client_id))
                    cur.execute(query, {"key": f"inventory:{platform}", "platform": platform})
        finally:
            conn.close()


@dataclass
class Ping:
    path: str
    query: dict
    body: str


class PingRecorder:
    """A monitor that answers 200 OK and records each ping."""

    def __init__(self):
        self.pings: list[Ping] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _record(self):
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8") if length else ""
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                recorder.pings.append(Ping(parts.path, query, body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            do_GET = do_POST = do_HEAD = do_PUT = _record

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/ping/check-key"

    def paths(self) -> list[str]:
        return [p.path.removeprefix("/ping/check-key") for p in self.pings]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SilentMonitor:
    """Accepts connections and never answers: a hung monitor."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.accepted: list[socket.socket] = []
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()
        return f"http://{host}:{port}/ping/silent"

    def stop(self) -> None:
        self.running = False
        self.sock.close()
        for conn in self.accepted:
            conn.close()
