"""Calls the dashboard API's refresh endpoint and classifies each answer (INTERFACE.md s. 8)."""

from __future__ import annotations

import enum
import json
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import requests
import requests.adapters
import urllib3

from . import __version__
from .logs import redact
from .plan import Job
from .retry import RETRYABLE_STATUSES
from .settings import Settings

USER_AGENT = f"analytics-refresh/{__version__}"
CONNECT_TIMEOUT_SECONDS = 10.0
MAX_ERROR_TEXT = 300
# A dashboard answer is a few MB at most; anything far larger is not one.
MAX_BODY_BYTES = 256 * 2**20


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


def _error_text(body: bytes, reason: str | None, secrets: tuple[str, ...]) -> str:
    """Return the answer's ``error`` field (or a short excerpt), with any token masked."""
    text = None
    try:
        payload = json.loads(body)
        if isinstance(payload, dict) and isinstance(payload.get("error"), str):
            text = payload["error"]
    except (ValueError, UnicodeDecodeError):
        pass
    if not text:
        excerpt = body[: MAX_ERROR_TEXT * 4].decode("utf-8", errors="replace").strip()
        text = excerpt or reason or ""
    # A backend that echoes the request back must not leak our token into logs or tables.
    text = redact(" ".join(text.split()), secrets)
    return text[:MAX_ERROR_TEXT]


def _count(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        return value
    return None


class RefreshClient:
    """A pooled HTTP session for one run."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=1, pool_maxsize=max(settings.concurrency, 1), max_retries=0
        )
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update(
            {
                "User-Agent": USER_AGENT,
                "Accept": "application/json",
                "Cache-Control": "no-cache",
            }
        )
        # Certificates are always verified: against REFRESH_CA_BUNDLE when set, else the
        # default trust store. There is deliberately no way to turn verification off.
        # Passed on every request: requests lets REQUESTS_CA_BUNDLE override a session's
        # verify setting, and an explicit per-request value is what it cannot override.
        self.verify: str | bool = str(settings.ca_bundle) if settings.ca_bundle else True

    def close(self) -> None:
        self.session.close()

    def refresh(self, job: Job, token: str, read_timeout: float) -> Attempt:
        """Ask the API to recompute ``job``'s dashboard; never raises for network trouble."""
        params = {"client_id": job.client_id, "platform": job.platform, "force_refresh": "true"}
        headers = {"Authorization": f"Bearer {token}"}
        secrets = (token,)
        started = time.monotonic()
        try:
            with self.session.get(
                self.settings.endpoint_url,
                params=params,
                headers=headers,
                timeout=(min(CONNECT_TIMEOUT_SECONDS, read_timeout), read_timeout),
                stream=True,
                allow_redirects=False,
                verify=self.verify,
            ) as response:
                body = _read_body(response, started + read_timeout)
                return self._classify(response, body, secrets, time.monotonic() - started)
        except _BodyTooSlow:
            return Attempt(
                Verdict.RETRY,
                error=f"timed out after {read_timeout:.0f}s (the answer arrived too slowly)",
                elapsed=time.monotonic() - started,
            )
        except _BodyTooLarge:
            return Attempt(
                Verdict.FAIL,
                error=f"invalid response (larger than {MAX_BODY_BYTES // 2**20} MiB)",
                elapsed=time.monotonic() - started,
            )
        except requests.exceptions.SSLError as exc:
            return Attempt(
                Verdict.FAIL,
                error=f"TLS verification failed ({_reason(exc)}); set REFRESH_CA_BUNDLE to "
                "the CA file that signed the API's certificate",
                elapsed=time.monotonic() - started,
            )
        except requests.exceptions.Timeout:
            return Attempt(
                Verdict.RETRY,
                error=f"timed out after {read_timeout:.0f}s",
                elapsed=time.monotonic() - started,
            )
        except requests.exceptions.ConnectionError as exc:
            return Attempt(
                Verdict.RETRY,
                error=f"connection failed: {_reason(exc)}",
                elapsed=time.monotonic() - started,
            )
        except requests.exceptions.RequestException as exc:
            return Attempt(
                Verdict.RETRY,
                error=f"request failed: {_reason(exc)}",
                elapsed=time.monotonic() - started,
            )

    def _classify(self, response, body: bytes, secrets, elapsed: float) -> Attempt:
        status = response.status_code
        if 200 <= status < 300:
            try:
                payload = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                payload = None
            if not isinstance(payload, dict):
                return Attempt(
                    Verdict.FAIL, status, "invalid response (not a JSON object)", elapsed=elapsed
                )
            platforms = payload.get("platforms")
            return Attempt(
                Verdict.SUCCESS,
                status,
                platform_count=len(platforms) if isinstance(platforms, list) else None,
                sku_count=_count(payload.get("sku_count")),
                elapsed=elapsed,
            )
        error = f"HTTP {status}"
        detail = _error_text(body, response.reason, secrets) or None
        if status in RETRYABLE_STATUSES:
            return Attempt(
                Verdict.RETRY,
                status,
                error,
                detail,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
                elapsed=elapsed,
            )
        if status == 401:
            return Attempt(Verdict.REAUTH, status, error, detail, elapsed=elapsed)
        return Attempt(Verdict.FAIL, status, error, detail, elapsed=elapsed)


class _BodyTooSlow(Exception):
    """The answer's body did not arrive before the attempt's time ran out."""


class _BodyTooLarge(Exception):
    """The answer's body is larger than any dashboard."""


def _read_body(response: requests.Response, deadline: float) -> bytes:
    """Read the whole body by ``deadline`` (monotonic), or raise.

    requests' read timeout bounds each socket read, not the whole answer: a server that
    trickles a byte a second would otherwise hold the job past REFRESH_TIMEOUT and the
    run past its deadline. The body is only counted and then dropped.
    """
    chunks, size = [], 0
    try:
        # read1() returns what one socket read brings (iter_content would wait for a whole
        # chunk), so the deadline is checked as often as data arrives.
        while chunk := response.raw.read1(64 * 1024, decode_content=True):
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise _BodyTooLarge
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise _BodyTooSlow
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.exceptions.ReadTimeout(exc) from exc
    except urllib3.exceptions.HTTPError as exc:
        # A reset or a truncated body: what requests itself would call a connection error.
        raise requests.exceptions.ConnectionError(exc) from exc
    return b"".join(chunks)


def _reason(exc: Exception) -> str:
    """Return the innermost cause of a requests exception, short and without URLs' queries."""
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
    return redact(text)[:MAX_ERROR_TEXT]
