"""Serve an app on a loopback port from a background thread (development, demo, tests)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

# How soon stop() takes effect: the serving loop checks for it this often.
STOP_POLL_SECONDS = 0.05


class _Handler(WSGIRequestHandler):
    # Headers and body go out in separate writes; without TCP_NODELAY the client's delayed
    # ACK holds each keep-alive response back by about 40 ms.
    disable_nagle_algorithm = True
    # Errors the HTTP layer answers before the app sees the request (a request line over
    # 64 KiB, a malformed request) are JSON too, like every other error of the API.
    error_content_type = "application/json"
    error_message_format = '{"error": "%(message)s"}'

    def send_error(self, code, message=None, explain=None) -> None:
        """Answer ``code`` with a JSON body, whatever the message quotes from the request."""
        # The message may quote the request ("Bad request version ('HTTP/1."x')"), and
        # http.server escapes it for HTML only: escape it for JSON first.
        text = message or self.responses.get(code, ("error",))[0]
        super().send_error(code, json.dumps(text, ensure_ascii=True)[1:-1], explain)


class _QuietHandler(_Handler):
    def log_request(self, code="-", size="-") -> None:
        """Log nothing per request (errors are still logged)."""


@dataclass
class BackgroundServer:
    """A running server: its base URL, and how to stop it."""

    url: str
    server: BaseWSGIServer
    thread: threading.Thread

    def stop(self) -> None:
        """Stop serving, wait for the serving thread, and close the socket."""
        self.server.shutdown()
        self.thread.join()
        self.server.server_close()

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_background(
    app: Flask, host: str = "127.0.0.1", port: int = 0, *, log_requests: bool = False
) -> BackgroundServer:
    """Serve ``app`` on ``host:port`` (0: any free port) from a thread; return its handle."""
    handler = _Handler if log_requests else _QuietHandler
    server = make_server(host, port, app, threaded=True, request_handler=handler)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": STOP_POLL_SECONDS},
        name="dashboard-api",
        daemon=True,
    )
    thread.start()
    shown = f"[{host}]" if ":" in host else host
    return BackgroundServer(f"http://{shown}:{server.server_port}", server, thread)


def serve(app: Flask, host: str = "127.0.0.1", port: int = 5000) -> None:
    """Serve ``app`` on ``host:port`` until interrupted (Ctrl-C)."""
    server = make_server(host, port, app, threaded=True, request_handler=_Handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
