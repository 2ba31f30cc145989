"""The checklist's API checks: ``/health`` answers, and the endpoint accepts a minted token.

Each is one request bounded in time, size and depth as a run's requests are
(``probe.probe``); a failure names what answered, or why nothing did, and the fix.
"""

from __future__ import annotations

import requests

from analytics_refresh.config.settings import Settings
from analytics_refresh.config.urls import display_url
from analytics_refresh.http.probe import Probe, probe
from analytics_refresh.ops.checklist import JOBS_WOULD_FAIL, Result, fail, ok
from analytics_refresh.store.plan import Job

HEALTH_TIMEOUT_SECONDS = 10.0


def check_health(settings: Settings, name: str) -> Result:
    """GET /health: the API answers and its database is up (a 404 is a warning)."""
    url = settings.api_url.rstrip("/") + "/health"
    shown = display_url(url)
    try:
        answer = _probe(settings, url, timeout=min(HEALTH_TIMEOUT_SECONDS, settings.timeout))
    except requests.RequestException as exc:
        return fail(
            name,
            f"{shown}: {network_reason(exc)}",
            unreachable_fix(settings),
            JOBS_WOULD_FAIL,
        )
    body = answer.body or {}
    database = body.get("database")
    if answer.status == 404:
        return Result(
            name, "warn", f"{shown}: HTTP 404, the API has no /health; the read below decides"
        )
    if answer.status == 503 or (database is not None and database != "ok"):
        return fail(
            name,
            f"{shown}: HTTP {answer.status}, the API is up but its database is "
            f"{database or 'down'}",
            "check the API's DATABASE_URL and that its PostgreSQL is running",
            JOBS_WOULD_FAIL,
        )
    if not 200 <= answer.status < 300:
        return fail(
            name,
            f"{shown}: HTTP {answer.status} {_error(answer)}".rstrip(),
            "see the API's log; ANALYTICS_API_URL must be the API's base URL",
            JOBS_WOULD_FAIL,
        )
    state = ", ".join(f"{k} {body[k]}" for k in ("status", "database") if k in body)
    return ok(
        name,
        f"{shown}: HTTP {answer.status}{', ' + state if state else ''} "
        f"[{answer.elapsed * 1000:.0f} ms]",
    )


def check_endpoint(settings: Settings, name: str, job: Job, token: str) -> Result:
    """Read ``job``'s dashboard with ``token``, without forcing a refresh."""
    try:
        answer = _probe(
            settings,
            settings.endpoint_url,
            params={
                "client_id": job.client_id,
                "platform": job.platform,
                "force_refresh": "false",
            },
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=settings.timeout,
        )
    except requests.RequestException as exc:
        return fail(
            name,
            f"read of {job}: {network_reason(exc)}",
            unreachable_fix(settings),
            JOBS_WOULD_FAIL,
        )
    body, status, elapsed = answer.body, answer.status, answer.elapsed
    what = f"read of {job}: HTTP {status}"
    if 200 <= status < 300:
        if body is None:
            return fail(
                name,
                f"{what}, but the answer is not a JSON object ({answer.problem or 'no body'})",
                "ANALYTICS_API_URL and ANALYTICS_ENDPOINT must name the dashboard API "
                f"(now {display_url(settings.endpoint_url)}), not a proxy's or a web "
                "server's page",
                JOBS_WOULD_FAIL,
            )
        skus = body.get("sku_count", "?")
        source = "from its cache" if body.get("cached") else "computed"
        return ok(name, f"{what}, {skus} SKUs, {source} [{elapsed:.2f}s]")
    error = _error(answer)
    fixes = {
        401: "give the API and the runner the same API_SECRET_KEY, and check both "
        "clocks (a token lives minutes)",
        403: "the API must accept a token whose sub is the client and whose scope is "
        "analytics:read (see openapi.yaml)",
        404: f"check ANALYTICS_ENDPOINT (now {settings.endpoint}) and that the API "
        "reads the same database as the runner",
        503: "the API is shedding load or its database is down: see /health, retry later",
    }
    fix = fixes.get(
        status,
        "see the API's log; reproduce with curl and a token from "
        f"`analytics-refresh token {job.client_id} --scope read`",
    )
    return fail(name, f"{what} {error}".rstrip(), fix, JOBS_WOULD_FAIL)


def _probe(settings: Settings, url: str, **kwargs) -> Probe:
    """One bounded request (time, size and depth, as a run's): probe.probe."""
    verify = str(settings.ca_bundle) if settings.ca_bundle else True
    return probe(None, url, verify=verify, **kwargs)


def _error(answer: Probe) -> str:
    """The answer's error text (plain, tokens masked by probe) or its reason phrase."""
    return answer.detail or answer.reason or ""


def network_reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS verification failed"
    if isinstance(exc, requests.exceptions.Timeout):
        return "no answer in time (timed out)"
    if isinstance(exc, requests.exceptions.ConnectionError):
        text = str(exc)
        return "connection refused" if "refused" in text.lower() else "connection failed"
    return type(exc).__name__


def unreachable_fix(settings: Settings) -> str:
    return (
        f"nothing answers at ANALYTICS_API_URL (now {display_url(settings.api_url)}): start "
        "the dashboard API there (`analytics-refresh serve` and `gunicorn --config "
        "python:dashboard_api.gunicorn_config 'dashboard_api:create_app()'` both listen on "
        "port 5000), or set ANALYTICS_API_URL to where it listens; for HTTPS with a private "
        "CA set REFRESH_CA_BUNDLE"
    )
