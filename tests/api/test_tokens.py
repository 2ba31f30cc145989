"""Any token gets a 4xx JSON answer, never a 5xx: malformed, wrong alg, or correctly signed
with claims of the wrong types (openapi.yaml: 401, never 500)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterator

import psycopg2
import pytest
import requests

from api_key_auth import SCOPE_REFRESH
from dashboard_api import create_app
from dashboard_api.server import start_background
from tests.conftest import SECRET

from .conftest import ALICE, Shop, cloned_database

URL = "/api/dashboard/inventory-analytics"
QUERY = {"client_id": ALICE, "platform": "shopify", "force_refresh": "true"}
CLAIMS = ("iss", "sub", "scope", "iat", "exp", "jti")
# Raw JSON texts a claim may be replaced with; none is a valid value of a required claim.
WRONG_VALUES = {
    "null": "null",
    "true": "true",
    "false": "false",
    "zero": "0",
    "negative": "-1",
    "float": "1.5",
    "huge_int": "1" + "0" * 400,
    "huge_negative": "-1" + "0" * 400,
    "past_int_limit": "9" * 5000,
    "huge_float": "1e308",
    "overflow_float": "1e999",
    "negative_overflow": "-1e999",
    "nan": "NaN",
    "infinity": "Infinity",
    "empty_string": '""',
    "text": '"soon"',
    "digits_string": '"{now}"',
    "unicode": '"\\u0000\\ud800\\u202e"',
    "empty_list": "[]",
    "list": '["analytics:refresh", "analytics:read"]',
    "list_of_now": "[{now}]",
    "object": "{}",
    "nested": '{"a": {"b": [1, {"c": null}]}}',
    "deep": "[" * 2500 + "]" * 2500,
}


def fill(value: str, now: int) -> str:
    """Return ``value`` with {now} and {later} (a minute on) put in."""
    return value.replace("{now}", str(now)).replace("{later}", str(now + 60))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(header: str, payload: str, secret: str, algorithm=hashlib.sha256) -> str:
    """Return a token over the raw JSON texts ``header`` and ``payload``, signed with HMAC."""
    signing_input = f"{b64(header.encode())}.{b64(payload.encode())}"
    signature = hmac.new(secret.encode(), signing_input.encode(), algorithm).digest()
    return f"{signing_input}.{b64(signature)}"


def good_claims(now: int) -> dict[str, str]:
    """Each claim of a valid token as raw JSON text."""
    return {
        "iss": '"analytics-refresh"',
        "sub": f'"{ALICE}"',
        "scope": f'"{SCOPE_REFRESH}"',
        "iat": str(now),
        "exp": str(now + 60),
        "jti": '"0123456789abcdef"',
    }


def payload(claims: dict[str, str]) -> str:
    return "{" + ", ".join(f'"{name}": {value}' for name, value in claims.items()) + "}"


HS256 = '{"alg": "HS256", "typ": "JWT"}'


@pytest.fixture(scope="module")
def token_db(pg_server_url, template_db) -> Iterator[str]:
    """One database for the module, with Alice connected: every test here only reads."""
    with cloned_database(pg_server_url, template_db) as url:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        shop = Shop(conn)
        shop.connect(ALICE, "shopify")
        shop.item(ALICE, "shopify", "S1", on_hand=1, cost="1.00", price="2.00")
        conn.close()
        yield url


@pytest.fixture(scope="module")
def token_app(token_db):
    app = create_app({"DATABASE_URL": token_db, "API_SECRET_KEY": SECRET, "TESTING": True})
    yield app
    app.extensions["dashboard_api"].close()


@pytest.fixture
def client(token_app):
    return token_app.test_client()


@pytest.fixture
def alice():
    """Alice is connected in ``token_db`` already."""


def ask(client, token: str):
    return client.get(URL, query_string=QUERY, headers={"Authorization": f"Bearer {token}"})


def assert_refused(answer) -> str:
    assert answer.status_code in (401, 403), (answer.status_code, answer.get_data()[:200])
    assert answer.mimetype == "application/json"
    body = answer.get_json()
    assert list(body) == ["error"]
    assert isinstance(body["error"], str)
    return body["error"]


def test_the_raw_token_builder_makes_tokens_the_api_accepts(client, alice, secret):
    # Guards the cases below: they are refused for their one wrong claim, not for the
    # builder's mistakes.
    answer = ask(client, signed(HS256, payload(good_claims(int(time.time()))), secret))
    assert answer.status_code == 200, answer.get_json()


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        pytest.param(claim, value, id=f"{claim}-{name}")
        for claim in CLAIMS
        for name, value in WRONG_VALUES.items()
        # Any string is a valid jti.
        if not (claim == "jti" and value.startswith('"'))
    ],
)
def test_signed_claim_of_the_wrong_type_is_refused(client, alice, secret, claim, value):
    now = int(time.time())
    claims = {**good_claims(now), claim: fill(value, now)}
    assert_refused(ask(client, signed(HS256, payload(claims), secret)))


@pytest.mark.parametrize("claim", CLAIMS)
def test_signed_token_missing_a_claim_is_401(client, alice, secret, claim):
    claims = {name: value for name, value in good_claims(int(time.time())).items()}
    del claims[claim]
    answer = ask(client, signed(HS256, payload(claims), secret))
    assert answer.status_code == 401
    assert claim in assert_refused(answer)


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("iat", '"{now}"'),
        ("exp", '"{later}"'),
        ("iat", '"{now}.5"'),
        ("exp", '["{later}"]'),
        ("exp", "true"),
        ("iat", "false"),
        ("nbf", "[]"),
        ("nbf", '{"a": 1}'),
        ("aud", "5"),
    ],
)
def test_time_claims_of_the_wrong_type_are_401_not_500(client, alice, secret, claim, value):
    # A string exp within the lifetime bound used to get a 500 (an str minus an int).
    now = int(time.time())
    claims = {**good_claims(now), claim: fill(value, now)}
    answer = ask(client, signed(HS256, payload(claims), secret))
    assert answer.status_code == 401
    assert_refused(answer)


@pytest.mark.parametrize(
    "header",
    [
        '{"alg": "none"}',
        '{"alg": "HS384"}',
        '{"alg": "RS256"}',
        '{"alg": "hs256"}',
        '{"alg": ["HS256"]}',
        '{"alg": null}',
        '{"typ": "JWT"}',
        "{}",
        "[]",
        '"HS256"',
        "null",
        '{"alg": "HS256", "kid": {"a": []}}',
        '{"alg": "HS256", "crit": ["exp"]}',
        '{"alg": "HS256", "crit": 5}',
        '{"alg": "HS256", "b64": false, "crit": ["b64"]}',
        "[" * 2500 + "]" * 2500,
        "not json",
    ],
)
def test_signed_token_with_a_hostile_header_is_401(client, alice, secret, header):
    claims = payload(good_claims(int(time.time())))
    for algorithm in (hashlib.sha256, hashlib.sha384):
        answer = ask(client, signed(header, claims, secret, algorithm))
        assert answer.status_code == 401
        assert_refused(answer)


@pytest.mark.parametrize(
    ("header", "claims", "expected"),
    [
        # Legal or ignored, so answered: fractional NumericDates (RFC 7519 section 2), a
        # digit-string nbf, a key URL that HS256 never fetches, an unknown header or claim
        # of any shape. An audience the API was not told to expect is refused (401).
        (HS256, {"exp": "{later}.5", "iat": "{now}.5"}, 200),
        (HS256, {"nbf": '"{now}"'}, 200),
        (HS256, {"aud": '{"a": 1}'}, 401),
        (HS256, {"extra": '{"a": [1, {"b": null}]}', "big": "1" + "0" * 400}, 200),
        ('{"alg": "HS256", "jku": "http://127.0.0.1:9/keys"}', {}, 200),
        ('{"alg": "HS256", "x": [[[]]]}', {}, 200),
    ],
)
def test_lenient_shapes_are_answered_never_with_a_5xx(
    client, alice, secret, header, claims, expected
):
    now = int(time.time())
    extra = {name: fill(value, now) for name, value in claims.items()}
    answer = ask(client, signed(header, payload({**good_claims(now), **extra}), secret))
    assert answer.status_code == expected, answer.get_data()[:200]
    assert answer.mimetype == "application/json"


@pytest.mark.parametrize(
    "payload_text",
    ["[]", "null", '"claims"', "5", "{", "[" * 2500 + "]" * 2500, '{"exp": 1}' * 2, ""],
)
def test_signed_payload_that_is_not_an_object_is_401(client, alice, secret, payload_text):
    answer = ask(client, signed(HS256, payload_text, secret))
    assert answer.status_code == 401
    assert_refused(answer)


def test_a_claim_repeated_is_judged_by_its_last_value(client, alice, secret):
    now = int(time.time())
    claims = payload(good_claims(now)).rstrip("}") + f', "exp": "{now + 60}"}}'
    assert_refused(ask(client, signed(HS256, claims, secret)))


@pytest.mark.parametrize(
    "token",
    [
        "a",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "...",
        "e30.e30.",
        "e30.e30.e30.e30",
        "!!!.@@@.###",
        "\u00e9\u00e9.\u00e9.\u00e9",
        "eyJhbGciOiJIUzI1NiJ9." + "A" * 4000 + ".sig",
        "eyJhbGciOiJIUzI1NiJ9.=====.",
    ],
)
def test_malformed_token_is_401(client, alice, token):
    answer = ask(client, token)
    assert answer.status_code == 401
    assert_refused(answer)


def test_refusals_never_echo_the_token(client, alice, secret):
    now = int(time.time())
    marker = "ZZ-token-marker-ZZ"
    claims = {**good_claims(now), "jti": f'"{marker}"', "exp": f'"{marker}"'}
    error = assert_refused(ask(client, signed(HS256, payload(claims), secret)))
    assert marker not in error
    assert secret not in error


def test_claims_of_the_wrong_type_get_json_through_a_real_server(token_db, secret):
    # Without TESTING the app turns an unexpected exception into a 500: the refusals above
    # must come from the token check, not from a test mode.
    app = create_app({"DATABASE_URL": token_db, "API_SECRET_KEY": secret})
    now = int(time.time())
    with start_background(app) as server:
        for claim in ("exp", "iat"):
            claims = {**good_claims(now), claim: f'"{now}"'}
            answer = requests.get(
                server.url + URL,
                params=QUERY,
                headers={"Authorization": f"Bearer {signed(HS256, payload(claims), secret)}"},
                timeout=10,
            )
            assert answer.status_code == 401, answer.text
            assert answer.headers["Content-Type"] == "application/json"
            assert list(answer.json()) == ["error"]
    app.extensions["dashboard_api"].close()
