"""The token module both sides share."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

import api_key_auth as auth

CLIENT = "3b619a14-3cd8-49fa-9c24-d8df5e54c452"
OTHER = "5f0c3a52-7d5e-4c43-9a4e-0f2d6b1c9e11"


def test_round_trip_carries_the_contract_claims(secret):
    token = auth.mint_client_token(CLIENT, secret, ttl_seconds=120)
    claims = auth.verify_client_token(token, secret, client_id=CLIENT, scope=auth.SCOPE_REFRESH)
    assert claims["iss"] == "analytics-refresh"
    assert claims["sub"] == CLIENT
    assert claims["scope"] == "analytics:refresh"
    assert claims["exp"] - claims["iat"] == 120
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert (
        claims["jti"]
        != auth.verify_client_token(auth.mint_client_token(CLIENT, secret), secret)["jti"]
    )


def test_short_secret_is_refused():
    with pytest.raises(auth.SecretKeyError, match="at least 32"):
        auth.mint_client_token(CLIENT, "short")


def test_lifetime_is_capped_at_15_minutes(secret):
    with pytest.raises(ValueError, match="900"):
        auth.mint_client_token(CLIENT, secret, ttl_seconds=901)
    forged = jwt.encode(
        {
            "iss": "analytics-refresh",
            "sub": CLIENT,
            "scope": auth.SCOPE_READ,
            "iat": int(time.time()),
            "exp": int(time.time()) + 3600,
            "jti": "x",
        },
        secret,
        algorithm="HS256",
    )
    with pytest.raises(auth.TokenError, match="lifetime"):
        auth.verify_client_token(forged, secret)


def test_expired_wrong_key_and_alg_none_are_invalid(secret):
    old = auth.mint_client_token(CLIENT, secret, ttl_seconds=60, now=time.time() - 3600)
    with pytest.raises(auth.TokenError, match="expired"):
        auth.verify_client_token(old, secret)
    other_key = auth.mint_client_token(CLIENT, "k" * 40)
    with pytest.raises(auth.TokenError, match="invalid"):
        auth.verify_client_token(other_key, secret)
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none"}).encode()).rstrip(b"=")
    payload = base64.urlsafe_b64encode(
        json.dumps(
            jwt.decode(auth.mint_client_token(CLIENT, secret), options={"verify_signature": False})
        ).encode()
    ).rstrip(b"=")
    with pytest.raises(auth.TokenError):
        auth.verify_client_token(f"{header.decode()}.{payload.decode()}.", secret)


def test_other_client_and_missing_scope_are_forbidden(secret):
    token = auth.mint_client_token(CLIENT, secret, scope=auth.SCOPE_READ)
    with pytest.raises(auth.TokenForbidden, match="another client"):
        auth.verify_client_token(token, secret, client_id=OTHER)
    with pytest.raises(auth.TokenForbidden, match="scope"):
        auth.verify_client_token(token, secret, scope=auth.SCOPE_REFRESH)
    # A refresh token may read.
    refresh = auth.mint_client_token(CLIENT, secret)
    assert auth.verify_client_token(refresh, secret, scope=auth.SCOPE_READ)["sub"] == CLIENT
