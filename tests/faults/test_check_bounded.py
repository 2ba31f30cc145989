"""The preflight `check` is as bounded as a run: a hostile /health is a failed line in time,
in bounded memory, never a hang or a traceback."""

from __future__ import annotations

import time

import pytest

from analytics_refresh.cli import main
from tests.faults.test_hostile_http import Hostile, answer, bomb, peak_growth, response, trickle

MiB = 2**20


def _trickled_headers(sock, _line):
    sock.sendall(b"HTTP/1.1 200 OK\r\n")
    trickle(sock, b"X-Slow: " + b"a" * 60, 0.1)
    return False


def _endless_body(sock, _line):
    sock.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"status": "')
    while True:
        sock.sendall(b"a" * 65536)


def _deep(sock, _line):
    sock.sendall(response(200, b"[" * 100_000 + b"]" * 100_000, "Content-Type: application/json"))
    return False


def _bomb(sock, _line):
    sock.sendall(response(200, bomb("gzip"), "Content-Encoding: gzip"))
    return False


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (_trickled_headers, "timed out"),
        (_endless_body, ("HTTP 200", "timed out")),
        (_deep, "HTTP 200"),
        (_bomb, ("HTTP 200", "timed out")),
        (answer(503, b"<html>\x00\xff\xfe\x1b[31m</html>"), "HTTP 503"),
    ],
)
def test_a_hostile_health_answer_is_a_bounded_check_line(
    run_env, clients, capsys, script, expected
):
    server = Hostile(script)
    env = {**run_env, "ANALYTICS_API_URL": server.url, "REFRESH_TIMEOUT": "2"}
    started = time.monotonic()
    code, grown = peak_growth(lambda: main(["check"], env))
    elapsed = time.monotonic() - started
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "API /health answers" in line)
    assert elapsed < 8, f"check took {elapsed:.1f}s"
    assert grown < 80 * MiB, f"check held {grown / MiB:.0f} MiB"
    assert "Traceback" not in out
    assert any(word in line for word in ((expected,) if isinstance(expected, str) else expected))
    # The API answers every request this way: each job of a run would fail, so exit 1.
    assert code == 1, out
    assert "\x00" not in out
    server.stop()
