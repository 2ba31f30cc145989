"""A TCP proxy on loopback in front of PostgreSQL that can stop forwarding.

``freeze()`` is a server that hangs, or a network path that silently drops everything:
the proxy keeps every connection open and accepts new ones (so the kernel acknowledges
all packets), but no byte passes either way until ``thaw()``.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading

import psycopg2.extensions


def upstream_of(url: str) -> tuple[int, object]:
    """Return the socket family and address libpq would connect to for ``url``."""
    params = psycopg2.extensions.parse_dsn(url)
    host = params.get("host", "/tmp")
    port = int(params.get("port", 5432))
    if host.startswith("/"):
        return socket.AF_UNIX, f"{host}/.s.PGSQL.{port}"
    return socket.AF_INET, (host, port)


class SilentProxy:
    """Forwards 127.0.0.1:<port> to a PostgreSQL server until frozen."""

    def __init__(self, server_url: str):
        self.family, self.address = upstream_of(server_url)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.frozen = threading.Event()
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._threads = [
            threading.Thread(target=self._accept, daemon=True),
            threading.Thread(target=self._pump, daemon=True),
        ]

    def url(self, db_url: str) -> str:
        """``db_url`` (same user, password and database) through this proxy."""
        return psycopg2.extensions.make_dsn(db_url, host="127.0.0.1", port=str(self.port))

    def start(self) -> SilentProxy:
        for thread in self._threads:
            thread.start()
        return self

    def freeze(self) -> None:
        self.frozen.set()

    def thaw(self) -> None:
        self.frozen.clear()

    def stop(self) -> None:
        self._stopped.set()
        self.listener.close()
        with self._lock:
            for sock in list(self._pairs):
                with contextlib.suppress(OSError):
                    sock.close()
            self._pairs.clear()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.socket(self.family, socket.SOCK_STREAM)
            try:
                server.connect(self.address)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs[client] = server
                self._pairs[server] = client

    def _pump(self) -> None:
        while not self._stopped.is_set():
            if self.frozen.is_set():
                self._stopped.wait(0.05)
                continue
            with self._lock:
                socks = list(self._pairs)
            if not socks:
                self._stopped.wait(0.01)
                continue
            try:
                readable, _, _ = select.select(socks, [], [], 0.05)
            except (OSError, ValueError):
                self._drop_closed()
                continue
            for sock in readable:
                if self.frozen.is_set():
                    break
                self._forward(sock)

    def _forward(self, sock: socket.socket) -> None:
        with self._lock:
            peer = self._pairs.get(sock)
        if peer is None:
            return
        try:
            data = sock.recv(65536)
            if data:
                peer.sendall(data)
                return
        except OSError:
            pass
        with self._lock:  # one side closed: close both, as a real path would
            for s in (sock, peer):
                self._pairs.pop(s, None)
                with contextlib.suppress(OSError):
                    s.close()

    def _drop_closed(self) -> None:
        with self._lock:
            for sock in [s for s in self._pairs if s.fileno() < 0]:
                self._pairs.pop(sock, None)
