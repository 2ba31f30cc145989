"""Hostile HTTP backends: every attempt bounded in time and memory, every answer classified.

Each backend is a raw socket server on loopback that answers however the test scripts it:
trickled headers, bombs, bottomless nesting, bytes no text should hold. The real
RefreshClient (and, for a few, the real run through the CLI) is pointed at it.
"""

from __future__ import annotations

import functools
import json
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from analytics_refresh.cli import main
from analytics_refresh.config.settings import Settings
from analytics_refresh.http.client import RefreshClient, Verdict
from analytics_refresh.http.probe import probe
from analytics_refresh.http.transport import new_session
from analytics_refresh.store.plan import Job
from tests.conftest import log_lines
from tests.runs import CAROL, jobs

ROOT = Path(__file__).resolve().parents[2]
ENDPOINT = "/api/dashboard/inventory-analytics"
JOB = Job(CAROL, "amazon")
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0ZXN0LXRva2VuIn0.c2lnbmF0dXJlLXBhcnQ"
TIMEOUT = 0.5
# Time allowed past the timeout for the cut to land and the attempt to return.
SLACK = 0.4


# -- the hostile server ----------------------------------------------------------------------
class Hostile:
    """A loopback server that reads each request's head and hands the socket to a script.

    ``script(sock, request_line)`` writes whatever it likes and returns True to keep the
    connection open for the next request. Scripts stop when the client goes away.
    """

    def __init__(self, script: Callable[[socket.socket, str], bool]):
        self.script = script
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.connections = 0
        self.requests: list[str] = []
        self.stopping = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            with sock:
                buffer = b""
                while not self.stopping.is_set():
                    while b"\r\n\r\n" not in buffer:
                        data = sock.recv(65536)
                        if not data:
                            return
                        buffer += data
                    head, buffer = buffer.split(b"\r\n\r\n", 1)
                    line = head.split(b"\r\n", 1)[0].decode("latin-1")
                    self.requests.append(line)
                    if not self.script(sock, line):
                        return
        except OSError:
            return  # the client cut the connection: what most scripts wait for

    def stop(self) -> None:
        self.stopping.set()
        self.listener.close()


@pytest.fixture
def hostile():
    servers: list[Hostile] = []

    def start(script) -> Hostile:
        servers.append(Hostile(script))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def response(status: int, body: bytes, *headers: str, length: bool = True) -> bytes:
    lines = [f"HTTP/1.1 {status} Whatever", "Content-Type: application/json", *headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def answer(status: int, body: bytes | str | dict, *headers: str):
    """A script that answers every request at once, keeping the connection alive."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    data = data.encode() if isinstance(data, str) else data
    whole = response(status, data, *headers)

    def script(sock, _line) -> bool:
        sock.sendall(whole)
        return True

    return script


def trickle(sock: socket.socket, data: bytes, interval: float) -> None:
    for i in range(len(data)):
        sock.sendall(data[i : i + 1])
        time.sleep(interval)


def make_client(url: str, concurrency: int = 2) -> RefreshClient:
    environ = {"ANALYTICS_API_URL": url, "REFRESH_CONCURRENCY": str(concurrency)}
    return RefreshClient(Settings.from_env(environ))


def refresh(url: str, timeout: float = TIMEOUT):
    client = make_client(url)
    try:
        return client.refresh(JOB, TOKEN, timeout)
    finally:
        client.close()


OK_BODY = json.dumps({"platforms": ["amazon"], "sku_count": 7}).encode()


# -- 1. time limits in every phase ------------------------------------------------------------
def _headers_trickled(sock, _line):
    trickle(sock, b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 100, 0.1)


def _status_line_trickled(sock, _line):
    trickle(sock, b"HTTP/1.1 200 OK\r\n", 0.1)


def _nothing_sent(sock, _line):
    time.sleep(TIMEOUT + 2 * SLACK)


def _body_trickled(sock, _line):
    body = b'{"platforms": ["amazon"], "sku_count": 7, "pad": "' + b"x" * 100 + b'"}'
    sock.sendall(response(200, b"", f"Content-Length: {len(body)}", length=False))
    trickle(sock, body, 0.1)


def _body_without_length_trickled(sock, _line):
    # Without a length the watchdog's cut looks like the end of the body: still a timeout.
    sock.sendall(response(200, b"", "Connection: close", length=False))
    trickle(sock, OK_BODY[:-1] + b" " * 100, 0.1)


def _chunked_body_trickled(sock, _line):
    sock.sendall(response(200, b"", "Transfer-Encoding: chunked", length=False))
    for _ in range(100):
        sock.sendall(b"1\r\n \r\n")
        time.sleep(0.1)


def _error_body_trickled(sock, _line):
    body = json.dumps({"error": "slow " * 50}).encode()
    sock.sendall(response(503, b"", f"Content-Length: {len(body)}", length=False))
    trickle(sock, body, 0.1)


TIME_CASES = {
    "headers trickled": _headers_trickled,
    "status line trickled": _status_line_trickled,
    "nothing sent": _nothing_sent,
    "body trickled": _body_trickled,
    "body without length trickled": _body_without_length_trickled,
    "chunked body trickled": _chunked_body_trickled,
    "error body trickled": _error_body_trickled,
}


@pytest.mark.parametrize("case", TIME_CASES)
def test_every_phase_is_cut_off_at_the_timeout(hostile, case):
    server = hostile(TIME_CASES[case])
    started = time.monotonic()
    attempt = refresh(server.url)
    elapsed = time.monotonic() - started
    assert attempt.verdict is Verdict.RETRY
    assert attempt.error == f"timed out after {TIMEOUT:g}s"
    assert TIMEOUT - 0.05 <= elapsed < TIMEOUT + SLACK
    assert attempt.elapsed == pytest.approx(elapsed, abs=0.05)


def test_a_connection_cut_by_the_watchdog_does_not_poison_the_next_request(hostile):
    calls = []

    def script(sock, _line) -> bool:
        calls.append(1)
        if len(calls) == 1:
            _headers_trickled(sock, _line)
            return False
        sock.sendall(response(200, OK_BODY))
        return True

    server = hostile(script)
    client = make_client(server.url, concurrency=1)
    try:
        first = client.refresh(JOB, TOKEN, TIMEOUT)
        answers = [client.refresh(JOB, TOKEN, TIMEOUT) for _ in range(20)]
    finally:
        client.close()
    assert first.error == f"timed out after {TIMEOUT:g}s"
    assert [a.verdict for a in answers] == [Verdict.SUCCESS] * 20
    assert {(a.platform_count, a.sku_count) for a in answers} == {(1, 7)}
    # The cut connection was replaced once; the new one was kept alive for the rest.
    assert server.connections == 2


def test_concurrent_attempts_are_cut_each_at_its_own_time(hostile):
    """Slow and fast attempts share one pooled session: only the slow ones are cut."""

    def script(sock, line) -> bool:
        if "platform=shopify" in line:
            _headers_trickled(sock, line)
            return False
        sock.sendall(response(200, OK_BODY))
        return True

    server = hostile(script)
    client = make_client(server.url, concurrency=8)
    results: dict[str, list] = {"shopify": [], "amazon": []}

    def work(platform: str, timeout: float) -> None:
        for _ in range(1 if platform == "shopify" else 100):
            started = time.monotonic()
            attempt = client.refresh(Job(CAROL, platform), TOKEN, timeout)
            results[platform].append((attempt, time.monotonic() - started, timeout))

    threads = [threading.Thread(target=work, args=("shopify", 0.4 + 0.2 * i)) for i in range(4)] + [
        threading.Thread(target=work, args=("amazon", 0.5)) for _ in range(4)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    finally:
        client.close()
    assert len(results["shopify"]) == 4
    for attempt, elapsed, timeout in results["shopify"]:
        assert attempt.error == f"timed out after {timeout:g}s"
        assert timeout - 0.05 <= elapsed < timeout + SLACK
    assert len(results["amazon"]) == 400
    assert {a.verdict for a, _, _ in results["amazon"]} == {Verdict.SUCCESS}


def test_a_run_against_trickled_headers_ends_within_its_timeouts(hostile, run_env, clients, db):
    server = hostile(_headers_trickled)
    env = {**run_env, "ANALYTICS_API_URL": server.url, "REFRESH_TIMEOUT": "1"}
    env["REFRESH_MAX_ATTEMPTS"] = "1"
    started = time.monotonic()
    code = main(["run", "--client", CAROL, "--platform", "amazon"], environ=env)
    elapsed = time.monotonic() - started
    assert code == 1
    # One attempt of 1 s, plus the run's own work (its database, its log).
    assert elapsed < 2.5
    status, attempts, http_status, *_, error = jobs(db)[(CAROL, "amazon")]
    assert (status, attempts, http_status) == ("failed", 1, None)
    assert error.startswith("timed out after 1s")
    assert any("timed out after 1s after 1 attempt" in line for line in log_lines(env))


# -- 2. memory bounded for any answer ---------------------------------------------------------
MiB = 2**20


@functools.cache
def bomb(encoding: str, top: str = "object", blocks: int = 83) -> bytes:
    """About 250 KiB that decodes to ``blocks`` times 3 MiB of ``{"skus": [{},{},...]}``."""
    if encoding == "gzip, gzip":
        return zlib.compress(bomb("gzip"), 9, 31)
    if top == "object":
        head, tail = b'{"platforms": ["amazon"], "skus": [', b"{}]}"
    else:
        head, tail = b"[", b"{}]"
    block = b"{}," * 2**20
    wbits = {"gzip": 31, "deflate": 15, "raw deflate": -15}[encoding]
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    parts = [packer.compress(head)]
    parts += [packer.compress(block) for _ in range(blocks)]
    parts += [packer.compress(tail), packer.flush()]
    return b"".join(parts)


@functools.cache
def string_bomb(size: int) -> bytes:
    """Gzip of a list of 1 MB strings, ``size`` bytes decoded: quick to scan, large."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    item = b'"' + b"a" * (MiB // 4) + b'",'
    parts = [packer.compress(b'{"platforms": [], "x": [')]
    parts += [packer.compress(item) for _ in range(size // len(item))]
    parts += [packer.compress(b'""]}'), packer.flush()]
    return b"".join(parts)


def _encoding_header(encoding: str) -> str:
    return "Content-Encoding: " + encoding.replace("raw deflate", "deflate")


def peak_growth(call: Callable[[], object]) -> tuple[object, int]:
    """Run ``call``; return its result and the most Python memory it held at once."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        result = call()
        return result, tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw deflate", "gzip, gzip"])
def test_a_compression_bomb_is_read_in_bounded_memory(hostile, encoding):
    # 249 MiB decoded for gzip; 96 MiB for the others, as quick to make as to refuse.
    data = bomb(encoding, blocks=83 if encoding.startswith("gzip") else 32)
    assert len(data) < 300 * 2**10
    server = hostile(answer(200, data, _encoding_header(encoding)))
    attempt, growth = peak_growth(lambda: refresh(server.url))
    # It cannot be read in time (and would be too large): a timeout, never the memory.
    assert attempt.verdict is Verdict.RETRY
    assert attempt.error == f"timed out after {TIMEOUT:g}s"
    assert growth < 10 * MiB


def test_an_answer_past_the_size_cap_decoded_is_refused(hostile):
    data = string_bomb(300 * MiB)
    assert len(data) < MiB
    server = hostile(answer(200, data, _encoding_header("gzip")))
    attempt, growth = peak_growth(lambda: refresh(server.url, timeout=15))
    assert (attempt.verdict, attempt.error) == (
        Verdict.FAIL,
        "invalid response (larger than 256 MiB)",
    )
    assert growth < 10 * MiB


def test_a_bomb_that_is_not_an_object_is_refused_at_its_first_byte(hostile):
    server = hostile(answer(200, bomb("gzip", top="list", blocks=32), _encoding_header("gzip")))
    (attempt, growth) = peak_growth(lambda: refresh(server.url))
    assert (attempt.verdict, attempt.error) == (
        Verdict.FAIL,
        "invalid response (not a JSON object)",
    )
    assert attempt.elapsed < 0.2
    assert growth < 5 * MiB  # one chunk's events


def test_a_gzip_bomb_takes_no_memory_in_a_process_of_its_own(hostile):
    """Resident memory, C allocations included, of a fresh process reading the bomb."""
    server = hostile(answer(200, bomb("gzip"), _encoding_header("gzip")))
    code = (
        "import resource, sys\n"
        "from analytics_refresh.http.client import RefreshClient\n"
        "from analytics_refresh.store.plan import Job\n"
        "from analytics_refresh.config.settings import Settings\n"
        "c = RefreshClient(Settings.from_env({'ANALYTICS_API_URL': sys.argv[1]}))\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "a = c.refresh(Job(sys.argv[2], 'amazon'), 'token', 1.0)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(a.error, after - before)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, server.url, CAROL],
        capture_output=True,
        text=True,
        # cwd: the session's empty directory (conftest), never the checkout and its .env
        timeout=30,
        check=True,
    ).stdout
    error, growth_kib = out.rsplit(" ", 1)
    assert error == "timed out after 1s"
    assert int(growth_kib) < 50 * 1024


def test_a_huge_answer_is_counted_without_a_parse_tree(hostile):
    # 1.5 MB of 500,000 empty objects: a parse tree would hold about 40 MB.
    body = b'{"platforms": ["a", "b"], "skus": [' + b"{}," * 500_000 + b'{}], "sku_count": 5}'
    server = hostile(answer(200, body))
    attempt, growth = peak_growth(lambda: refresh(server.url, timeout=10))
    assert (attempt.verdict, attempt.platform_count, attempt.sku_count) == (
        Verdict.SUCCESS,
        2,
        5,
    )
    assert growth < 5 * MiB


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"platforms": [], "x": "' + b"a" * (3 * MiB), id="string"),
        pytest.param(b'{"platforms": [], "x": ' + b"1" * (3 * MiB), id="number"),
        pytest.param(b'{"platforms": [], ' + b" " * (3 * MiB) + b"}", id="whitespace"),
    ],
)
def test_a_single_endless_value_is_refused(hostile, body):
    server = hostile(answer(200, body))
    attempt, growth = peak_growth(lambda: refresh(server.url, timeout=10))
    assert (attempt.verdict, attempt.error) == (
        Verdict.FAIL,
        "invalid response (a single value longer than 1 MiB)",
    )
    assert growth < 5 * MiB


# -- nesting ------------------------------------------------------------------------------------
DEEP = {
    "lists": b"[" * 10_000 + b"]" * 10_000,
    "objects": b'{"a": ' * 10_000 + b"1" + b"}" * 10_000,
    "inside an object": b'{"platforms": [' + b"[" * 10_000 + b"]" * 10_000 + b"]}",
    "unclosed": b'{"error": ' + b"[" * 10_000,
}


@pytest.mark.parametrize("shape", DEEP)
@pytest.mark.parametrize(
    ("status", "verdict"),
    [(200, Verdict.FAIL), (500, Verdict.RETRY), (503, Verdict.RETRY), (404, Verdict.FAIL)],
)
def test_deep_nesting_is_classified_by_its_status(hostile, shape, status, verdict):
    server = hostile(answer(status, DEEP[shape]))
    attempt = refresh(server.url)
    assert attempt.verdict is verdict
    assert attempt.http_status == status
    if status == 200:
        expected = "not a JSON object" if shape == "lists" else "nested too deeply"
        assert attempt.error == f"invalid response ({expected})"
    else:
        assert attempt.error == f"HTTP {status}"
        assert attempt.detail is None or attempt.detail.isprintable()


def test_a_run_retries_a_deep_500_and_records_it(hostile, run_env, clients, db):
    server = hostile(answer(500, DEEP["objects"]))
    env = {**run_env, "ANALYTICS_API_URL": server.url, "REFRESH_MAX_ATTEMPTS": "2"}
    assert main(["run", "--client", CAROL, "--platform", "amazon"], environ=env) == 1
    status, attempts, http_status, *_ = jobs(db)[(CAROL, "amazon")]
    assert (status, attempts, http_status) == ("failed", 2, 500)
    assert len(server.requests) == 2
    text = "\n".join(log_lines(env))
    assert "Traceback" not in text
    assert "internal error" not in text


# -- 3. any bytes in an error text ---------------------------------------------------------------
ERROR_BODIES = {
    "NUL raw": (b'{"error": "boom\x00here"}', "boom"),
    "NUL escaped": (b'{"error": "boom\\u0000here"}', "boom\\x00here"),
    "invalid UTF-8": (b'{"error": "boom \xff\xfe\xc3 here"}', "boom \ufffd"),
    "lone surrogate": (b'{"error": "boom \\ud800 here"}', "boom"),
    "surrogate pair half": (b'{"error": "boom \\udfff\\ud83d"}', "boom"),
    "control characters": (b'{"error": "boom \x1b[31mred\x07 \\u001b[0m"}', "boom \\x1b[31mred"),
    "newlines": (b'{"error": "boom\\nFAKE LOG LINE\\r\\n"}', "boom FAKE LOG LINE"),
    "bidi override": ('{"error": "boom \u202egnp.exe"}'.encode(), "boom \\u202egnp.exe"),
    "1 MB error": (b'{"error": "boom' + b"x" * MiB + b'"}', "boomxxx"),
    "1 MB text": (b"boom <html>" + b"\x00\x01" * (MiB // 2), "boom <html>\\x00\\x01"),
    "token echoed": (f'{{"error": "bad token Bearer {TOKEN}"}}'.encode(), "bad token Bearer"),
    "error not a string": (b'{"error": {"nested": "boom"}}', '{"error": {"nested": "boom"}}'),
    "not JSON": (b"\x00boom\xff", "\\x00boom\ufffd"),
}


@pytest.mark.parametrize("case", ERROR_BODIES)
@pytest.mark.parametrize("status", [400, 500])
def test_an_error_text_is_plain_bounded_and_masked(hostile, case, status):
    body, expected = ERROR_BODIES[case]
    server = hostile(answer(status, body))
    attempt, growth = peak_growth(lambda: refresh(server.url))
    assert attempt.http_status == status
    assert attempt.verdict is (Verdict.RETRY if status == 500 else Verdict.FAIL)
    detail = attempt.detail
    assert expected in detail
    assert detail.isprintable()
    assert not any("\ud800" <= ch <= "\udfff" for ch in detail)
    detail.encode("utf-8")  # storable and loggable as it is
    assert len(detail) <= 300
    assert TOKEN not in detail
    assert TOKEN.split(".")[1] not in detail
    assert growth < 2 * MiB  # of a 1 MB answer only a prefix was read


def test_a_run_records_and_logs_every_hostile_error_text(hostile, run_env, clients, db):
    bodies = [ERROR_BODIES[name][0] for name in ("NUL raw", "lone surrogate", "control characters")]

    def script(sock, _line) -> bool:
        sock.sendall(response(404, bodies[min(len(server.requests), 3) - 1]))
        return True

    server = hostile(script)
    env = {**run_env, "ANALYTICS_API_URL": server.url}
    for _ in bodies:
        assert main(["run", "--client", CAROL, "--platform", "amazon"], environ=env) == 1
    with db.cursor() as cur:
        cur.execute("SELECT status, error FROM refresh_jobs ORDER BY finished_at")
        rows = cur.fetchall()
    assert [status for status, _ in rows] == ["failed"] * 3
    assert all(error.startswith("HTTP 404; boom") and error.isprintable() for _, error in rows)
    failed = [line for line in log_lines(env) if line.startswith("❌ FAILED")]
    assert len(failed) == 3
    assert all(line.isprintable() for line in failed)


# -- counts --------------------------------------------------------------------------------------
COUNTS = [
    (7, 7),
    (0, 0),
    (2**31 - 1, 2**31 - 1),
    (2**31, None),
    (2**40, None),
    (2**63, None),
    (2**70, None),
    (-1, None),
    ("12", None),
    (1e3, None),
    (12.0, None),
    (True, None),
    (None, None),
    ([1], None),
]


@pytest.mark.parametrize(("value", "expected"), COUNTS, ids=[repr(v) for v, _ in COUNTS])
def test_sku_count_is_kept_only_when_a_record_can_hold_it(hostile, value, expected):
    server = hostile(answer(200, {"platforms": ["amazon"], "sku_count": value}))
    attempt = refresh(server.url)
    assert (attempt.verdict, attempt.sku_count, attempt.platform_count) == (
        Verdict.SUCCESS,
        expected,
        1,
    )


@pytest.mark.parametrize(
    ("platforms", "expected"),
    [
        (["shopify", "amazon"], 2),
        ([], 0),
        ([[1, 2], {"a": [3]}, None], 3),
        ("shopify", None),
        ({"shopify": 1}, None),
        (3, None),
        (None, None),
    ],
)
def test_platforms_are_counted_only_when_a_list(hostile, platforms, expected):
    server = hostile(answer(200, {"sku_count": 1, "platforms": platforms}))
    attempt = refresh(server.url)
    assert (attempt.verdict, attempt.platform_count) == (Verdict.SUCCESS, expected)


def test_a_run_records_a_job_whose_counts_do_not_fit(hostile, run_env, clients, db):
    body = b'{"platforms": ["amazon"], "sku_count": 1180591620717411303424}'
    server = hostile(answer(200, body))
    env = {**run_env, "ANALYTICS_API_URL": server.url}
    assert main(["run", "--client", CAROL, "--platform", "amazon"], environ=env) == 0
    assert jobs(db)[(CAROL, "amazon")][:5] == ("succeeded", 1, 200, 1, None)
    assert any("1 platforms, ? SKUs" in line for line in log_lines(env))


# -- 7. the preflight's probes -------------------------------------------------------------------
def test_probe_reads_the_top_level_scalars_of_a_health_answer(hostile):
    body = {"status": "ok\x1b[2J", "database": "ok", "n": 1.5, "deep": {"a": 1}, "l": [1]}
    server = hostile(answer(200, body))
    session = new_session()
    try:
        result = probe(session, server.url + "/health", timeout=TIMEOUT)
    finally:
        session.close()
    assert (result.status, result.problem) == (200, None)
    assert result.body == {"status": "ok\\x1b[2J", "database": "ok", "n": 1.5}
    assert result.elapsed < TIMEOUT


@pytest.mark.parametrize("case", ["headers trickled", "body trickled", "nothing sent"])
def test_probe_raises_a_timeout_at_its_timeout(hostile, case):
    server = hostile(TIME_CASES[case])
    started = time.monotonic()
    with pytest.raises(requests.exceptions.Timeout):
        probe(None, server.url + "/health", timeout=TIMEOUT)
    assert time.monotonic() - started < TIMEOUT + SLACK


@pytest.mark.parametrize(
    ("status", "body", "headers", "problem"),
    [
        (200, DEEP["objects"], (), "nested too deeply"),
        (503, DEEP["objects"], (), "nested too deeply"),
        (200, b"[1, 2]", (), "not a JSON object"),
        (200, b"<html>", (), "malformed JSON"),
        (200, None, (_encoding_header("gzip"),), "larger than 64 MiB"),
    ],
    ids=["deep 200", "deep 503", "list", "html", "gzip bomb"],
)
def test_probe_classifies_a_hostile_body_in_bounded_memory(hostile, status, body, headers, problem):
    data = body if body is not None else string_bomb(100 * MiB)
    server = hostile(answer(status, data, *headers))
    result, growth = peak_growth(lambda: probe(None, server.url + "/health", timeout=20))
    assert (result.status, result.body, result.problem) == (status, None, problem)
    assert growth < 10 * MiB


def test_probe_gives_a_plain_masked_error_text(hostile):
    body = f'{{"error": "no\\u0000pe Bearer {TOKEN}", "code": 7}}'.encode()
    server = hostile(answer(403, body))
    result = probe(
        None,
        server.url + ENDPOINT,
        params={"client_id": CAROL},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=TIMEOUT,
    )
    assert result.status == 403
    assert result.detail == "no\\x00pe Bearer [redacted]"
    assert result.body == {"error": "no\\x00pe Bearer [redacted]", "code": 7}
    assert server.requests[0].startswith(f"GET {ENDPOINT}?client_id={CAROL} ")


def test_probe_refuses_a_session_it_cannot_bound():
    with requests.Session() as session, pytest.raises(TypeError):
        probe(session, "http://127.0.0.1:9/health", timeout=TIMEOUT)
