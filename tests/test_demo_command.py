"""`analytics-refresh demo`: the whole system in one command, change-aware on its second run."""

from __future__ import annotations

import psycopg2.extensions

from analytics_refresh.cli import main
from tests.conftest import log_lines


def dbname(url: str) -> str:
    return psycopg2.extensions.parse_dsn(url)["dbname"]


def results(env) -> list[str]:
    return [line for line in log_lines(env) if line.startswith("Results:")]


def test_demo_runs_end_to_end_and_its_second_run_refreshes_only_what_changed(
    db_url, db, tmp_path, capsys
):
    env = {"DATABASE_URL": db_url, "LOG_DIR": str(tmp_path / "logs")}  # no secret: demo makes one
    args = ["demo", "--clients", "3", "--skus", "20", "--orders-per-day", "10"]
    args += ["--database", dbname(db_url)]
    assert main(args, env) == 0
    out = capsys.readouterr().out
    assert "Reference dashboard API on http://127.0.0.1:" in out
    assert "Cache rows written by this run" in out
    assert "total_sales" in out
    report = tmp_path / "logs" / "freshness-report.html"
    assert f"Freshness report: {report}" in out
    assert 'id="legend"' in report.read_text(encoding="utf-8")
    first, second = results(env)
    jobs = int(first.split()[1])
    assert jobs >= 6
    assert first.startswith(f"Results: {jobs} successful, 0 failed out of {jobs} total jobs")
    # Nothing changed between the two runs: every key is skipped as unchanged.
    assert second.startswith(
        f"Results: 0 successful, 0 failed out of {jobs} total jobs ({jobs} skipped as unchanged"
    )
    # Counted, not listed: a line per skipped key only at -v.
    assert not [line for line in log_lines(env) if "⏭ SKIPPED" in line]
    assert any(
        line.startswith("Change detection: 0 changed") and line.endswith(f"{jobs} unchanged")
        for line in log_lines(env)
    )

    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM order_lines")
        (order_lines,) = cur.fetchone()
        cur.execute("SELECT DISTINCT trigger, status, exit_code FROM refresh_runs")
        assert cur.fetchall() == [("demo", "succeeded", 0)]

    # The API computes as many at once as the run sends: no 503 to retry on a small machine.
    assert not any("after HTTP 503" in line for line in log_lines(env))

    # New orders for one client: the next run refreshes that client's keys, and only those.
    assert main([*args, "--new-orders", "2"], env) == 0
    again_out = capsys.readouterr().out
    # Its first run wrote nothing, and says why instead of an empty table.
    assert "Cache rows written by this run" not in again_out
    assert "No cache rows written: all" in again_out
    assert "2 new orders on " in " ".join(again_out.split())  # per platform, as added
    *_, again, after_orders = results(env)
    assert again.startswith("Results: 0 successful")
    assert f"{jobs} skipped as unchanged" in again
    assert after_orders.startswith("Results: ")
    lines = log_lines(env)
    last_run = max(i for i, line in enumerate(lines) if line.startswith("Starting analytics"))
    refreshed = [line for line in lines[last_run:] if "✅ SUCCESS" in line]
    refreshed_clients = {line.split()[3] for line in refreshed}
    assert len(refreshed_clients) == 1  # the client with new orders, and no other
    (client,) = refreshed_clients
    with db.cursor() as cur:  # its every key
        cur.execute("SELECT count(*) FROM refresh_state WHERE client_id = %s", (client,))
        assert len(refreshed) == cur.fetchone()[0]
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM order_lines")
        assert cur.fetchone()[0] > order_lines  # the new orders, on the reused data
    assert "analytics-refresh db stop" not in again_out  # not the embedded database
