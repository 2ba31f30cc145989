"""The ``analytics-refresh`` command line; ``main(argv)`` returns the exit code.

Exceptions become exit codes here and nowhere else (INTERFACE.md section 4).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import psycopg2

import api_key_auth

from . import __version__
from .errors import ConfigError, DatabaseError, RefreshError, first_line
from .logs import get_logger, redact, setup_logging
from .settings import PLATFORMS, TRIGGERS, Settings, Shard, database_password

log = get_logger()


# -- argument types (a bad value is a usage error: exit 2) ---------------------------------
def _uuid(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a UUID") from None


def _int_between(low: int, high: int):
    """Return an argparse type accepting whole numbers from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"expected a whole number from {low} to {high}, got {text!r}"
            )
        return value

    return parse


_positive_int = _int_between(1, 10**9)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def _shard(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting, so main() returns the code."""

    def exit(self, status=0, message=None):
        if message:
            sys.stderr.write(message)
        raise SystemExit(status)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Add the run options; each names its environment twin."""
    group = parser.add_argument_group("run options (each overrides its environment variable)")
    group.add_argument(
        "--client",
        action="append",
        type=_uuid,
        metavar="UUID",
        help="refresh only this client (repeatable)",
    )
    group.add_argument(
        "--platform",
        action="append",
        choices=PLATFORMS,
        help="refresh only this platform (repeatable) [env REFRESH_PLATFORMS]",
    )
    group.add_argument("--dry-run", action="store_true", help="plan and log the jobs, call nothing")
    group.add_argument(
        "--concurrency",
        type=_int_between(1, 1024),
        metavar="N",
        help="most requests in flight [env REFRESH_CONCURRENCY, default 4]",
    )
    group.add_argument(
        "--deadline",
        type=_positive_float,
        metavar="SECONDS",
        help="no job starts after this [env REFRESH_DEADLINE, default 6600]",
    )
    group.add_argument(
        "--shard",
        type=_shard,
        metavar="INDEX/COUNT",
        help="take only this shard of the clients [env REFRESH_SHARD]",
    )
    group.add_argument(
        "--trigger", choices=TRIGGERS, default=None, help="recorded with the run (default: cron)"
    )
    verbosity = group.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-v", "--verbose", action="store_true", help="log debug detail [env LOG_LEVEL=DEBUG]"
    )
    verbosity.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="log warnings and errors only [env LOG_LEVEL=WARNING]",
    )


def apply_run_options(settings: Settings, args: argparse.Namespace) -> Settings:
    """Return ``settings`` with the command line's run options on top."""
    changes: dict = {}
    if args.client:
        changes["clients"] = tuple(dict.fromkeys(args.client))
    if args.platform:
        changes["platforms"] = tuple(p for p in PLATFORMS if p in args.platform)
    if args.dry_run:
        changes["dry_run"] = True
    if args.concurrency:
        changes["concurrency"] = args.concurrency
    if args.deadline:
        changes["deadline"] = args.deadline
    if args.shard:
        changes["shard"] = args.shard
    if args.trigger:
        changes["trigger"] = args.trigger
    if args.verbose:
        changes["log_level"] = "DEBUG"
    elif args.quiet:
        changes["log_level"] = "WARNING"
    return settings.replace(**changes)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="analytics-refresh",
        description="Keep every client's dashboard cache fresh. Settings come from the "
        "environment and a .env file in the working directory (see .env.example).",
        epilog="exit codes: 0 ok, 1 jobs failed, 2 usage, 3 configuration, 4 database, "
        "5 another run holds the lock, 6 interrupted or deadline reached",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    run = commands.add_parser("run", help="one refresh run (what the scheduler starts)")
    add_run_options(run)

    check = commands.add_parser("check", help="preflight checklist, one line per check")
    check.add_argument(
        "--client",
        action="append",
        type=_uuid,
        metavar="UUID",
        help="check with this client instead of the first connected one",
    )
    check.add_argument(
        "--platform",
        action="append",
        choices=PLATFORMS,
        help="plan and read only this platform (repeatable) [env REFRESH_PLATFORMS]",
    )

    status = commands.add_parser("status", help="recent runs and the age of every cache")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--max-age",
        type=_positive_float,
        default=2.5,
        metavar="HOURS",
        help="older than this counts as stale (default 2.5)",
    )
    status.add_argument(
        "--runs",
        type=_positive_int,
        default=10,
        metavar="N",
        help="how many recent runs to show (default 10)",
    )

    token = commands.add_parser("token", help="print a client token, for curl")
    token.add_argument("client_id", type=_uuid, metavar="CLIENT_ID")
    token.add_argument(
        "--ttl",
        type=_int_between(1, api_key_auth.MAX_TTL_SECONDS),
        default=300,
        metavar="S",
        help="lifetime in seconds, at most 900 (default 300)",
    )
    token.add_argument("--scope", choices=("refresh", "read"), default="refresh")

    db_cmd = commands.add_parser("db", help="database tables")
    db_actions = db_cmd.add_subparsers(
        dest="db_command", required=True, metavar="ACTION", parser_class=_Parser
    )
    init = db_actions.add_parser("init", help="create or upgrade the runner's tables")
    init.add_argument(
        "--with-api-schema",
        action="store_true",
        help="also create the reference dashboard API's tables",
    )

    serve = commands.add_parser("serve", help="the reference dashboard API (development)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=5000)

    demo = commands.add_parser("demo", help="the whole system on this machine, then one run")
    demo.add_argument("--clients", type=_positive_int, default=4)
    demo.add_argument("--skus", type=_positive_int, default=200)
    demo.add_argument("--orders-per-day", type=_positive_int, default=60)
    return parser


# -- commands ------------------------------------------------------------------------------
def cmd_run(args, settings: Settings) -> int:
    from .monitoring import run_monitored
    from .runner import StopRequest

    settings = apply_run_options(settings, args)
    setup_logging(settings)
    stop = StopRequest()
    with handle_signals(stop):
        result = run_monitored(settings, stop=stop)
    return result.exit_code


def cmd_token(args, settings: Settings) -> int:

    scope = api_key_auth.SCOPE_READ if args.scope == "read" else api_key_auth.SCOPE_REFRESH
    try:
        token = api_key_auth.mint_client_token(
            args.client_id, settings.require_secret(), scope=scope, ttl_seconds=args.ttl
        )
    except ValueError as exc:
        raise RefreshError(str(exc)) from exc
    print(token)
    return 0


def cmd_db(args, settings: Settings) -> int:
    from . import db

    setup_logging(settings)
    url = db.database_url(settings)
    with db.connection(url) as conn:
        db.init_schema(conn)
        print(f"Runner tables ready (refresh_runs, refresh_jobs) in {db.describe(url)}")
        if args.with_api_schema:
            from dashboard_api.db import init_schema as init_api_schema

            init_api_schema(conn)
            print("Reference API tables ready")
    return 0


def cmd_serve(args, settings: Settings) -> int:
    from . import db

    setup_logging(settings)
    secret = settings.require_secret()
    url = db.database_url(settings)
    from dashboard_api import create_app
    from dashboard_api.config import from_environ
    from dashboard_api.server import serve

    # The API reads its own settings (CACHE_TTL, API_MAX_CONCURRENT_COMPUTES) as under
    # gunicorn; only the database and the secret come from the runner's resolution.
    app = create_app({**from_environ(), "DATABASE_URL": url, "API_SECRET_KEY": secret})
    print(
        f"Serving the reference dashboard API on http://{args.host}:{args.port} "
        "(development server; use gunicorn in production)"
    )
    serve(app, host=args.host, port=args.port)
    return 0


def cmd_check(args, settings: Settings) -> int:
    from .check import run_checks

    if args.platform:
        settings = settings.replace(platforms=tuple(p for p in PLATFORMS if p in args.platform))
    return run_checks(settings, clients=tuple(args.client or ()))


def cmd_status(args, settings: Settings) -> int:
    from .status import show_status

    return show_status(settings, as_json=args.json, max_age_hours=args.max_age, runs=args.runs)


def cmd_demo(args, settings: Settings) -> int:
    from .demo import run_demo

    return run_demo(
        settings, clients=args.clients, skus=args.skus, orders_per_day=args.orders_per_day
    )


COMMANDS = {
    "run": cmd_run,
    "token": cmd_token,
    "db": cmd_db,
    "serve": cmd_serve,
    "check": cmd_check,
    "status": cmd_status,
    "demo": cmd_demo,
}


@contextlib.contextmanager
def handle_signals(stop):
    """Turn SIGTERM/SIGINT (SIGBREAK on Windows) into a clean stop; a second one exits now."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    names = [n for n in ("SIGTERM", "SIGINT", "SIGBREAK") if hasattr(signal, n)]

    def on_signal(signum, _frame):
        name = signal.Signals(signum).name
        if stop.is_set() and (stop.reason or "").startswith("received "):
            log.error("Received %s again: exiting now; the next run marks this one abandoned", name)
            logging.shutdown()
            os._exit(6)
        log.warning("Received %s: no new job starts; jobs in flight finish", name)
        stop.request(f"received {name}")

    previous = {n: signal.signal(getattr(signal, n), on_signal) for n in names}
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command and return its exit code (INTERFACE.md section 4)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (2)
        return int(exc.code or 0)
    environ = prepare_process(environ)
    try:
        try:
            settings = Settings.from_env(environ)
        except ConfigError as exc:
            if args.command != "check":
                raise
            from .check import report_invalid_settings

            # The checklist shows bad settings as its first failed line, with the fix.
            return report_invalid_settings(exc)
        return COMMANDS[args.command](args, settings)
    except RefreshError as exc:
        _report(exc, environ)
        return exc.exit_code
    except psycopg2.Error as exc:
        # A database error no module expected (a dropped table, a revoked grant) is still
        # the database's problem: exit 4 with the driver's words, not a traceback.
        error = DatabaseError(
            f"database error: {first_line(exc)}",
            hint="check the database; `analytics-refresh db init` repairs the runner's tables",
        )
        _report(error, environ)
        return error.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 6


def prepare_process(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    """Make the console safe to print to and return the environment to read settings from.

    With no ``environ`` given, ``.env`` in the working directory is loaded first; the real
    environment wins over it, so a scheduler's settings are never undone.
    """
    for stream in (sys.stdout, sys.stderr):
        # A redirected console on Windows is cp1252: print ✓ and emoji as escapes there
        # rather than crash a status check or lose a log line.
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if encoding != "utf8" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    if environ is not None:
        return environ
    from dotenv import load_dotenv

    load_dotenv(Path.cwd() / ".env", override=False)
    return os.environ


def raw_secrets(environ: Mapping[str, str]) -> tuple[str, ...]:
    """Return the secrets to mask, read from the raw environment (settings may be invalid)."""
    found = (environ.get("API_SECRET_KEY", ""), database_password(environ.get("DATABASE_URL")))
    return tuple(s for s in found if s)


def _report(exc: RefreshError, environ: Mapping[str, str]) -> None:
    """Say what went wrong on stderr and, when logging is set up, in the log."""
    message = redact(str(exc), raw_secrets(environ))
    name = type(exc).__name__
    if log.handlers:
        log.error("❌ %s (exit %d): %s", name, exc.exit_code, message)
    if not any(getattr(h, "stream", None) is sys.stderr for h in log.handlers):
        sys.stderr.write(f"analytics-refresh: {message}\n")


def main_entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
