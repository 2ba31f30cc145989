"""The one decorator that lets a request through only with a valid client token.

Tokens are checked by ``api_key_auth.verify_client_token``, the same module the runner
mints them with. 401: no token, or one that is malformed, badly signed or expired, or
whose claims have the wrong types. 403: a valid token for another client, or without the
scope the request needs. No token, however it is built, gets a 5xx.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol

from flask import current_app, request

from api_key_auth import TokenError, TokenForbidden, verify_client_token

from .errors import Forbidden, Unauthorized

# What verifying a token with claims of the wrong types raises, besides TokenError.
MALFORMED_CLAIMS = (TypeError, ValueError, OverflowError, KeyError, RecursionError)


class ClientRequest(Protocol):
    """What a protected view's parsed request must say: whose data, and which scope."""

    client_id: str
    scope: str


def bearer_token() -> str:
    """Return the request's Bearer token, or raise Unauthorized."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing Bearer token")
    return token.strip()


def token_required(parse: Callable[[Any], ClientRequest]):
    """Parse the query with ``parse`` and call the view with it, for a valid token only."""

    def decorate(view):
        @functools.wraps(view)
        def wrapped(**kwargs):
            token = bearer_token()
            # Parameters first: the token is checked against the client they name, and a
            # bad client id is a 400 before anything else looks at it.
            parsed = parse(request.args)
            try:
                verify_client_token(
                    token,
                    current_app.config["API_SECRET_KEY"],
                    client_id=parsed.client_id,
                    scope=parsed.scope,
                )
            except TokenForbidden as exc:
                raise Forbidden(str(exc)) from None
            except TokenError as exc:
                raise Unauthorized(str(exc)) from None
            except MALFORMED_CLAIMS:
                # A correctly signed token whose claims have the wrong types (a string
                # "exp", a list "iat") trips the checks after decoding; it is the client's
                # fault, not the server's.
                raise Unauthorized("invalid token: claims of the wrong type") from None
            return view(parsed, **kwargs)

        return wrapped

    return decorate
