"""The demo's listener step: a listener starts, one client gets new orders, and that
client's dashboards are refreshed within seconds, and no other client's."""

from __future__ import annotations

import threading
import time

from rich.console import Console
from rich.table import Table

from analytics_refresh.config.settings import Settings
from analytics_refresh.listen.worker import listen
from analytics_refresh.model.stop import StopRequest
from analytics_refresh.store import db

# Keys refreshed after a moment: (client, platform, seconds after the orders committed).
REFRESHED_SINCE = """
    SELECT client_id::text, platform, extract(epoch FROM last_success_at)::float8
    FROM refresh_state
    WHERE last_success_at > to_timestamp(%s)
    ORDER BY client_id, platform
"""
WAIT_SECONDS = 120.0


def show_listener(console: Console, settings: Settings, client_ids, add_orders, stop) -> int:
    """Run the step; return 0 when the client's keys were refreshed in time, else 1."""
    url = settings.database_url
    listening = StopRequest()
    thread = threading.Thread(target=listen, args=(settings, listening), name="demo-listener")
    thread.start()
    try:
        target = client_ids[-1]
        time.sleep(1.0)  # the listener LISTENs and reads the record first
        with db.connection(url) as conn:
            added = add_orders(conn, target, 3)
        committed = time.time()
        console.print(
            f"[bold]Listener:[/] {len(added.order_ids)} new orders for {target}; waiting for "
            f"its dashboards (settle {settings.settle_seconds:g}s)"
        )
        expected = None
        while not stop.is_set() and time.time() - committed < WAIT_SECONDS:
            with db.connection(url) as conn, conn.cursor() as cur:
                cur.execute(REFRESHED_SINCE, (committed,))
                rows = cur.fetchall()
                if expected is None:
                    cur.execute(
                        "SELECT count(DISTINCT platform) FROM client_api_credentials"
                        " WHERE client_id = %s AND status = 'connected'",
                        (target,),
                    )
                    platforms = cur.fetchone()[0]
                    wanted = {"shopify", "amazon", "all"} & set(settings.platforms)
                    expected = min(len(wanted), platforms + 1)
            mine = [r for r in rows if r[0] == target]
            if len(mine) >= expected:
                break
            time.sleep(0.2)
        time.sleep(1.0)  # any other key refreshed by mistake would show now
        with db.connection(url) as conn, conn.cursor() as cur:
            cur.execute(REFRESHED_SINCE, (committed,))
            rows = cur.fetchall()
    finally:
        listening.request("the demo is done")
        thread.join()
    table = Table(title="Dashboards the listener refreshed after the new orders")
    for name in ("client", "platform", "refreshed after"):
        table.add_column(name)
    for client_id, platform, at in rows:
        table.add_row(client_id, platform, f"{at - committed:.1f}s")
    console.print(table)
    others = {r[0] for r in rows} - {target}
    console.print(
        f"{len([r for r in rows if r[0] == target])} of {target}'s dashboards refreshed; "
        f"{len(others)} other clients' touched"
    )
    return 0 if rows and not others and expected and len(rows) >= expected else 1
