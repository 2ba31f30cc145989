"""Every error the endpoint answers (INTERFACE.md section 7): JSON, the right status, no leak."""

from __future__ import annotations

import base64
import json

import pytest

from api_key_auth import SCOPE_READ, mint_client_token

from .conftest import ALICE, BOB

URL = "/api/dashboard/inventory-analytics"
HOSTILE = [
    "'; DROP TABLE client_api_credentials; --",
    '" OR 1=1 --',
    "%' UNION SELECT 1 --",
    "\\x00\x00",
    "x" * 100_000,
    "9" * 5000,
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
    junk = "'; DROP TABLE x; --" + "A" * 50_000
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
