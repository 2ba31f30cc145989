"""Request size bounds the app enforces itself, so that it answers them in JSON.

The server in front (gunicorn, see ``gunicorn_config``) is configured with limits above
these, so a request past them reaches the app and gets a JSON 413, 414 or 431 rather than
the server's own page. Every legitimate request is far below them: the endpoint's query
is under 200 bytes and its token under 500.
"""

from __future__ import annotations

from flask import Flask, request

from .errors import BodyTooLarge, HeadersTooLarge, TargetTooLong

# The path and the query string together (the request target).
MAX_TARGET_BYTES = 4096
# One header, name and value.
MAX_HEADER_BYTES = 8192
MAX_HEADER_COUNT = 100
# Every header together.
MAX_HEADERS_BYTES = 32 * 1024
# No endpoint reads a body; a small one is tolerated for clients that always send one.
MAX_BODY_BYTES = 64 * 1024


def check_request() -> None:
    """Refuse a request whose target, headers or declared body are past the bounds."""
    environ = request.environ
    # PATH_INFO is decoded text; its length in characters bounds its length in bytes
    # from below, which is all a bound needs.
    target = len(environ.get("SCRIPT_NAME", "")) + len(environ.get("PATH_INFO", ""))
    target += len(environ.get("QUERY_STRING", ""))
    if target > MAX_TARGET_BYTES:
        raise TargetTooLong(f"request target over {MAX_TARGET_BYTES} bytes")
    count = total = 0
    for name, value in request.headers.items():
        size = len(name) + len(value)
        if size > MAX_HEADER_BYTES:
            raise HeadersTooLarge(f"a request header is over {MAX_HEADER_BYTES} bytes")
        count += 1
        total += size
    if count > MAX_HEADER_COUNT:
        raise HeadersTooLarge(f"more than {MAX_HEADER_COUNT} request headers")
    if total > MAX_HEADERS_BYTES:
        raise HeadersTooLarge(f"request headers over {MAX_HEADERS_BYTES} bytes in all")
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise BodyTooLarge(f"request body over {MAX_BODY_BYTES} bytes")


def register(app: Flask) -> None:
    """Check every request of ``app`` against the bounds before anything else looks at it."""
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.before_request(check_request)
