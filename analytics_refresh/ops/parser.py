"""The ``analytics-refresh`` command line's parser: every command, its options and their help.

cli.py runs what it parses. The run options are options.py's, shared with the cron script
and the manual run, and each option with an environment twin is parsed by that variable's
own parser, so a flag and its variable accept and refuse the same values.
"""

from __future__ import annotations

import argparse

import api_key_auth
from analytics_refresh import __version__
from analytics_refresh.config.settings import PLATFORMS, flag_type, number
from analytics_refresh.model import promise
from analytics_refresh.ops.options import (
    Parser,
    add_run_options,
    add_sample_options,
    client_id,
    int_between,
    platforms,
)


def _positive_float(text: str) -> float:
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
        type=int_between(1, 10_000),
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
        type=int_between(1, 10**9),
        metavar="N",
        help="list at most N keys (implies --keys)",
    )

    token = commands.add_parser("token", help="print a client token, for curl")
    token.add_argument("client_id", type=client_id, metavar="CLIENT_ID")
    token.add_argument(
        "--ttl",
        type=int_between(1, api_key_auth.MAX_TTL_SECONDS),
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
    serve.add_argument("--port", type=int_between(0, 65535), default=5000)

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
        type=int_between(1, 366),
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
        type=int_between(1, 100_000),
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
