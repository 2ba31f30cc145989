"""Every failure the API answers, and the one helper that turns it into JSON.

Each answer is ``{"error": "..."}`` with the status the contract names. Messages say what
is wrong with the request; they never echo a token, the secret or a driver's error text.
"""

from __future__ import annotations

from typing import ClassVar

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

# Load sheds in bursts that clear within a computation or two; ask clients back soon.
RETRY_AFTER_SECONDS = 2


class ApiError(Exception):
    """The request failed."""

    status = 500
    retry_after: int | None = None
    headers: ClassVar[dict[str, str]] = {}

    def __init__(self, message: str | None = None):
        super().__init__(message or (self.__doc__ or "").strip())


class InvalidRequest(ApiError):
    """Bad request parameters."""

    status = 400


class Unauthorized(ApiError):
    """A valid Bearer token is required."""

    status = 401
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": 'Bearer realm="dashboard-api"'}


class Forbidden(ApiError):
    """The token does not allow this request."""

    status = 403


class NotFound(ApiError):
    """Unknown client, or the platform is not connected."""

    status = 404


class BodyTooLarge(ApiError):
    """The request body is too large."""

    status = 413


class TargetTooLong(ApiError):
    """The request target (path and query) is too long."""

    status = 414


class HeadersTooLarge(ApiError):
    """The request headers are too large."""

    status = 431


class Overloaded(ApiError):
    """Too many analytics computations are running; retry shortly."""

    status = 503
    retry_after = RETRY_AFTER_SECONDS


class DatabaseUnavailable(ApiError):
    """The database is unavailable; retry shortly."""

    status = 503
    retry_after = RETRY_AFTER_SECONDS


class SchemaMissing(DatabaseUnavailable):
    """The API's tables are missing: run `analytics-refresh db init --with-api-schema`."""


def error(status: int, message: str, *, headers: dict[str, str] | None = None) -> Response:
    """Return the JSON error answer with ``status``, ``message`` and ``headers``."""
    response = jsonify(error=message)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _api_error(exc: ApiError) -> Response:
    headers = dict(exc.headers)
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    return error(exc.status, str(exc), headers=headers)


def _http_error(exc: HTTPException) -> Response:
    # Keep Werkzeug's own headers (Allow on a 405) but answer in JSON like everything else.
    # An unexpected exception reaches here as InternalServerError (500), already logged
    # with its traceback; its text stays in the log, never in the answer.
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    return error(exc.code or 500, (exc.name or "error").lower(), headers=headers)


def register(app: Flask) -> None:
    """Make every error of ``app`` a JSON answer."""
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
