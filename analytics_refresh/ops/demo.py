"""``analytics-refresh demo``: the whole system on this machine, then two real runs.

The embedded PostgreSQL, deterministic demo clients and 90 days of sales, the reference API
on a free loopback port, and refresh runs through the same ``execute_run`` that cron
starts. It reuses what an earlier demo built.

The demo writes clients and sales into its database, and a real runner would take those
clients for its own: so it writes only into the embedded database, which it creates, even
when ``DATABASE_URL`` is set, unless ``--database NAME`` names the database
``DATABASE_URL`` points at (a confirmation typed by a person, not a default). Its runs
never ping the configured heartbeat nor write the configured metrics: they are not the
deployment's runs.
"""

from __future__ import annotations

import secrets
import time

import psycopg2.extensions
import requests
from rich.console import Console
from rich.table import Table

import api_key_auth
from analytics_refresh.config.settings import Settings
from analytics_refresh.errors import ConfigError
from analytics_refresh.logs import setup_logging
from analytics_refresh.run.runner import execute_run
from analytics_refresh.store import db
from analytics_refresh.store import statements as sql


def run_demo(settings: Settings, args, proc) -> int:
    """Build (or reuse) the demo system, refresh it twice, and return the last run's code.

    The second run is change-aware (the reference schema's change query): it skips every
    key whose data did not change, and with ``--new-orders`` refreshes that client only.
    """
    # Only the demo reaches into the reference API, and only here, so a user with their
    # own backend can delete dashboard_api/ and keep everything else.
    from dashboard_api import create_app
    from dashboard_api.changes import CHANGE_SQL
    from dashboard_api.config import from_environ
    from dashboard_api.db import init_schema as init_api_schema
    from dashboard_api.demo import add_orders, load_demo
    from dashboard_api.server import start_background

    console = Console(highlight=False)
    secret = settings.secret_key or secrets.token_urlsafe(48)
    url = demo_database(settings, args.database, console)
    where = (
        f"{db.describe(url)}, named by --database"
        if args.database
        else f"the embedded PostgreSQL under {settings.data_dir / 'postgres'}, which the "
        "demo creates"
    )
    console.print(f"[bold]1/5[/] Database: {where}", soft_wrap=True)
    with db.connection(url) as conn:
        db.init_schema(conn)
        init_api_schema(conn)
        started = time.monotonic()
        client_ids = load_demo(
            conn, clients=args.clients, skus=args.skus, orders_per_day=args.orders_per_day
        )
        console.print(
            f"[bold]2/5[/] Demo data: {len(client_ids)} connected clients "
            f"({time.monotonic() - started:.1f}s)"
        )

    api_config = {**from_environ(proc.environ), "DATABASE_URL": url, "API_SECRET_KEY": secret}
    # As many computations at once as the run sends, unless the user chose a number: on a
    # small machine the API would otherwise shed the first run's requests with 503s.
    api_config.setdefault("API_MAX_CONCURRENT_COMPUTES", str(settings.concurrency))
    app = create_app(api_config)
    server = start_background(app, host="127.0.0.1", port=0)
    try:
        console.print(f"[bold]3/5[/] Reference dashboard API on {server.url}")
        run_settings = settings.replace(
            api_url=server.url,
            secret_key=secret,
            database_url=url,
            trigger="demo",
            change_sql=settings.change_sql or CHANGE_SQL,
        )
        setup_logging(run_settings, interactive=True)
        proc.settings = run_settings
        console.print("[bold]4/5[/] A refresh run, as cron would start it:")
        result = _run(proc, run_settings)
        if any(record.status == "succeeded" for record in result.records):
            _show_cache(console, url, result)
            _show_dashboard(console, server.url, secret, result)
        elif result.changes["unchanged"]:
            console.print(
                f"No cache rows written: all {result.changes['unchanged']} keys are unchanged "
                "since an earlier demo refreshed them (add --new-orders N to change one client)"
            )
        if proc.stop.is_set() or result.exit_code:
            return result.exit_code
        what = "nothing changed since"
        if args.new_orders:
            with db.connection(url) as conn:
                added = add_orders(conn, client_ids[0], args.new_orders)
            each = " and ".join(added.platforms)
            what = f"{args.new_orders} new orders on {each} for {client_ids[0]} since"
        console.print(
            f"[bold]5/5[/] A second run, {what} the first: only changed data is refreshed"
        )
        result = _run(proc, run_settings)
        if getattr(args, "listen", False) and not result.exit_code and not proc.stop.is_set():
            from analytics_refresh.ops.demo_listen import show_listener

            code = show_listener(console, run_settings, client_ids, add_orders, proc.stop)
            if code:
                return code
    finally:
        server.stop()
    console.print(f"Log: {run_settings.log_file}   exit code: {result.exit_code}")
    from analytics_refresh.report.command import write_report

    report = write_report(run_settings, run_settings.log_dir / "freshness-report.html")
    console.print(f"Freshness report: {report}", soft_wrap=True)
    if args.database is None:
        console.print(
            "The embedded PostgreSQL keeps running for the next demo and run; stop it with "
            "`analytics-refresh db stop`."
        )
    return result.exit_code


def demo_database(settings: Settings, confirmed: str | None, console: Console) -> str:
    """Return the URL the demo may write into: the embedded database it creates, or
    DATABASE_URL's when ``confirmed`` is that database's name."""
    if confirmed is None:
        if settings.database_url:
            console.print(
                f"DATABASE_URL is set ({db.describe(settings.database_url)}), but the demo "
                "writes only into a database it creates: the embedded one. To load the demo "
                "into that database, add --database with its name.",
                soft_wrap=True,
            )
        return db.embedded_url(settings.data_dir)
    if not settings.database_url:
        raise ConfigError(
            f"--database {confirmed}: DATABASE_URL is not set",
            hint="set DATABASE_URL to the database to load the demo into, or leave out "
            "--database to use the embedded one",
        )
    name = psycopg2.extensions.parse_dsn(settings.database_url).get("dbname")
    if confirmed != name:
        raise ConfigError(
            f"--database {confirmed} does not match the database DATABASE_URL names "
            f"({db.describe(settings.database_url)}): the demo writes only into the "
            "database named on its command line",
            hint=f"pass --database {name} to load the demo clients and sales into it",
        )
    return settings.database_url


def _run(proc, settings: Settings):
    proc.result = execute_run(
        settings, deadline=proc.deadline(settings), stop=proc.stop, hooks=proc.hooks()
    )
    return proc.result


def _show_cache(console: Console, url: str, result) -> None:
    """Count the cache rows each client's table got from this run."""
    from psycopg2.sql import SQL, Identifier

    table = Table(title="Cache rows written by this run")
    table.add_column("client")
    table.add_column("jobs", justify="right")
    table.add_column("fresh cache rows", justify="right")
    by_client: dict[str, int] = {}
    for record in result.records:
        if record.status == "succeeded":
            by_client[record.job.client_id] = by_client.get(record.job.client_id, 0) + 1
    with db.connection(url) as conn, conn.cursor() as cur:
        for client_id, jobs in sorted(by_client.items()):
            name = Identifier(f"{client_id}_cached_responses")
            cur.execute(SQL(sql.COUNT_FRESH_CACHE_ROWS).format(table=name), (result.started_at,))
            table.add_row(client_id, str(jobs), str(cur.fetchone()[0]))
    console.print(table)


def _show_dashboard(console: Console, api_url: str, secret: str, result) -> None:
    """Read one refreshed dashboard back (a cached read) and show its headline numbers."""
    done = [r for r in result.records if r.status == "succeeded"]
    record = next((r for r in done if r.job.platform == "all"), done[0] if done else None)
    if record is None:
        return
    job = record.job
    token = api_key_auth.mint_client_token(
        job.client_id, secret, scope=api_key_auth.SCOPE_READ, ttl_seconds=60
    )
    started = time.monotonic()
    response = requests.get(
        f"{api_url}/api/dashboard/inventory-analytics",
        params={"client_id": job.client_id, "platform": job.platform, "force_refresh": "false"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    elapsed_ms = (time.monotonic() - started) * 1000
    if response.status_code != 200:
        console.print(f"Reading {job} back answered HTTP {response.status_code}")
        return
    body = response.json()
    kpis = body.get("kpis", {})
    table = Table(title=f"Dashboard {job} (cached: {body.get('cached')}, {elapsed_ms:.0f} ms)")
    table.add_column("KPI")
    table.add_column("value", justify="right")
    for name, value in kpis.items():
        table.add_row(name, _show(value))
    table.add_row("SKUs", str(body.get("sku_count")))
    console.print(table)


def _show(value) -> str:
    """Format a KPI for the table: thousands separators, nested counts on one line."""
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, dict):
        return ", ".join(f"{key} {_show(count)}" for key, count in value.items())
    return str(value)


def seed(conn, args) -> str:
    """Create the reference API's tables and load the sample clients and sales; say what."""
    from dashboard_api.db import init_schema as init_api_schema
    from dashboard_api.demo import load_demo

    init_api_schema(conn)
    started = time.monotonic()
    client_ids = load_demo(
        conn, clients=args.clients, skus=args.skus, orders_per_day=args.orders_per_day
    )
    with conn.cursor() as cur:
        cur.execute(sql.COUNT_CLIENT_ORDER_LINES, (client_ids,))
        lines = cur.fetchone()[0]
    return (
        f"Reference API tables ready, with {len(client_ids)} connected sample clients and "
        f"{lines:,} order lines ({time.monotonic() - started:.1f}s): {', '.join(client_ids)}"
    )
