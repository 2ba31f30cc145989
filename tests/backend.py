"""A small real HTTP backend for the runner's tests: scripted answers, recorded requests.

Each (client_id, platform) gets a script: a list of answers used in order, the last one
repeated. An answer is a status with a body, a sleep, or a dropped connection. Every
request is recorded with its query and headers, so tests assert exactly what was sent.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Answer:
    status: int = 200
    body: object = None  # dict/list -> JSON, str -> as is, None -> a default success body
    headers: dict = field(default_factory=dict)
    sleep: float = 0.0
    drop: bool = False  # close the connection without answering
    truncate: bool = False  # send the headers and half the body, then close
    trickle: float = 0.0  # seconds between single bytes of the body


OK = Answer()


@dataclass
class Request:
    path: str
    query: dict
    headers: dict
    at: float


class Backend:
    """The server plus its scripts and its request log."""

    def __init__(self):
        self.scripts: dict[tuple[str, str], list[Answer]] = {}
        self.default = OK
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        # A short poll: shutdown() waits up to one, and every test stops a backend.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, client_id: str, platform: str, *answers: Answer) -> None:
        self.scripts[(client_id, platform)] = list(answers)

    def next_answer(self, client_id: str, platform: str) -> Answer:
        with self.lock:
            script = self.scripts.get((client_id, platform))
            if not script:
                return self.default
            return script.pop(0) if len(script) > 1 else script[0]

    def refreshes(self) -> list[Request]:
        return [r for r in self.requests if r.path.endswith("inventory-analytics")]

    def start(self) -> Backend:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def default_body(client_id: str, platform: str) -> dict:
    platforms = ["shopify", "amazon"] if platform == "all" else [platform]
    return {
        "client_id": client_id,
        "platform": platform,
        "platforms": platforms,
        "sku_count": 7,
        "cached": False,
    }


def _handler(backend: Backend):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # TCP_NODELAY: headers and body go in two writes, and without it the client's
        # delayed ACK stalls every answer by about 40 ms.
        disable_nagle_algorithm = True

        def log_message(self, *args):  # keep test output clean
            pass

        def do_GET(self):
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            with backend.lock:
                backend.requests.append(
                    Request(parts.path, query, dict(self.headers.items()), time.monotonic())
                )
            answer = backend.next_answer(query.get("client_id", ""), query.get("platform", ""))
            if answer.sleep:
                time.sleep(answer.sleep)
            if answer.drop:
                self.close_connection = True
                self.connection.shutdown(2)
                return
            body = answer.body
            if body is None:
                body = default_body(query.get("client_id", ""), query.get("platform", ""))
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(answer.status)
            ctype = "text/html" if isinstance(body, str) else "application/json"
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if answer.trickle:
                for byte in data:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(answer.trickle)
                return
            if answer.truncate:
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(data)

    return Handler
