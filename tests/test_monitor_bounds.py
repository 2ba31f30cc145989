"""Heartbeat pings and the Pushgateway push are bounded as a whole: a name that never
resolves and an answer trickled a byte at a time cost their bound, not forever."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from analytics_refresh.cli import main
from analytics_refresh.http import heartbeat
from analytics_refresh.ops import metrics
from tests.conftest import connect_clients, log_lines

ALICE = "3b619a14-3cd8-49fa-9c24-d8df5e54c452"
HANGING = ".hang.test"


@pytest.fixture
def hanging_dns(monkeypatch):
    """The system resolver, except that names under .hang.test never resolve."""
    real = socket.getaddrinfo
    released = threading.Event()

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, str) and host.endswith(HANGING):
            released.wait(60)  # a resolver that does not answer
            raise socket.gaierror(socket.EAI_AGAIN, "temporary failure")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield
    released.set()


class Trickler:
    """A loopback server that answers one byte every ``gap`` seconds, headers included."""

    ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n" + b"x" * 64

    def __init__(self, gap: float = 0.2, headers_first: bool = False):
        self.gap = gap
        self.headers_first = headers_first
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.stopped = threading.Event()
        self.cut_off = threading.Event()  # the client gave up and closed the connection
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                answer = self.ANSWER
                if self.headers_first:
                    split = answer.index(b"\r\n\r\n") + 4
                    conn.sendall(answer[:split])
                    answer = answer[split:]
                for byte in answer:
                    if self.stopped.wait(self.gap):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                self.cut_off.set()

    def stop(self) -> None:
        self.stopped.set()
        self.sock.close()


@pytest.fixture(params=[False, True], ids=["status line trickled", "body trickled"])
def trickler(request):
    server = Trickler(headers_first=request.param)
    yield server
    server.stop()


def timed(call) -> tuple[object, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_a_ping_to_a_name_that_never_resolves_ends_in_its_bound(hanging_dns, caplog):
    beat = heartbeat.Heartbeat(f"http://monitor{HANGING}/ping/key", timeout=1.0)
    sent, elapsed = timed(lambda: beat.start("run-1"))
    assert sent is False
    assert elapsed < 1.5
    assert "no answer within 1s" in caplog.text


def test_a_ping_answered_a_byte_at_a_time_ends_in_its_bound(trickler, caplog):
    beat = heartbeat.Heartbeat(f"{trickler.url}/ping/key", timeout=1.0)
    sent, elapsed = timed(lambda: beat.finish(0, "log tail", "run-1"))
    assert sent is False  # 80 bytes at 0.2 s each would take 16 s
    assert elapsed < 1.5
    assert "no answer within 1s" in caplog.text
    assert trickler.cut_off.wait(1.0)  # the request ended, not just the wait for it


@pytest.mark.parametrize("shape", ["dns", "trickle"])
def test_a_run_pushing_to_a_gateway_that_hangs_ends_in_the_push_bound(shape, run_env, db, request):
    connect_clients(db, {ALICE: ("shopify",)})
    if shape == "dns":
        request.getfixturevalue("hanging_dns")
        gateway = f"http://gateway{HANGING}:9091"
    else:
        server = Trickler(headers_first=True)
        request.addfinalizer(server.stop)
        gateway = server.url
    env = {**run_env, "METRICS_PUSHGATEWAY_URL": gateway, "REFRESH_PLATFORMS": "shopify"}
    code, elapsed = timed(lambda: main(["run"], env))
    assert code == 0
    assert elapsed < metrics.PUSH_TIMEOUT_SECONDS + 4.0
    line = next(x for x in log_lines(env) if "Cannot push metrics to the Pushgateway" in x)
    assert f"no answer within {metrics.PUSH_TIMEOUT_SECONDS:g}s" in line


def test_a_run_whose_heartbeat_trickles_ends_in_two_ping_bounds(run_env, db):
    connect_clients(db, {ALICE: ("shopify",)})
    server = Trickler(headers_first=True)
    try:
        env = {**run_env, "HEALTHCHECK_URL": f"{server.url}/ping/key"}
        env["REFRESH_PLATFORMS"] = "shopify"
        code, elapsed = timed(lambda: main(["run"], env))
    finally:
        server.stop()
    assert code == 0
    assert elapsed < 2 * heartbeat.PING_TIMEOUT_SECONDS + 4.0
    failed = [x for x in log_lines(env) if "Heartbeat ping" in x and "failed" in x]
    assert len(failed) == 2  # /start and /0
