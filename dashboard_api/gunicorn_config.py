"""gunicorn settings for the reference dashboard API in production.

    gunicorn --config python:dashboard_api.gunicorn_config 'dashboard_api:create_app()'

Listens on ``0.0.0.0:$PORT`` (default 5000, where the runner's ANALYTICS_API_URL looks
by default) with ``$WEB_CONCURRENCY`` worker processes (default 2) of 4 threads each; a
flag on the command line, or in ``GUNICORN_CMD_ARGS``, overrides any setting here. The
app's own settings (``DATABASE_URL``, ``API_SECRET_KEY``,
...) are read by ``create_app()`` as usual.

Size limits, and who answers past them. gunicorn's limits are set above the app's
(``dashboard_api.bounds``), so most oversized requests reach the app and get its JSON
answer:

=========================  =====================  ======================================
what                       the app answers        gunicorn answers by itself
=========================  =====================  ======================================
request target             414 over 4,096 bytes   414 when the request line is over
                                                  8,190 bytes (gunicorn's maximum)
one header                 431 over 8,192 bytes   431 over 32,768 bytes
number of headers          431 over 100           431 over 256
malformed request line or  --                     400 (501 for an unknown
headers, bad chunking                             Transfer-Encoding)
=========================  =====================  ======================================

gunicorn's own answers come from its worker before any application code runs; the hook
below makes them JSON too, ``{"error": "<reason>"}`` (the reason phrase, lower case, never
the request's bytes, which may hold a token), with ``Connection: close``.
"""

from __future__ import annotations

import json

from gunicorn import util

from dashboard_api.config import server_config

_server = server_config()

bind = _server.bind
workers = _server.workers
# Threads: a forced refresh waits on the database for seconds; threads keep /health and
# cached reads answering meanwhile. The app's pool and compute slots are thread-safe.
worker_class = "gthread"
threads = 4
# Above the runner's REFRESH_TIMEOUT default (300 s): a forced refresh may compute that long.
timeout = 320
graceful_timeout = 30
keepalive = 5
accesslog = "-"
# The API needs no runtime control, and the default socket path ($HOME/.gunicorn) is one
# per user: a second instance on the host would take it over.
control_socket_disable = True

# The largest request line gunicorn accepts (0 would mean no limit at all, which lets one
# request buffer any amount of memory).
limit_request_line = 8190
limit_request_fields = 256
limit_request_field_size = 32768


def json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """Write gunicorn's own error answer as JSON (same signature as ``util.write_error``)."""
    body = json.dumps({"error": reason.lower()}).encode("ascii")
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


def post_worker_init(worker) -> None:
    """Make the worker's own error answers JSON, like every answer of the API."""
    # gunicorn's workers write their errors through util.write_error; it has no setting
    # for the format, so the worker process gets this one in its place.
    util.write_error = json_error
