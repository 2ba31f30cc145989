"""A TCP proxy in front of the test PostgreSQL, on loopback, for the listener's fault tests.

It can drop every connection and refuse new ones for a while (what a client sees of a
database restart), and it can swallow notifications (NotificationResponse, message 'A'),
as a pooler in transaction mode does, so LISTEN seems to work but nothing arrives.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

import psycopg2.extensions


def backend_address(url: str):
    """Return (family, address) of the server a libpq URL points at."""
    dsn = psycopg2.extensions.parse_dsn(url)
    host = dsn.get("host") or "/tmp"
    port = int(dsn.get("port") or 5432)
    if host.startswith("/"):
        return socket.AF_UNIX, f"{host}/.s.PGSQL.{port}"
    return socket.AF_INET, (host, port)


class PgProxy:
    def __init__(self, url: str):
        self.url = url
        self.family, self.address = backend_address(url)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.swallow_notifications = False
        self.refusing = False
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.closed = False

    def client_url(self) -> str:
        """The URL that reaches the same database through the proxy."""
        dsn = psycopg2.extensions.parse_dsn(self.url)
        return psycopg2.extensions.make_dsn(
            host="127.0.0.1",
            port=str(self.port),
            dbname=dsn.get("dbname", "postgres"),
            user=dsn.get("user", "postgres"),
            sslmode="disable",
            gssencmode="disable",
        )

    def start(self) -> PgProxy:
        self.thread.start()
        return self

    def drop_all(self) -> None:
        """Close every proxied connection at once."""
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for a, b in pairs:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self.closed = True
        self.drop_all()
        self.listener.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            server = socket.socket(self.family, socket.SOCK_STREAM)
            try:
                server.connect(self.address)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.pairs.append((client, server))
            threading.Thread(target=self._pipe, args=(client, server), daemon=True).start()
            threading.Thread(target=self._from_server, args=(server, client), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        self._end(src, dst)

    def _from_server(self, src: socket.socket, dst: socket.socket) -> None:
        """Forward the server's messages one by one, leaving out notifications if asked."""
        buffer = b""
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                buffer += data
                out = b""
                while len(buffer) >= 5:
                    length = struct.unpack("!I", buffer[1:5])[0]
                    if len(buffer) < 1 + length:
                        break
                    message, buffer = buffer[: 1 + length], buffer[1 + length :]
                    if not (self.swallow_notifications and message[:1] == b"A"):
                        out += message
                if out:
                    dst.sendall(out)
        self._end(src, dst)

    def _end(self, a: socket.socket, b: socket.socket) -> None:
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
