"""Client tokens shared by the refresh runner and the dashboard API.

A token is a JWT signed with HS256 over ``API_SECRET_KEY``. It names one client
(``sub``), says what it allows (``scope``) and lives at most 15 minutes, so a token that
leaks from a run is useless long before anyone could find it.
"""

from __future__ import annotations

import time
import uuid

ISSUER = "analytics-refresh"
ALGORITHM = "HS256"
SCOPE_REFRESH = "analytics:refresh"
SCOPE_READ = "analytics:read"
SCOPES = (SCOPE_REFRESH, SCOPE_READ)
MIN_SECRET_LENGTH = 32
MAX_TTL_SECONDS = 15 * 60
DEFAULT_TTL_SECONDS = 5 * 60


class TokenError(Exception):
    """The token is missing, malformed, badly signed, expired or not for this use."""


class SecretKeyError(ValueError):
    """API_SECRET_KEY must be at least 32 characters."""


def _check_secret(secret_key: str | None) -> str:
    if not secret_key or len(secret_key) < MIN_SECRET_LENGTH:
        raise SecretKeyError(
            f"API_SECRET_KEY must be at least {MIN_SECRET_LENGTH} characters "
            f"(got {len(secret_key or '')})"
        )
    return secret_key


def _check_client_id(client_id: str) -> str:
    try:
        return str(uuid.UUID(str(client_id)))
    except ValueError:
        raise TokenError("client id must be a UUID") from None


def mint_client_token(
    client_id: str,
    secret_key: str,
    *,
    scope: str = SCOPE_REFRESH,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    now: float | None = None,
) -> str:
    """Return a signed token that lets ``client_id`` use ``scope`` for ``ttl_seconds``."""
    secret_key = _check_secret(secret_key)
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    if not 0 < ttl_seconds <= MAX_TTL_SECONDS:
        raise ValueError(f"ttl must be between 1 and {MAX_TTL_SECONDS} seconds")
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": ISSUER,
        "sub": _check_client_id(client_id),
        "scope": scope,
        "iat": issued,
        "exp": issued + int(ttl_seconds),
        "jti": uuid.uuid4().hex,
    }
    import jwt  # here, not at the top: commands that never mint a token start faster

    return jwt.encode(claims, secret_key, algorithm=ALGORITHM)


def verify_client_token(
    token: str,
    secret_key: str,
    *,
    client_id: str | None = None,
    scope: str | None = None,
    leeway: int = 30,
) -> dict:
    """Return the claims of a valid token, or raise TokenError saying what is wrong.

    Only HS256 is accepted, so a token with ``alg: none`` or another algorithm fails.
    With ``client_id`` and ``scope`` the token must name that client and grant that scope;
    those failures raise ``TokenForbidden`` (HTTP 403) rather than ``TokenError`` (401).
    """
    import jwt

    secret_key = _check_secret(secret_key)
    try:
        claims = jwt.decode(
            token,
            secret_key,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            leeway=leeway,
            options={"require": ["iss", "sub", "scope", "iat", "exp", "jti"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("token expired") from None
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"invalid token: {exc}") from None
    if claims["exp"] - claims["iat"] > MAX_TTL_SECONDS:
        raise TokenError(f"token lifetime exceeds {MAX_TTL_SECONDS} seconds")
    if client_id is not None and claims["sub"] != _check_client_id(client_id):
        raise TokenForbidden("token is for another client")
    if (
        scope is not None
        and claims["scope"] != scope
        and not (
            # A refresh token may also read; a read token may never force a refresh.
            scope == SCOPE_READ and claims["scope"] == SCOPE_REFRESH
        )
    ):
        raise TokenForbidden(f"token lacks scope {scope}")
    return claims


class TokenForbidden(TokenError):
    """The token is valid but not for this client or this scope."""
