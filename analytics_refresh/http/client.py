"""Calls the dashboard API's refresh endpoint and classifies each answer.

Every attempt is bounded end to end: a shared watchdog thread shuts the attempt's socket
down when its time is up, whatever phase it is in (name resolution, connecting, the status
line and headers, the body); bodies are read in small decoded chunks up to a cap on their
decoded size (bodies.py) and scanned as a stream (answers.py), never held or parsed whole.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import urlencode

import requests

from analytics_refresh.config.settings import Settings
from analytics_refresh.http import answers
from analytics_refresh.http.answers import InvalidAnswer, plain_text
from analytics_refresh.http.bodies import (
    MAX_BODY_BYTES,
    MAX_ERROR_BODY_BYTES,
    BodyTooLarge,
    BodyTooSlow,
    read_chunks,
    read_prefix,
    seconds_text,
)
from analytics_refresh.http.retry import RETRYABLE_STATUSES
from analytics_refresh.http.transport import AttemptTime, new_session
from analytics_refresh.model.outcome import Failure
from analytics_refresh.store.plan import Job

CONNECT_TIMEOUT_SECONDS = 10.0


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
            error=f"timed out after {seconds_text(read_timeout)}",
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
            except BodyTooSlow:
                attempt = timed_out
            except BodyTooLarge:
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
                scan = answers.scan_object(read_chunks(response, deadline, MAX_BODY_BYTES))
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
        body = read_prefix(response, deadline, MAX_ERROR_BODY_BYTES)
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
