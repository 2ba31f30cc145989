"""The ``analytics-refresh`` command line; ``main(argv)`` returns the exit code.

Every command goes through ``process.run_command``, the one place where exceptions become
exit codes (README.md, "Exit codes").
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence

import api_key_auth

from . import __version__, promise
from .errors import ConfigError
from .options import (
    Parser,
    add_run_options,
    add_sample_options,
    apply_run_options,
    client_id,
    platforms,
)
from .options import int_between as _int_between
from .process import Command, handle_signals, run_command
from .settings import PLATFORMS, Settings, flag_type, number


def _positive_float(text: str) -> float:
    import argparse

    try:
        return number(float, 0.001)(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, got {text!r}") from None


def build_parser() -> Parser:
    parser = Parser(
        prog="analytics-refresh",
        description="Keep every client's dashboard cache fresh. Settings come from the "
        "environment and a .env file in the working directory (see .env.example).",
        epilog="exit codes: 0 ok, 1 jobs failed, 2 usage, 3 configuration, 4 database, "
        "5 another run holds the lock, 6 interrupted or deadline reached",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )

    run = commands.add_parser("run", help="one refresh run (what the scheduler starts)")
    add_run_options(run)

    check = commands.add_parser("check", help="preflight checklist, one line per check")
    check.add_argument(
        "--client",
        action="append",
        type=client_id,
        metavar="UUID",
        help="check with this client instead of the first connected one",
    )
    check.add_argument(
        "--platform",
        action="append",
        type=platforms,
        metavar="shopify|amazon|all",
        help="plan and read only this platform (repeatable) [env REFRESH_PLATFORMS]",
    )

    status = commands.add_parser(
        "status",
        help="recent runs and the age of every cache",
        epilog=promise.HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
        type=_int_between(1, 10_000),
        default=10,
        metavar="N",
        help="how many recent runs to show (default 10)",
    )
    status.add_argument(
        "--keys",
        action="store_true",
        help='list every client x platform, stalest first (streamed; --json: as "caches")',
    )
    status.add_argument(
        "--stale-only", action="store_true", help="list only the stale keys (implies --keys)"
    )
    status.add_argument(
        "--limit",
        type=_int_between(1, 10**9),
        metavar="N",
        help="list at most N keys (implies --keys)",
    )

    token = commands.add_parser("token", help="print a client token, for curl")
    token.add_argument("client_id", type=client_id, metavar="CLIENT_ID")
    token.add_argument(
        "--ttl",
        type=_int_between(1, api_key_auth.MAX_TTL_SECONDS),
        default=300,
        metavar="S",
        help="lifetime in seconds, at most 900 (default 300)",
    )
    token.add_argument("--scope", choices=("refresh", "read"), default="refresh")

    db_cmd = commands.add_parser("db", help="database tables, history, the embedded server")
    db_actions = db_cmd.add_subparsers(
        dest="db_command", required=True, metavar="ACTION", parser_class=Parser
    )
    init = db_actions.add_parser("init", help="create or upgrade the runner's tables")
    init.add_argument(
        "--with-api-schema",
        action="store_true",
        help="also create the reference dashboard API's tables",
    )
    prune = db_actions.add_parser("prune", help="delete finished runs older than N days")
    prune.add_argument(
        "--days",
        type=flag_type("REFRESH_HISTORY_DAYS"),
        metavar="N",
        help="keep this many days [env REFRESH_HISTORY_DAYS, default 30; 0 keeps all]",
    )
    db_actions.add_parser("stop", help="stop the embedded PostgreSQL under .data/postgres")
    seed = db_actions.add_parser(
        "seed",
        help="the reference API's tables with sample clients and sales, for a real API",
        description="Create the runner's and the reference API's tables in the database "
        "DATABASE_URL names and load the demo clients and 90 days of sales into it "
        "(idempotent; other clients' rows are never touched).",
    )
    add_sample_options(seed)

    serve = commands.add_parser("serve", help="the reference dashboard API (development)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_int_between(0, 65535), default=5000)

    commands.add_parser(
        "listen",
        help="refresh each key soon after its data changes, until SIGTERM/SIGINT",
        description="Refresh each client x platform soon after its data changes: woken by "
        "NOTIFY on analytics_refresh, reading the durable requests (refresh_requests) on "
        "start, after every reconnect and every REFRESH_POLL_SECONDS (60). A key is "
        "refreshed once quiet for REFRESH_SETTLE_SECONDS (5), at most "
        "REFRESH_MAX_DELAY_SECONDS (60) after its first change. Several listeners share the "
        "keys. SIGTERM or SIGINT: the requests in flight finish, then exit 0.",
    )
    request = commands.add_parser("request", help="ask the listeners to refresh a client now")
    request.add_argument("client_id", type=client_id, metavar="CLIENT_ID")
    request.add_argument(
        "--platform",
        choices=PLATFORMS,
        help="only this key (default: every platform of the client)",
    )
    report = commands.add_parser(
        "report", help="a freshness report: the promise kept, per day and per key (HTML)"
    )
    report.add_argument(
        "--days",
        type=_int_between(1, 366),
        default=7,
        metavar="N",
        help="whole UTC days to cover, today included (default 7)",
    )
    report.add_argument(
        "--out",
        metavar="FILE",
        help="where to write it (default freshness-report.html; with --json, stdout)",
    )
    report.add_argument("--json", action="store_true", help="the figures as JSON instead")

    demo = commands.add_parser(
        "demo",
        help="the whole system on this machine, then two runs",
        description="The embedded PostgreSQL, demo clients and sales, the reference API on "
        "loopback, then two real runs (the second change-aware). Writes only into the "
        "embedded database it creates, unless --database names DATABASE_URL's database.",
    )
    add_sample_options(demo)
    demo.add_argument(
        "--new-orders",
        type=_int_between(1, 100_000),
        metavar="N",
        help="before the second run, add N new orders on each connected platform of the "
        "first demo client: that run refreshes that client's keys and skips the rest",
    )
    demo.add_argument(
        "--database",
        metavar="NAME",
        help="load the demo into the database DATABASE_URL names instead of the embedded "
        "one; NAME must be that database's name (a confirmation: a real runner would "
        "refresh the demo clients too)",
    )
    demo.add_argument(
        "--listen",
        action="store_true",
        help="then start a listener, add orders for one client and show its dashboards "
        "refreshed within seconds, and no other client's",
    )
    return parser


# -- commands ------------------------------------------------------------------------------
def cmd_run(args, settings: Settings, proc) -> int:
    from .runner import execute_run

    with handle_signals(proc.stop):
        proc.result = execute_run(
            settings, deadline=proc.deadline(settings), stop=proc.stop, hooks=proc.hooks()
        )
    return proc.result.exit_code


def cmd_token(args, settings: Settings, proc) -> int:
    scope = api_key_auth.SCOPE_READ if args.scope == "read" else api_key_auth.SCOPE_REFRESH
    try:
        token = api_key_auth.mint_client_token(
            args.client_id, settings.require_secret(), scope=scope, ttl_seconds=args.ttl
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    print(token)
    return 0


def cmd_db(args, settings: Settings, proc) -> int:
    from . import db

    if args.db_command == "stop":
        print(db.stop_embedded(settings.data_dir))
        return 0
    url = db.database_url(settings)
    with db.connection(url) as conn:
        if args.db_command == "prune":
            from .prune import prune

            db.require_runner_tables(conn)
            days = settings.history_days if args.days is None else args.days
            if not days:
                print("REFRESH_HISTORY_DAYS is 0: the whole history is kept, nothing pruned")
                return 0
            print(f"Pruned {prune(conn, days)} ({days} days kept) in {db.describe(url)}")
            return 0
        db.init_schema(conn)
        print(
            f"Runner tables ready (refresh_runs, refresh_jobs, refresh_state) in {db.describe(url)}"
        )
        if args.db_command == "seed":
            from .demo import seed

            print(seed(conn, args))
        elif args.with_api_schema:
            from dashboard_api.db import init_schema as init_api_schema

            init_api_schema(conn)
            print("Reference API tables ready")
    return 0


def cmd_serve(args, settings: Settings, proc) -> int:
    from . import db

    secret = settings.require_secret()
    url = db.database_url(settings)
    from dashboard_api import create_app
    from dashboard_api.config import from_environ
    from dashboard_api.server import serve

    # The API reads its own settings (CACHE_TTL, API_MAX_CONCURRENT_COMPUTES) as under
    # gunicorn, from the same environment; the database and the secret come from here.
    app = create_app({**from_environ(proc.environ), "DATABASE_URL": url, "API_SECRET_KEY": secret})
    print(
        f"Serving the reference dashboard API on http://{args.host}:{args.port} "
        "(development server; use gunicorn in production)"
    )
    serve(app, host=args.host, port=args.port)
    return 0


def cmd_check(args, settings: Settings, proc) -> int:
    from .check import run_checks

    return run_checks(settings)


def cmd_status(args, settings: Settings, proc) -> int:
    from .status import KeyList, show_status

    keys = KeyList(
        wanted=args.keys or args.stale_only or args.limit is not None,
        stale_only=args.stale_only,
        limit=args.limit,
    )
    return show_status(
        settings, as_json=args.json, max_age_hours=args.max_age, runs=args.runs, keys=keys
    )


def cmd_listen(args, settings: Settings, proc) -> int:
    from .listen.worker import listen

    with handle_signals(proc.stop):
        return listen(settings, proc.stop)


def cmd_request(args, settings: Settings, proc) -> int:
    from .listen.request import request

    print(request(settings, args.client_id, args.platform))
    return 0


def cmd_report(args, settings: Settings, proc) -> int:
    from .report.command import run_report

    return run_report(settings, days=args.days, out=args.out, as_json=args.json)


def cmd_demo(args, settings: Settings, proc) -> int:
    from .demo import run_demo

    with handle_signals(proc.stop):
        return run_demo(settings, args, proc)


def _explain_settings(exc: ConfigError) -> None:
    """Show settings that could not be read as the checklist's first, failed line."""
    from .check import invalid_settings
    from .console import output_console, print_check

    console = output_console()
    print_check(console, invalid_settings(exc))
    console.print(f"✗ settings invalid; exit {exc.exit_code}", style="red", soft_wrap=True)


def _check_settings(settings: Settings, args) -> Settings:
    changes: dict = {}
    if args.client:
        changes["clients"] = tuple(dict.fromkeys(args.client))
    if args.platform:
        chosen = {p for group in args.platform for p in group}
        changes["platforms"] = tuple(p for p in PLATFORMS if p in chosen)
    return settings.replace(**changes)


COMMANDS = {
    "run": Command(cmd_run, run=True, logs=True, configure=apply_run_options),
    "token": Command(cmd_token),
    "db": Command(cmd_db, logs=True),
    "serve": Command(cmd_serve, logs=True),
    "check": Command(cmd_check, configure=_check_settings, explain=_explain_settings),
    "status": Command(cmd_status),
    "listen": Command(cmd_listen, logs=True),
    "request": Command(cmd_request),
    "report": Command(cmd_report),
    "demo": Command(cmd_demo, run=True, logs=True, configure=lambda s, _a: demo_settings(s)),
}


def demo_settings(settings: Settings) -> Settings:
    """The demo's runs are not the deployment's: no heartbeat ping, no metrics, no shard."""
    return settings.replace(
        trigger="demo", healthcheck_url=None, metrics_file=None, pushgateway_url=None, shard=None
    )


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command and return its exit code (README.md, "Exit codes")."""

    def parse():
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command], args

    return run_command(parse, environ)


def main_entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
