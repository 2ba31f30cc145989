"""`analytics-refresh demo --listen`: new orders for one client, its dashboards refreshed."""

from __future__ import annotations

import psycopg2.extensions

from analytics_refresh.cli import main


def test_demo_listener_refreshes_the_client_with_new_orders_and_no_other(
    db_url, db, tmp_path, capsys
):
    env = {"DATABASE_URL": db_url, "LOG_DIR": str(tmp_path / "logs"), "REFRESH_SETTLE_SECONDS": "1"}
    # The demo writes into DATABASE_URL's database only when told its name.
    name = psycopg2.extensions.parse_dsn(db_url)["dbname"]
    args = ["demo", "--clients", "3", "--skus", "20", "--orders-per-day", "10", "--listen"]
    args += ["--database", name]
    assert main(args, env) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "Dashboards the listener refreshed after the new orders" in out
    assert "0 other clients' touched" in out
    with db.cursor() as cur:
        cur.execute(
            "SELECT DISTINCT j.client_id::text FROM refresh_jobs j JOIN refresh_runs r"
            " USING (run_id) WHERE r.trigger = 'listen' AND j.status = 'succeeded'"
        )
        assert len(cur.fetchall()) == 1
