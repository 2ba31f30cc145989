"""Calls the dashboard API's refresh endpoint and classifies each answer.

Every attempt is bounded end to end: a shared watchdog thread shuts the attempt's socket
down when its time is up, whatever phase it is in (name resolution, connecting, the status
line and headers, the body); bodies are read in small decoded chunks up to a cap on their
decoded size and scanned as a stream (answers.py), never held or parsed whole.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import urlencode

import requests
import urllib3.exceptions

from . import answers
from .answers import InvalidAnswer, plain_text
from .outcome import Failure
from .plan import Job
from .retry import RETRYABLE_STATUSES
from .settings import Settings
from .transport import AttemptTime, BoundedAdapter, new_session

CONNECT_TIMEOUT_SECONDS = 10.0
# A dashboard answer is a few MB at most; anything far larger is not one. Decoded bytes.
MAX_BODY_BYTES = 256 * 2**20
# Of an error answer only this much is read: its `error` text is cut to 300 characters.
MAX_ERROR_BODY_BYTES = 64 * 2**10
# Of a preflight probe's answer: /health and a read of one dashboard.
MAX_PROBE_BODY_BYTES = 64 * 2**20
# Decoded bytes per read: bounds what one compressed chunk may expand to in memory.
CHUNK_BYTES = 32 * 2**10


class Verdict(enum.Enum):
    """What the runner does after an attempt."""

    SUCCESS = "success"
    RETRY = "retry"  # transient: back off and try again
    REAUTH = "reauth"  # 401: mint a new token, then try once more
    FAIL = "fail"  # permanent: stop trying


@dataclass(frozen=True)
class Attempt:
    """The outcome of one HTTP attempt."""

    verdict: Verdict
    http_status: int | None = None
    error: str | None = None  # short reason: "HTTP 500", "timed out after 30s"
    detail: str | None = None  # the API's own error text, tokens masked
    platform_count: int | None = None
    sku_count: int | None = None
    retry_after: float | None = None
    elapsed: float = 0.0
    failure: Failure | None = None  # why it failed, told here once for every reader
    expires_at: datetime | None = None  # until when the refreshed copy holds, if declared


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Return the seconds a ``Retry-After`` header asks for (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


# -- reading a body within bounds -----------------------------------------------------------
class _BodyTooSlow(Exception):
    """The answer's body did not arrive before the attempt's time ran out."""


class _BodyTooLarge(Exception):
    """The answer's body is larger than any dashboard."""


def _chunks(response: requests.Response, deadline: float, limit: int) -> Iterator[bytes]:
    """Yield the decoded body in chunks of at most CHUNK_BYTES, by ``deadline``, up to ``limit``.

    urllib3 decompresses at most the amount asked for per read, so a small compressed
    answer that expands to gigabytes never occupies more than a chunk.
    """
    size = 0
    raw = response.raw
    try:
        # read1() returns what one socket read brings (iter_content would wait for a whole
        # chunk), so the deadline is checked as often as data arrives.
        while chunk := raw.read1(CHUNK_BYTES, decode_content=True):
            size += len(chunk)
            if size > limit:
                raise _BodyTooLarge
            if time.monotonic() > deadline:
                raise _BodyTooSlow
            yield chunk
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.exceptions.ReadTimeout(exc) from exc
    except urllib3.exceptions.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from exc
    except urllib3.exceptions.HTTPError as exc:
        # A reset or a truncated body: what requests itself would call a connection error.
        raise requests.exceptions.ConnectionError(exc) from exc


def _prefix(response: requests.Response, deadline: float, limit: int) -> bytes:
    """Return at most ``limit`` decoded bytes of the body; the rest is never read."""
    parts, size = [], 0
    for chunk in _chunks(response, deadline, MAX_BODY_BYTES):
        parts.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(parts)[:limit]


def _seconds(value: float) -> str:
    return f"{round(value, 1):g}s"


# -- the refresh ----------------------------------------------------------------------------
class RefreshClient:
    """A pooled HTTP session for one run."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.session = new_session(settings.concurrency)
        self.session.headers["Cache-Control"] = "no-cache"
        # Certificates are always verified: against REFRESH_CA_BUNDLE when set, else the
        # default trust store. There is deliberately no way to turn verification off.
        # Passed on every request: requests lets REQUESTS_CA_BUNDLE override a session's
        # verify setting, and an explicit per-request value is what it cannot override.
        self.verify: str | bool = str(settings.ca_bundle) if settings.ca_bundle else True
        # Every request of a run goes to one URL with the same session headers, so what
        # requests would work out per request is worked out once: proxies and CA bundle
        # from the environment (requests reads the whole environment twice for each), and
        # the prepared request that only the query and the token vary on. The session's
        # cookies are never sent: one client's answer must not shape another's request.
        url = settings.endpoint_url
        self._send_options = self.session.merge_environment_settings(
            url, {}, True, self.verify, None
        )
        self._template = self.session.prepare_request(requests.Request("GET", url))
        self._query_joint = "&" if "?" in self._template.url else "?"

    def close(self) -> None:
        self.session.close()

    def refresh(self, job: Job, token: str, read_timeout: float) -> Attempt:
        """Ask the API to recompute ``job``'s dashboard; never raises for network trouble.

        ``read_timeout`` bounds the whole attempt: connecting, the headers and the body.
        """
        query = urlencode(
            {"client_id": job.client_id, "platform": job.platform, "force_refresh": "true"}
        )
        request = self._template.copy()
        request.url = f"{request.url}{self._query_joint}{query}"
        request.headers["Authorization"] = f"Bearer {token}"
        secrets = (token, *self.settings.secrets)
        started = time.monotonic()
        deadline = started + read_timeout
        timed_out = Attempt(
            Verdict.RETRY,
            error=f"timed out after {_seconds(read_timeout)}",
            failure=Failure.TIMEOUT,
        )
        with AttemptTime(read_timeout) as guard:
            try:
                with self.session.send(
                    request,
                    timeout=(min(CONNECT_TIMEOUT_SECONDS, read_timeout), read_timeout),
                    allow_redirects=False,
                    **self._send_options,
                ) as response:
                    attempt = self._answer(response, deadline, secrets)
                if guard.fired:
                    # The watchdog's cut can look like the end of a body without a length.
                    attempt = timed_out
            except _BodyTooSlow:
                attempt = timed_out
            except _BodyTooLarge:
                attempt = Attempt(
                    Verdict.FAIL,
                    error=f"invalid response (larger than {MAX_BODY_BYTES // 2**20} MiB)",
                    failure=Failure.INVALID,
                )
            except requests.exceptions.SSLError as exc:
                attempt = Attempt(
                    Verdict.FAIL,
                    error=f"TLS verification failed ({_reason(exc, secrets)}); set "
                    "REFRESH_CA_BUNDLE to the CA file that signed the API's certificate",
                    failure=Failure.CONNECTION,
                )
            except requests.exceptions.RequestException as exc:
                if guard.fired or isinstance(exc, requests.exceptions.Timeout):
                    attempt = timed_out
                elif isinstance(exc, requests.exceptions.ConnectionError):
                    attempt = Attempt(
                        Verdict.RETRY,
                        error=f"connection failed: {_reason(exc, secrets)}",
                        failure=Failure.CONNECTION,
                    )
                else:
                    attempt = Attempt(
                        Verdict.RETRY,
                        error=f"request failed: {_reason(exc, secrets)}",
                        failure=Failure.CONNECTION,
                    )
        elapsed = time.monotonic() - started
        return dataclasses.replace(attempt, elapsed=elapsed)

    def _answer(self, response: requests.Response, deadline: float, secrets) -> Attempt:
        status = response.status_code
        if 200 <= status < 300:
            try:
                scan = answers.scan_object(_chunks(response, deadline, MAX_BODY_BYTES))
            except InvalidAnswer as exc:
                return Attempt(
                    Verdict.FAIL, status, f"invalid response ({exc})", failure=Failure.INVALID
                )
            return Attempt(
                Verdict.SUCCESS,
                status,
                platform_count=answers.count(scan.lengths.get("platforms")),
                sku_count=answers.count(scan.fields.get("sku_count")),
                expires_at=answers.expiry(
                    scan.fields.get("expires_at"),
                    response.headers.get("Cache-Control"),
                    response.headers.get("Expires"),
                    datetime.now(timezone.utc),
                ),
            )
        body = _prefix(response, deadline, MAX_ERROR_BODY_BYTES)
        error = f"HTTP {status}"
        detail = answers.error_text(body, response.reason, secrets) or None
        if status in RETRYABLE_STATUSES:
            return Attempt(
                Verdict.RETRY,
                status,
                error,
                detail,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
                failure=Failure.HTTP,
            )
        if status == 401:
            return Attempt(Verdict.REAUTH, status, error, detail, failure=Failure.HTTP)
        return Attempt(Verdict.FAIL, status, error, detail, failure=Failure.HTTP)


# -- the preflight's probes -----------------------------------------------------------------
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
        raise TypeError("probe() needs a session from analytics_refresh.client.new_session()")
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
            except _BodyTooSlow as exc:
                raise requests.exceptions.ReadTimeout(
                    f"timed out after {_seconds(timeout)}"
                ) from exc
            except requests.exceptions.RequestException as exc:
                if guard.fired and not isinstance(exc, requests.exceptions.Timeout):
                    raise requests.exceptions.ReadTimeout(
                        f"timed out after {_seconds(timeout)}"
                    ) from exc
                raise
            if guard.fired:
                raise requests.exceptions.ReadTimeout(f"timed out after {_seconds(timeout)}")
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
        chunks = _chunks(response, deadline, limit)
    else:
        prefix = _prefix(response, deadline, limit)
        chunks = (prefix,)
        detail = answers.error_text(prefix, reason, secrets) or None
    try:
        scan = answers.scan_object(chunks)
        body = {key: answers.scalar(value, secrets) for key, value in scan.fields.items()}
    except InvalidAnswer as exc:
        problem = str(exc)
    except _BodyTooLarge:
        problem = f"larger than {limit // 2**20} MiB"
    return status, reason, body, problem, detail


def _reason(exc: Exception, secrets: tuple[str, ...] = ()) -> str:
    """Return the innermost cause of a requests exception, short, with ``secrets`` masked."""
    inner = exc
    while inner.__context__ is not None and inner.__context__ is not inner:
        inner = inner.__context__
    text = str(inner) or type(inner).__name__
    for marker in (
        "Connection refused",
        "Connection reset",
        "Name or service not known",
        "certificate verify failed",
        "Remote end closed connection",
    ):
        if marker.lower() in text.lower():
            return marker
    return plain_text(text, secrets)
