"""``analytics-refresh check``: the preflight checklist, one line per check.

Each line has a mark (✓ pass, ⚠ warning, ✗ failure, - skipped because an earlier check
failed) and, on a failure, the fix. The exit code is the one a run would end with for the
first failure: 3 for settings and tokens, 4 for the database and its tables, 1 when the API
does not answer or refuses the read (every job of a run would fail). No connected client is
a warning and exits 0, as a run does.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import requests
from rich.console import Console
from rich.text import Text

import api_key_auth

from . import __version__, db
from .errors import ConfigError, RefreshError, first_line
from .logs import redact
from .plan import Job, build_plan, stream_connected
from .settings import Settings
from .status import output_console

TOKEN_TTL_SECONDS = 300
HEALTH_TIMEOUT_SECONDS = 10.0
NO_CLIENT = str(uuid.UUID(int=0))
ENDPOINT = "Endpoint accepts a token"
MARKS = {"ok": ("✓", "green"), "warn": ("⚠", "yellow"), "fail": ("✗", "red"), "skip": ("-", "dim")}

LAST_RUN = """
    SELECT started_at, status, exit_code, trigger FROM refresh_runs
    ORDER BY started_at DESC LIMIT 1
"""
CREDENTIAL_STATUSES = """
    SELECT status, count(*) FROM client_api_credentials GROUP BY status ORDER BY status
"""


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


def _message(exc: RefreshError) -> str:
    return exc.args[0] if exc.args else type(exc).__doc__ or ""


class Preflight:
    """Runs the checks in order and prints a line for each as soon as it is known."""

    def __init__(self, settings: Settings, console: Console | None = None):
        self.settings = settings
        self.console = console or output_console()
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
                ("Token mints and verifies", self.check_token),
                ("API /health answers", self.check_health),
                (ENDPOINT, self.check_endpoint),
            ):
                try:
                    result = check(name)
                except psycopg2.Error as exc:  # the database went away between two checks
                    reason = first_line(exc)
                    result = _fail(
                        name,
                        f"database error: {reason}",
                        "check that PostgreSQL is up and DATABASE_URL names it",
                        4,
                    )
                self.add(result)
        finally:
            if self.conn is not None:
                self.conn.close()
        self.summarise()
        return self.exit_code

    # -- output -----------------------------------------------------------------------------
    def add(self, result: Result) -> None:
        self.results.append(result)
        print_result(self.console, result, self.secrets)

    def summarise(self) -> None:
        failed = [r for r in self.results if r.state == "fail"]
        warned = [r for r in self.results if r.state == "warn"]
        if failed:
            self.console.print(
                f"✗ {len(failed)} of {len(self.results)} checks failed; exit {self.exit_code} "
                f"(first failure: {failed[0].name})",
                style="red",
                soft_wrap=True,
            )
        else:
            extra = f" with {len(warned)} warning{'s' if len(warned) > 1 else ''}" if warned else ""
            self.console.print(
                f"✓ all {len(self.results)} checks passed{extra}",
                style="yellow" if warned else "green",
                soft_wrap=True,
            )

    # -- the checks -------------------------------------------------------------------------
    def check_settings(self, name: str) -> Result:
        s = self.settings
        try:
            s.require_secret()
        except ConfigError as exc:
            return _fail(name, _message(exc), exc.hint or "", exc.exit_code)
        heartbeat = (urlsplit(s.healthcheck_url).hostname or "on") if s.healthcheck_url else "off"
        return _ok(
            name,
            f"API {s.endpoint_url}, platforms {','.join(s.platforms)}, concurrency "
            f"{s.concurrency}, timeout {s.timeout:g}s, {s.max_attempts} attempts, deadline "
            f"{s.deadline:g}s, API_SECRET_KEY set, heartbeat {heartbeat}, metrics "
            f"{s.metrics_file or 'off'}",
        )

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
            url = db.database_url(self.settings)
            self.conn = db.connect(url, application_name="analytics-refresh check")
            with self.conn.cursor() as cur:
                cur.execute("SHOW server_version")
                version = cur.fetchone()[0]
        except RefreshError as exc:
            return _fail(name, _message(exc), exc.hint or "check DATABASE_URL", exc.exit_code)
        return _ok(name, f"{db.describe(url)}, PostgreSQL {version}")

    def check_tables(self, name: str) -> Result:
        if self.conn is None:
            return Result(name, "skip", "no database connection")
        missing = db.missing_tables(self.conn)
        if missing:
            return _fail(
                name,
                f"missing: {', '.join(missing)}",
                "run `analytics-refresh db init` once against this database",
                4,
            )
        with self.conn.cursor() as cur:
            cur.execute(LAST_RUN)
            last = cur.fetchone()
        if last is None:
            return _ok(name, "refresh_runs, refresh_jobs; no run recorded yet")
        started, status, code, trigger = last
        when = started.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        ended = "" if code is None else f", exit {code}"
        return _ok(
            name, f"refresh_runs, refresh_jobs; last run {when} ({trigger}): {status}{ended}"
        )

    def check_clients(self, name: str) -> Result:
        if self.conn is None:
            return Result(name, "skip", "no database connection")
        if db.missing_tables(self.conn, ("client_api_credentials",)):
            return _fail(
                name,
                "table client_api_credentials is missing: there is no list of clients",
                "point DATABASE_URL at the application's database, or create the table with "
                "`analytics-refresh db init --with-api-schema`",
                4,
            )
        plan = build_plan(stream_connected(self.conn), self.settings)
        self.jobs = plan.jobs
        skipped = (
            f"; {plan.rejected_rows} credential rows skipped as invalid"
            if plan.rejected_rows
            else ""
        )
        if not plan.jobs:
            with self.conn.cursor() as cur:
                cur.execute(CREDENTIAL_STATUSES)
                statuses = ", ".join(f"{s} {n}" for s, n in cur.fetchall()) or "the table is empty"
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
                3,
            )
        self.token = token
        return _ok(name, f"HS256, scope {api_key_auth.SCOPE_READ}, lives {TOKEN_TTL_SECONDS}s")

    def check_health(self, name: str) -> Result:
        url = self.settings.api_url.rstrip("/") + "/health"
        started = time.monotonic()
        try:
            response = requests.get(
                url,
                timeout=min(HEALTH_TIMEOUT_SECONDS, self.settings.timeout),
                headers={"User-Agent": f"analytics-refresh/{__version__}"},
                verify=self.verify,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            return _fail(name, f"{url}: {network_reason(exc)}", unreachable_fix(self.settings), 1)
        elapsed = time.monotonic() - started
        body = json_object(response)
        database = body.get("database")
        if response.status_code == 404:
            self.health_ok = True
            return Result(
                name, "warn", f"{url}: HTTP 404, the API has no /health; the read below decides"
            )
        if response.status_code == 503 or (database is not None and database != "ok"):
            return _fail(
                name,
                f"{url}: HTTP {response.status_code}, the API is up but its database is "
                f"{database or 'down'}",
                "check the API's DATABASE_URL and that its PostgreSQL is running",
                1,
            )
        if not 200 <= response.status_code < 300:
            return _fail(
                name,
                f"{url}: HTTP {response.status_code} {self._error(response, body)}".rstrip(),
                "see the API's log; ANALYTICS_API_URL must be the API's base URL",
                1,
            )
        self.health_ok = True
        state = ", ".join(f"{k} {body[k]}" for k in ("status", "database") if k in body)
        return _ok(
            name,
            f"{url}: HTTP {response.status_code}{', ' + state if state else ''} "
            f"[{elapsed * 1000:.0f} ms]",
        )

    def check_endpoint(self, name: str) -> Result:
        if not self.jobs:
            return Result(name, "skip", "no connected client to read")
        if self.token is None or not self.health_ok:
            return Result(name, "skip", "needs a token and an API that answers /health")
        job = self.jobs[0]
        started = time.monotonic()
        try:
            response = requests.get(
                self.settings.endpoint_url,
                params={
                    "client_id": job.client_id,
                    "platform": job.platform,
                    "force_refresh": "false",
                },
                headers={
                    "Authorization": f"Bearer {self.token}",
                    "User-Agent": f"analytics-refresh/{__version__}",
                    "Accept": "application/json",
                },
                timeout=(HEALTH_TIMEOUT_SECONDS, self.settings.timeout),
                verify=self.verify,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            return _fail(
                name, f"read of {job}: {network_reason(exc)}", unreachable_fix(self.settings), 1
            )
        elapsed = time.monotonic() - started
        body = json_object(response)
        status = response.status_code
        what = f"read of {job}: HTTP {status}"
        if 200 <= status < 300:
            if not body:
                return _fail(
                    name,
                    f"{what}, but the answer is not a JSON object",
                    "ANALYTICS_API_URL and ANALYTICS_ENDPOINT must name the dashboard API "
                    f"(now {self.settings.endpoint_url}), not a proxy's or a web server's page",
                    1,
                )
            skus = body.get("sku_count", "?")
            source = "from its cache" if body.get("cached") else "computed"
            return _ok(name, f"{what}, {skus} SKUs, {source} [{elapsed:.2f}s]")
        error = self._error(response, body)
        fixes = {
            401: "give the API and the runner the same API_SECRET_KEY, and check both "
            "clocks (a token lives minutes)",
            403: "the API must accept a token whose sub is the client and whose scope is "
            "analytics:read (INTERFACE.md section 7)",
            404: f"check ANALYTICS_ENDPOINT (now {self.settings.endpoint}) and that the API "
            "reads the same database as the runner",
            503: "the API is shedding load or its database is down: see /health, retry later",
        }
        fix = fixes.get(
            status,
            "see the API's log; reproduce with curl and a token from "
            f"`analytics-refresh token {job.client_id} --scope read`",
        )
        return _fail(name, f"{what} {error}".rstrip(), fix, 1)

    # -- helpers ----------------------------------------------------------------------------
    @property
    def verify(self) -> str | bool:
        return str(self.settings.ca_bundle) if self.settings.ca_bundle else True

    def _error(self, response: requests.Response, body: dict) -> str:
        text = body.get("error") if isinstance(body.get("error"), str) else response.reason
        secrets = (*self.secrets, self.token or "")
        return redact(" ".join(str(text or "").split()), secrets)[:300]


def print_result(console: Console, result: Result, secrets: tuple[str, ...] = ()) -> None:
    mark, style = MARKS[result.state]
    line = Text(f"  {mark} ", style=style)
    line.append(result.name, style="bold")
    line.append(f": {redact(result.detail, secrets)}")
    console.print(line, soft_wrap=True)
    if result.fix and result.state in ("fail", "warn"):
        console.print(Text(f"      fix: {result.fix}", style=style), soft_wrap=True)


def json_object(response: requests.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


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
        f"start the dashboard API (`analytics-refresh serve`, or gunicorn "
        f"'dashboard_api:create_app()') or correct ANALYTICS_API_URL (now {settings.api_url}); "
        "for HTTPS with a private CA set REFRESH_CA_BUNDLE"
    )


def writable(path: Path) -> bool:
    """Return whether ``path`` could be written, without creating anything."""
    if path.exists():
        return path.is_file() and os.access(path, os.W_OK)
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    return parent.is_dir() and os.access(parent, os.W_OK)


def report_invalid_settings(exc: ConfigError, console: Console | None = None) -> int:
    """Print the checklist's settings line for settings that could not be read; return 3."""
    console = console or output_console()
    text = _message(exc).replace("invalid configuration:\n", "").replace("\n", ";")
    print_result(
        console,
        _fail(
            "Settings valid",
            " ".join(text.split()),
            exc.hint
            or "correct the variables named, in the environment or .env "
            "(.env.example lists them all)",
            exc.exit_code,
        ),
    )
    console.print(f"✗ settings invalid; exit {exc.exit_code}", style="red", soft_wrap=True)
    return exc.exit_code


def run_checks(settings: Settings, clients: tuple[str, ...] = ()) -> int:
    """Print the preflight checklist and return its exit code."""
    if clients:
        settings = settings.replace(clients=tuple(clients))
    return Preflight(settings).run()
