"""The preflight's probes: one GET within the bounds of a refresh attempt.

``analytics-refresh check`` asks /health and reads one dashboard through ``probe``: the
whole request is bounded end to end as a refresh is (transport.AttemptTime), its body is
read through bodies.py and scanned as a stream (answers.py), and only the top-level
scalar fields of the answer are kept.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import requests

from analytics_refresh.http import answers
from analytics_refresh.http.answers import InvalidAnswer, plain_text
from analytics_refresh.http.bodies import (
    MAX_ERROR_BODY_BYTES,
    BodyTooLarge,
    BodyTooSlow,
    read_chunks,
    read_prefix,
    seconds_text,
)
from analytics_refresh.http.client import CONNECT_TIMEOUT_SECONDS
from analytics_refresh.http.transport import AttemptTime, BoundedAdapter, new_session

# Of a preflight probe's answer: /health and a read of one dashboard.
MAX_PROBE_BODY_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Probe:
    """What one bounded GET brought back."""

    status: int
    reason: str  # the status line's reason phrase, plain text
    body: dict | None  # top-level scalar fields of a JSON object answer, else None
    problem: str | None  # why ``body`` is None: "not a JSON object", "nested too deeply", ...
    detail: str | None  # for a non-2xx answer: its ``error`` text (or an excerpt), plain
    elapsed: float  # seconds, connecting included


def probe(
    session: requests.Session | None,
    url: str,
    *,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float,
    verify: str | bool = True,
) -> Probe:
    """GET ``url`` within the bounds of a refresh attempt and return what came back.

    ``session`` is one from ``new_session()`` (or a RefreshClient's), or None for a new one
    closed afterwards; any other session is refused with TypeError, as its requests could
    not be cut off. ``timeout`` bounds the whole request end to end (name resolution,
    connecting, headers, body); the body is read up to 64 MiB decoded (64 KiB for a
    non-2xx answer) and scanned as a stream at most 64 levels deep, and only its top-level
    scalar fields are kept: at most 64, strings as plain text of at most 300 characters,
    decimals as floats. A body that is not a JSON object gives ``body=None`` and the
    reason in ``problem``. A Bearer token in ``headers`` is masked in ``detail``.

    Network trouble raises requests' exceptions as ``requests.get`` would: a timeout in
    any phase, a body that trickles past ``timeout`` included, as
    ``requests.exceptions.Timeout``; a reset as ``ConnectionError``; a bad certificate as
    ``SSLError``. Redirects are not followed.
    """
    own = session is None
    session = session or new_session()
    if not isinstance(session.get_adapter(url), BoundedAdapter):
        raise TypeError(
            "probe() needs a session from analytics_refresh.http.transport.new_session()"
        )
    auth = (headers or {}).get("Authorization", "")
    secrets = (auth.split(" ", 1)[-1],) if auth else ()
    started = time.monotonic()
    deadline = started + timeout
    try:
        with AttemptTime(timeout) as guard:
            try:
                with session.get(
                    url,
                    params=params,
                    headers=dict(headers or {}),
                    timeout=(min(CONNECT_TIMEOUT_SECONDS, timeout), timeout),
                    stream=True,
                    allow_redirects=False,
                    verify=verify,
                ) as response:
                    result = _probe_answer(response, deadline, secrets)
            except BodyTooSlow as exc:
                raise requests.exceptions.ReadTimeout(
                    f"timed out after {seconds_text(timeout)}"
                ) from exc
            except requests.exceptions.RequestException as exc:
                if guard.fired and not isinstance(exc, requests.exceptions.Timeout):
                    raise requests.exceptions.ReadTimeout(
                        f"timed out after {seconds_text(timeout)}"
                    ) from exc
                raise
            if guard.fired:
                raise requests.exceptions.ReadTimeout(f"timed out after {seconds_text(timeout)}")
    finally:
        if own:
            session.close()
    status, reason, body, problem, detail = result
    return Probe(status, reason, body, problem, detail, time.monotonic() - started)


def _probe_answer(response: requests.Response, deadline: float, secrets) -> tuple:
    status = response.status_code
    reason = plain_text(response.reason or "")
    ok = 200 <= status < 300
    limit = MAX_PROBE_BODY_BYTES if ok else MAX_ERROR_BODY_BYTES
    body, problem, detail = None, None, None
    if ok:
        chunks = read_chunks(response, deadline, limit)
    else:
        prefix = read_prefix(response, deadline, limit)
        chunks = (prefix,)
        detail = answers.error_text(prefix, reason, secrets) or None
    try:
        scan = answers.scan_object(chunks)
        body = {key: answers.scalar(value, secrets) for key, value in scan.fields.items()}
    except InvalidAnswer as exc:
        problem = str(exc)
    except BodyTooLarge:
        problem = f"larger than {limit // 2**20} MiB"
    return status, reason, body, problem, detail
