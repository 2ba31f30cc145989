"""One HTTP request to a monitor (a heartbeat, a Pushgateway), bounded as a whole.

requests' timeouts bound each socket operation: a name that takes a minute to resolve, or
a server that trickles its answer a byte at a time, is never timed out by them. The
refresh client's transport (``transport``) bounds every phase, name resolution included,
with its watchdog; a monitor's request goes through it with one deadline for all of it.
"""

from __future__ import annotations

import requests

from analytics_refresh.http.transport import AttemptTime, new_session


class MonitorError(Exception):
    """A monitor's request failed; the message says how, without the URL."""


def send(
    method: str,
    url: str,
    *,
    timeout: float,
    data: bytes,
    headers: dict,
    params: dict | None = None,
) -> int:
    """Send one request and read the whole answer within ``timeout`` seconds, all phases
    together; return the status code, or raise MonitorError."""
    session = new_session()
    try:
        with AttemptTime(timeout) as guard:
            try:
                response = session.request(
                    method,
                    url,
                    params=params,
                    data=data,
                    headers=headers,
                    timeout=(timeout, timeout),
                    allow_redirects=False,
                )
                response.close()
            except requests.Timeout as exc:
                raise MonitorError(f"no answer within {timeout:g}s") from exc
            except requests.RequestException as exc:
                if guard.fired:
                    raise MonitorError(f"no answer within {timeout:g}s") from exc
                raise MonitorError("connection failed") from exc
            if guard.fired:
                # The watchdog's cut can look like the end of a body without a length.
                raise MonitorError(f"no answer within {timeout:g}s")
            return response.status_code
    finally:
        session.close()
