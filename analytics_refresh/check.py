"""``analytics-refresh check``: the preflight checklist, one line per check.

Each check gives a ``Result``: a mark (✓ pass, ⚠ warning, ✗ failure, - skipped because an
earlier check failed) and, on a failure, the fix; ``console.print_check`` renders it. The
exit code is the one a run would end with for the first failure: 3 for settings and tokens,
4 for the database and its tables, 1 when the API does not answer or refuses the read
(every job of a run would fail). No connected client is a warning and exits 0, as a run
does. The HTTP probes are bounded in time, size and depth as a run's requests are
(``client.probe``).
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests

import api_key_auth

from . import db, records
from .change_check import change_query_result
from .client import Probe, probe
from .errors import ConfigError, DatabaseError, RefreshError
from .logs import redact
from .plan import Job, build_plan, stream_connected
from .settings import Settings
from .urls import display_url

# The exit code a run would end with when a check of this kind fails.
SETTINGS_FAILED = ConfigError.exit_code
DATABASE_FAILED = DatabaseError.exit_code
JOBS_WOULD_FAIL = RefreshError.exit_code

TOKEN_TTL_SECONDS = 300
HEALTH_TIMEOUT_SECONDS = 10.0
NO_CLIENT = str(uuid.UUID(int=0))
ENDPOINT = "Endpoint accepts a token"
CHANGE_QUERY = "Change query runs"


@dataclass(frozen=True)
class Result:
    """The outcome of one check."""

    name: str
    state: str  # ok | warn | fail | skip
    detail: str
    fix: str | None = None
    exit_code: int = 0


def _ok(name: str, detail: str) -> Result:
    return Result(name, "ok", detail)


def _fail(name: str, detail: str, fix: str, code: int) -> Result:
    return Result(name, "fail", detail, fix, code)


class Preflight:
    """Runs the checks in order and shows a line for each as soon as it is known."""

    def __init__(self, settings: Settings, show: Callable[[Result], None]):
        self.settings = settings
        self.show = show
        self.results: list[Result] = []
        self.conn = None
        self.jobs: list[Job] = []
        self.token: str | None = None
        self.health_ok = False
        self.secrets = settings.secrets

    @property
    def exit_code(self) -> int:
        return next((r.exit_code for r in self.results if r.state == "fail"), 0)

    def run(self) -> int:
        """Run every check, print the checklist and return the exit code."""
        try:
            for name, check in (
                ("Settings valid", self.check_settings),
                ("Log and metrics files writable", self.check_files),
                ("Database reachable", self.check_database),
                ("Runner tables present", self.check_tables),
                ("Active clients found", self.check_clients),
                *((CHANGE_QUERY, self.check_change_query),) * bool(self.settings.change_sql),
                ("Token mints and verifies", self.check_token),
                ("API /health answers", self.check_health),
                (ENDPOINT, self.check_endpoint),
            ):
                try:
                    with db.boundary(self.settings.database_url):
                        result = check(name)
                except DatabaseError as exc:  # the database went away between two checks
                    fix = "check that PostgreSQL is up and DATABASE_URL names it"
                    result = _fail(name, exc.message, fix, DATABASE_FAILED)
                self.add(result)
        finally:
            if self.conn is not None:
                self.conn.close()
        return self.exit_code

    def add(self, result: Result) -> None:
        self.results.append(result)
        self.show(result)

    # -- the checks -------------------------------------------------------------------------
    def check_settings(self, name: str) -> Result:
        s = self.settings
        try:
            s.require_secret()
        except ConfigError as exc:
            return _fail(name, exc.message, exc.hint or "", exc.exit_code)
        heartbeat = (urlsplit(s.healthcheck_url).hostname or "on") if s.healthcheck_url else "off"
        detail = (
            f"API {display_url(s.endpoint_url)}, platforms {','.join(s.platforms)}, concurrency "
            f"{s.concurrency}, timeout {s.timeout:g}s, {s.max_attempts} attempts, interval "
            f"{s.interval_minutes:g} min, deadline {s.deadline:g}s, API_SECRET_KEY set, "
            f"heartbeat {heartbeat}, metrics {s.metrics_file or 'off'}, change query "
            f"{'on' if s.change_sql else 'off'}"
        )
        if s.warnings:
            # A misspelt name or a deadline longer than the interval: the settings are
            # valid one by one, but not what was meant.
            return Result(
                name,
                "warn",
                f"{detail}; " + "; ".join(s.warnings),
                "correct the names and values above in .env or the environment "
                "(.env.example lists every variable)",
            )
        return _ok(name, detail)

    def check_files(self, name: str) -> Result:
        paths = [self.settings.log_file]
        if self.settings.metrics_file is not None:
            paths.append(Path(self.settings.metrics_file))
        blocked = [str(p) for p in paths if not writable(p)]
        if blocked:
            return Result(
                name,
                "warn",
                f"cannot write {', '.join(blocked)}; a run logs to stderr instead",
                "point LOG_DIR (and METRICS_FILE) at a directory the scheduler's user can "
                "write, e.g. the project's logs/",
            )
        return _ok(name, ", ".join(str(p) for p in paths))

    def check_database(self, name: str) -> Result:
        try:
            why = db.source(self.settings)
            url = db.database_url(self.settings)
            self.conn = db.connect(url, application_name="analytics-refresh check")
            with db.boundary(url), self.conn.cursor() as cur:
                cur.execute(db.sql.SERVER_VERSION)
                version = cur.fetchone()[0]
        except RefreshError as exc:
            return _fail(name, exc.message, exc.hint or "check DATABASE_URL", exc.exit_code)
        return _ok(name, f"{db.describe(url)} ({why}), PostgreSQL {version}")

    def check_tables(self, name: str) -> Result:
        if self.conn is None:
            return Result(name, "skip", "no database connection")
        missing = db.missing_tables(self.conn)
        if missing:
            return _fail(
                name,
                f"missing: {', '.join(missing)}",
                "run `analytics-refresh db init` once against this database",
                DATABASE_FAILED,
            )
        _, runs = records.recent_runs(self.conn, 1)
        tables = ", ".join(db.RUNNER_TABLES)
        if not runs:
            return _ok(name, f"{tables}; no run recorded yet")
        last = runs[0]
        when = last["started_at"].astimezone().strftime("%Y-%m-%d %H:%M:%S")
        ended = "" if last["exit_code"] is None else f", exit {last['exit_code']}"
        return _ok(name, f"{tables}; last run {when} ({last['trigger']}): {last['status']}{ended}")

    def check_clients(self, name: str) -> Result:
        if self.conn is None:
            return Result(name, "skip", "no database connection")
        try:
            db.require_credentials_table(self.conn)
        except DatabaseError as exc:
            return _fail(name, exc.message, exc.hint or "", exc.exit_code)
        plan = build_plan(stream_connected(self.conn), self.settings)
        self.jobs = plan.jobs
        skipped = (
            f"; {plan.rejected_rows} credential rows skipped as invalid"
            if plan.rejected_rows
            else ""
        )
        if not plan.jobs:
            statuses = records.credential_statuses(self.conn)
            which = " for the selected clients or platforms" if self.settings.clients else ""
            return Result(
                name,
                "warn",
                f"no connected client{which} (credential rows by status: {statuses}){skipped}; "
                "a run refreshes nothing and exits 0",
                "connect a store in the application (a client_api_credentials row with "
                "status = 'connected'), or point DATABASE_URL at the application's database",
            )
        per_platform = Counter(job.platform for job in plan.jobs)
        spread = ", ".join(f"{p} {per_platform[p]}" for p in plan.platforms if per_platform[p])
        return _ok(name, f"{plan.client_count} clients, {len(plan.jobs)} jobs ({spread}){skipped}")

    def check_change_query(self, name: str) -> Result:
        if self.conn is None:
            return Result(name, "skip", "no database connection")
        state, detail, fix = change_query_result(self.conn, self.settings, self.jobs)
        return Result(name, state, detail, fix, SETTINGS_FAILED if state == "fail" else 0)

    def check_token(self, name: str) -> Result:
        secret = self.settings.secret_key
        if not secret:
            return Result(name, "skip", "API_SECRET_KEY is not set")
        client = self.jobs[0].client_id if self.jobs else NO_CLIENT
        try:
            token = api_key_auth.mint_client_token(
                client, secret, scope=api_key_auth.SCOPE_READ, ttl_seconds=TOKEN_TTL_SECONDS
            )
            api_key_auth.verify_client_token(
                token, secret, client_id=client, scope=api_key_auth.SCOPE_READ
            )
        except (ValueError, api_key_auth.TokenError) as exc:
            return _fail(
                name,
                redact(str(exc), self.secrets),
                "set API_SECRET_KEY to the API's secret, at least 32 characters",
                SETTINGS_FAILED,
            )
        self.token = token
        return _ok(name, f"HS256, scope {api_key_auth.SCOPE_READ}, lives {TOKEN_TTL_SECONDS}s")

    def check_health(self, name: str) -> Result:
        url = self.settings.api_url.rstrip("/") + "/health"
        shown = display_url(url)
        try:
            answer = self.probe(url, timeout=min(HEALTH_TIMEOUT_SECONDS, self.settings.timeout))
        except requests.RequestException as exc:
            return _fail(
                name,
                f"{shown}: {network_reason(exc)}",
                unreachable_fix(self.settings),
                JOBS_WOULD_FAIL,
            )
        body = answer.body or {}
        database = body.get("database")
        if answer.status == 404:
            self.health_ok = True
            return Result(
                name, "warn", f"{shown}: HTTP 404, the API has no /health; the read below decides"
            )
        if answer.status == 503 or (database is not None and database != "ok"):
            return _fail(
                name,
                f"{shown}: HTTP {answer.status}, the API is up but its database is "
                f"{database or 'down'}",
                "check the API's DATABASE_URL and that its PostgreSQL is running",
                JOBS_WOULD_FAIL,
            )
        if not 200 <= answer.status < 300:
            return _fail(
                name,
                f"{shown}: HTTP {answer.status} {_error(answer)}".rstrip(),
                "see the API's log; ANALYTICS_API_URL must be the API's base URL",
                JOBS_WOULD_FAIL,
            )
        self.health_ok = True
        state = ", ".join(f"{k} {body[k]}" for k in ("status", "database") if k in body)
        return _ok(
            name,
            f"{shown}: HTTP {answer.status}{', ' + state if state else ''} "
            f"[{answer.elapsed * 1000:.0f} ms]",
        )

    def check_endpoint(self, name: str) -> Result:
        if not self.jobs:
            return Result(name, "skip", "no connected client to read")
        if self.token is None or not self.health_ok:
            return Result(name, "skip", "needs a token and an API that answers /health")
        job = self.jobs[0]
        try:
            answer = self.probe(
                self.settings.endpoint_url,
                params={
                    "client_id": job.client_id,
                    "platform": job.platform,
                    "force_refresh": "false",
                },
                headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json"},
                timeout=self.settings.timeout,
            )
        except requests.RequestException as exc:
            return _fail(
                name,
                f"read of {job}: {network_reason(exc)}",
                unreachable_fix(self.settings),
                JOBS_WOULD_FAIL,
            )
        body, status, elapsed = answer.body, answer.status, answer.elapsed
        what = f"read of {job}: HTTP {status}"
        if 200 <= status < 300:
            if body is None:
                return _fail(
                    name,
                    f"{what}, but the answer is not a JSON object ({answer.problem or 'no body'})",
                    "ANALYTICS_API_URL and ANALYTICS_ENDPOINT must name the dashboard API "
                    f"(now {display_url(self.settings.endpoint_url)}), not a proxy's or a web "
                    "server's page",
                    JOBS_WOULD_FAIL,
                )
            skus = body.get("sku_count", "?")
            source = "from its cache" if body.get("cached") else "computed"
            return _ok(name, f"{what}, {skus} SKUs, {source} [{elapsed:.2f}s]")
        error = _error(answer)
        fixes = {
            401: "give the API and the runner the same API_SECRET_KEY, and check both "
            "clocks (a token lives minutes)",
            403: "the API must accept a token whose sub is the client and whose scope is "
            "analytics:read (see openapi.yaml)",
            404: f"check ANALYTICS_ENDPOINT (now {self.settings.endpoint}) and that the API "
            "reads the same database as the runner",
            503: "the API is shedding load or its database is down: see /health, retry later",
        }
        fix = fixes.get(
            status,
            "see the API's log; reproduce with curl and a token from "
            f"`analytics-refresh token {job.client_id} --scope read`",
        )
        return _fail(name, f"{what} {error}".rstrip(), fix, JOBS_WOULD_FAIL)

    # -- helpers ----------------------------------------------------------------------------
    def probe(self, url: str, **kwargs) -> Probe:
        """One bounded request (time, size and depth, as a run's): client.probe."""
        verify = str(self.settings.ca_bundle) if self.settings.ca_bundle else True
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


def writable(path: Path) -> bool:
    """Return whether ``path`` could be written, without creating anything."""
    if path.exists():
        return path.is_file() and os.access(path, os.W_OK)
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    return parent.is_dir() and os.access(parent, os.W_OK)


def invalid_settings(exc: ConfigError) -> Result:
    """Return the checklist's settings line for settings that could not be read."""
    text = exc.message.replace("invalid configuration:\n", "").replace("\n", ";")
    fix = exc.hint or (
        "correct the variables named, in the environment or .env (.env.example lists them all)"
    )
    return _fail("Settings valid", " ".join(text.split()), fix, exc.exit_code)


def run_checks(settings: Settings) -> int:
    """Print the preflight checklist and return its exit code."""
    from .console import output_console, print_check, print_check_summary

    console = output_console()
    preflight = Preflight(settings, lambda r: print_check(console, r, settings.secrets))
    code = preflight.run()
    print_check_summary(console, preflight.results, code)
    return code
