"""Every error the endpoint answers (openapi.yaml): JSON, the right status, no leak."""

from __future__ import annotations

import base64
import json
import socket

import pytest

from api_key_auth import SCOPE_READ, mint_client_token
from dashboard_api import bounds, create_app

from .conftest import ALICE, BOB

URL = "/api/dashboard/inventory-analytics"
HOSTILE = [
    "'; DROP TABLE client_api_credentials; --",
    '" OR 1=1 --',
    "%' UNION SELECT 1 --",
    "\\x00\x00",
    "x" * 3000,
    "9" * 3000,
    "-1",
    "📦",
    "",
]


@pytest.fixture
def alice(shop):
    shop.connect(ALICE, "shopify")
    shop.item(ALICE, "shopify", "S1", on_hand=1, cost="1.00", price="2.00")


def get(client, headers=None, **params):
    query = {"client_id": ALICE, "platform": "shopify", "force_refresh": "true", **params}
    return client.get(URL, query_string=query, headers=headers or {})


def assert_error(answer, status, text=None):
    assert answer.status_code == status
    assert answer.mimetype == "application/json"
    body = answer.get_json()
    assert list(body) == ["error"]
    assert isinstance(body["error"], str)
    assert body["error"]
    if text:
        assert text in body["error"]
    return body["error"]


def unsigned(claims: dict) -> str:
    def part(data):
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def test_valid_request_succeeds(client, auth, alice):
    assert get(client, auth()).status_code == 200


def test_missing_token_is_401(client, alice):
    answer = get(client)
    assert_error(answer, 401, "missing Bearer token")
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header", ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc", "Bearer not.a.jwt"]
)
def test_malformed_authorization_is_401(client, alice, header):
    assert_error(get(client, {"Authorization": header}), 401)


def test_expired_token_is_401(client, alice, secret):
    old = mint_client_token(ALICE, secret, ttl_seconds=60, now=0)
    assert_error(get(client, {"Authorization": f"Bearer {old}"}), 401, "expired")


def test_token_signed_with_another_key_is_401(client, alice):
    forged = mint_client_token(ALICE, "another-secret-that-is-long-enough-0123456789")
    error = assert_error(get(client, {"Authorization": f"Bearer {forged}"}), 401)
    assert forged not in error


def test_unsigned_token_is_401(client, alice, token):
    claims = json.loads(base64.urlsafe_b64decode(token().split(".")[1] + "=="))
    answer = get(client, {"Authorization": f"Bearer {unsigned(claims)}"})
    assert_error(answer, 401)


def test_token_for_another_client_is_403(client, auth, alice):
    assert_error(get(client, auth(BOB)), 403, "another client")


def test_read_scope_cannot_force_a_refresh(client, auth, alice):
    assert_error(get(client, auth(scope=SCOPE_READ)), 403, "analytics:refresh")
    # ...but it may read.
    assert get(client, auth(scope=SCOPE_READ), force_refresh="false").status_code == 200


def test_unknown_client_is_404(client, auth, random_client):
    answer = get(client, auth(random_client), client_id=random_client)
    assert_error(answer, 404, "unknown client")


@pytest.mark.parametrize("platform", ["amazon", "all"])
def test_platform_not_connected_is_404(client, auth, shop, platform):
    shop.connect(ALICE, "amazon", status="disconnected")
    shop.connect(ALICE, "shopify", status="disconnected")
    assert_error(get(client, auth(), platform=platform), 404, "connected for this client")


def test_non_uuid_client_id_is_400_and_touches_no_table(client, auth, alice, db):
    answer = get(client, auth(), client_id="'; DROP TABLE client_api_credentials; --")
    assert_error(answer, 400, "client_id must be a UUID")
    with db.cursor() as cur:
        cur.execute("SELECT to_regclass('client_api_credentials') IS NOT NULL")
        assert cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE '%%cached_responses'")
        assert cur.fetchone()[0] == 0


@pytest.mark.parametrize("name", ["client_id", "platform", "force_refresh", "days"])
def test_hostile_values_are_400(client, auth, alice, name):
    for value in HOSTILE:
        assert_error(get(client, auth(), **{name: value}), 400, name)


@pytest.mark.parametrize("days", ["0", "366", "1.5", "3e1", " 30"])
def test_days_out_of_range_is_400(client, auth, alice, days):
    assert_error(get(client, auth(), days=days), 400, "days")


def test_hostile_token_is_401_without_echo(client, alice):
    junk = "'; DROP TABLE x; --" + "A" * 5000
    error = assert_error(get(client, {"Authorization": f"Bearer {junk}"}), 401)
    assert "DROP" not in error


def test_unknown_route_and_method_answer_json(client):
    assert_error(client.get("/api/nothing"), 404)
    answer = client.post(URL)
    assert_error(answer, 405)
    assert "GET" in answer.headers["Allow"]


def test_errors_never_carry_the_secret(client, alice, secret, token):
    answers = [
        get(client),
        get(client, {"Authorization": f"Bearer {token()}x"}),
        get(client, {"Authorization": f"Bearer {token(BOB)}"}),
        get(client, {"Authorization": f"Bearer {token()}"}, platform="amazon"),
    ]
    for answer in answers:
        assert answer.status_code >= 400
        assert secret not in answer.get_data(as_text=True)


def test_over_long_query_is_414_json(client, auth, alice):
    answer = get(client, auth(), platform="x" * (bounds.MAX_TARGET_BYTES + 1))
    assert_error(answer, 414, "request target")
    # Just under the bound it is an ordinary bad parameter.
    assert_error(get(client, auth(), platform="x" * 3000), 400, "platform")


def test_over_long_path_is_414_json(client):
    assert_error(client.get("/" + "p" * bounds.MAX_TARGET_BYTES), 414)


def test_over_long_header_is_431_json(client, alice):
    junk = "A" * bounds.MAX_HEADER_BYTES
    answer = get(client, {"Authorization": f"Bearer {junk}"})
    assert "AAAA" not in assert_error(answer, 431, "header")


def test_too_many_headers_is_431_json(client, auth, alice):
    many = {f"X-Filler-{n}": "x" for n in range(bounds.MAX_HEADER_COUNT + 1)}
    assert_error(get(client, {**auth(), **many}), 431, "headers")
    # Headers each under the bound, past it together.
    wide = {f"X-Wide-{n}": "w" * 8000 for n in range(5)}
    assert_error(get(client, {**auth(), **wide}), 431, "in all")


def test_declared_body_past_the_bound_is_413_json(client, auth, alice):
    answer = client.get(
        URL,
        query_string={"client_id": ALICE, "platform": "shopify"},
        headers=auth(),
        data=b"x" * (bounds.MAX_BODY_BYTES + 1),
    )
    assert_error(answer, 413, "body")
    # A small body on a GET is tolerated.
    small = client.get(
        URL, query_string={"client_id": ALICE, "platform": "shopify"}, headers=auth(), data=b"{}"
    )
    assert small.status_code == 200


def test_unexpected_failure_is_500_json_without_details(settings, alice, auth, db):
    # A real fault no handler expects: a column the analytics read has gone.
    with db.cursor() as cur:
        cur.execute("ALTER TABLE order_lines DROP COLUMN quantity")
    app = create_app({**settings, "TESTING": False})
    try:
        answer = get(app.test_client(), auth())
    finally:
        app.extensions["dashboard_api"].close()
    error = assert_error(answer, 500)
    assert error == "internal server error"
    assert "quantity" not in answer.get_data(as_text=True)


def exchange(server, data: bytes) -> tuple[int | None, bytes, bytes]:
    """Send raw bytes to ``server``; return the answer's status (None: HTTP/0.9), head, body."""
    host, port = server.server.server_address[:2]
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(data)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    if not raw.startswith(b"HTTP/"):
        # http.server answers a request line it cannot read as HTTP/0.9: a body alone.
        return None, b"", raw
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), head, body


@pytest.mark.parametrize(
    "request_line",
    [
        b'GET / HTTP/1."x\\',
        b"GET /\x00 HTTP/1.1",
        b"NOT A REQUEST LINE AT ALL",
        b"GET /" + b"x" * 70_000 + b" HTTP/1.1",
    ],
)
def test_development_server_answers_bad_requests_in_json(api_server, request_line):
    # Errors the HTTP layer answers before the app sees the request (serve, demo); the
    # message may quote the request, quotes and backslashes included.
    status, head, body = exchange(api_server, request_line + b"\r\nHost: x\r\n\r\n")
    if status is not None:
        assert 400 <= status < 500, head
        assert b"application/json" in head
    assert list(json.loads(body)) == ["error"]


def test_development_server_answers_too_many_headers_in_json(api_server):
    headers = b"".join(b"X-H%d: v\r\n" % n for n in range(150))
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n"
    status, _, body = exchange(api_server, request)
    assert status == 431
    assert list(json.loads(body)) == ["error"]
