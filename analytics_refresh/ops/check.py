"""``analytics-refresh check``: the preflight checklist, one line per check.

Each check gives a ``Result``: a mark (✓ pass, ⚠ warning, ✗ failure, - skipped because an
earlier check failed) and, on a failure, the fix; ``console.print_check`` renders it. The
exit code is the one a run would end with for the first failure: 3 for settings and tokens,
4 for the database and its tables, 1 when the API does not answer or refuses the read
(every job of a run would fail). No connected client is a warning and exits 0, as a run
does. The API's two checks are api_check.py's; the lines and their exit codes are
checklist.py's.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import api_key_auth
from analytics_refresh.config.settings import Settings
from analytics_refresh.config.urls import display_url
from analytics_refresh.errors import ConfigError, DatabaseError, RefreshError
from analytics_refresh.logs import redact
from analytics_refresh.ops import api_check
from analytics_refresh.ops.change_check import change_query_result
from analytics_refresh.ops.checklist import (
    DATABASE_FAILED,
    SETTINGS_FAILED,
    Result,
    fail,
    ok,
)
from analytics_refresh.store import db, records
from analytics_refresh.store.plan import Job, build_plan, stream_connected

TOKEN_TTL_SECONDS = 300
NO_CLIENT = str(uuid.UUID(int=0))
ENDPOINT = "Endpoint accepts a token"
CHANGE_QUERY = "Change query runs"


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
                    result = fail(name, exc.message, fix, DATABASE_FAILED)
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
            return fail(name, exc.message, exc.hint or "", exc.exit_code)
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
        return ok(name, detail)

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
        return ok(name, ", ".join(str(p) for p in paths))

    def check_database(self, name: str) -> Result:
        try:
            why = db.source(self.settings)
            url = db.database_url(self.settings)
            self.conn = db.connect(url, application_name="analytics-refresh check")
            with db.boundary(url), self.conn.cursor() as cur:
                cur.execute(db.sql.SERVER_VERSION)
                version = cur.fetchone()[0]
        except RefreshError as exc:
            return fail(name, exc.message, exc.hint or "check DATABASE_URL", exc.exit_code)
        return ok(name, f"{db.describe(url)} ({why}), PostgreSQL {version}")

    def check_tables(self, name: str) -> Result:
        if self.conn is None:
            return Result(name, "skip", "no database connection")
        missing = db.missing_tables(self.conn)
        if missing:
            return fail(
                name,
                f"missing: {', '.join(missing)}",
                "run `analytics-refresh db init` once against this database",
                DATABASE_FAILED,
            )
        _, runs = records.recent_runs(self.conn, 1)
        tables = ", ".join(db.RUNNER_TABLES)
        if not runs:
            return ok(name, f"{tables}; no run recorded yet")
        last = runs[0]
        when = last["started_at"].astimezone().strftime("%Y-%m-%d %H:%M:%S")
        ended = "" if last["exit_code"] is None else f", exit {last['exit_code']}"
        return ok(name, f"{tables}; last run {when} ({last['trigger']}): {last['status']}{ended}")

    def check_clients(self, name: str) -> Result:
        if self.conn is None:
            return Result(name, "skip", "no database connection")
        try:
            db.require_credentials_table(self.conn)
        except DatabaseError as exc:
            return fail(name, exc.message, exc.hint or "", exc.exit_code)
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
        return ok(name, f"{plan.client_count} clients, {len(plan.jobs)} jobs ({spread}){skipped}")

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
            return fail(
                name,
                redact(str(exc), self.secrets),
                "set API_SECRET_KEY to the API's secret, at least 32 characters",
                SETTINGS_FAILED,
            )
        self.token = token
        return ok(name, f"HS256, scope {api_key_auth.SCOPE_READ}, lives {TOKEN_TTL_SECONDS}s")

    def check_health(self, name: str) -> Result:
        result = api_check.check_health(self.settings, name)
        self.health_ok = result.state in ("ok", "warn")
        return result

    def check_endpoint(self, name: str) -> Result:
        if not self.jobs:
            return Result(name, "skip", "no connected client to read")
        if self.token is None or not self.health_ok:
            return Result(name, "skip", "needs a token and an API that answers /health")
        return api_check.check_endpoint(self.settings, name, self.jobs[0], self.token)


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
    return fail("Settings valid", " ".join(text.split()), fix, exc.exit_code)


def run_checks(settings: Settings) -> int:
    """Print the preflight checklist and return its exit code."""
    from analytics_refresh.ui.console import output_console, print_check, print_check_summary

    console = output_console()
    preflight = Preflight(settings, lambda r: print_check(console, r, settings.secrets))
    code = preflight.run()
    print_check_summary(console, preflight.results, code)
    return code
