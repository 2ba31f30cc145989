"""A TCP proxy in front of the test PostgreSQL that can go silent: connections stay open,
nothing is forwarded, as with a hung server or a dead network path behind a live peer."""

from __future__ import annotations

import contextlib
import select
import socket
import threading

import psycopg2.extensions


class SilentProxy:
    """Forwards 127.0.0.1:<port> to the server of ``url`` until ``freeze()``."""

    def __init__(self, url: str):
        params = psycopg2.extensions.parse_dsn(url)
        host = params.get("host") or "/tmp"
        port = int(params.get("port") or 5432)
        if host.startswith("/"):
            self.target: tuple = (socket.AF_UNIX, f"{host}/.s.PGSQL.{port}")
        else:
            self.target = (socket.AF_INET, (host, port))
        self.url = url
        self.frozen = threading.Event()
        self._closed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._sockets: list[socket.socket] = []
        self.port = self._listener.getsockname()[1]

    def dsn(self) -> str:
        return psycopg2.extensions.make_dsn(self.url, host="127.0.0.1", port=self.port)

    def start(self) -> SilentProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def freeze(self) -> None:
        self.frozen.set()

    def thaw(self) -> None:
        self.frozen.clear()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            family, address = self.target
            server = socket.socket(family, socket.SOCK_STREAM)
            server.connect(address)
            self._sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        while not self._closed.is_set():
            if self.frozen.is_set():
                self._closed.wait(0.05)  # hold everything: read nothing, send nothing
                continue
            try:
                ready, _, _ = select.select(list(peers), [], [], 0.05)
                for sock in ready:
                    if self.frozen.is_set():
                        break
                    data = sock.recv(65536)
                    if not data:
                        return self._shut(a, b)
                    peers[sock].sendall(data)
            except OSError:
                return self._shut(a, b)

    @staticmethod
    def _shut(a: socket.socket, b: socket.socket) -> None:
        for sock in (a, b):
            with contextlib.suppress(OSError):
                sock.close()
