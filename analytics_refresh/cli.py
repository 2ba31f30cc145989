"""The ``analytics-refresh`` command line; ``main(argv)`` returns the exit code.

Every command goes through ``process.run_command``, the one place where exceptions become
exit codes (README.md, "Exit codes").
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

import api_key_auth
from analytics_refresh.config.settings import PLATFORMS, Settings
from analytics_refresh.errors import ConfigError
from analytics_refresh.ops.options import apply_run_options
from analytics_refresh.ops.parser import build_parser
from analytics_refresh.ops.process import Command, handle_signals, run_command


# -- commands ------------------------------------------------------------------------------
def cmd_run(args, settings: Settings, proc) -> int:
    from analytics_refresh.run.runner import execute_run

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
    from analytics_refresh.store import db

    if args.db_command == "stop":
        print(db.stop_embedded(settings.data_dir))
        return 0
    url = db.database_url(settings)
    with db.connection(url) as conn:
        if args.db_command == "prune":
            from analytics_refresh.store.prune import prune

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
            from analytics_refresh.ops.demo import seed

            print(seed(conn, args))
        elif args.with_api_schema:
            from dashboard_api.db import init_schema as init_api_schema

            init_api_schema(conn)
            print("Reference API tables ready")
    return 0


def cmd_serve(args, settings: Settings, proc) -> int:
    from analytics_refresh.store import db

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
    from analytics_refresh.ops.check import run_checks

    return run_checks(settings)


def cmd_status(args, settings: Settings, proc) -> int:
    from analytics_refresh.ops.status import KeyList, show_status

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
    from analytics_refresh.ops.demo import run_demo

    with handle_signals(proc.stop):
        return run_demo(settings, args, proc)


def _explain_settings(exc: ConfigError) -> None:
    """Show settings that could not be read as the checklist's first, failed line."""
    from analytics_refresh.ops.check import invalid_settings
    from analytics_refresh.ui.console import output_console, print_check

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
