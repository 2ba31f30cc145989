"""`analytics-refresh demo`: the whole system in one command, twice."""

from __future__ import annotations

from analytics_refresh.cli import main
from tests.conftest import log_lines


def test_demo_runs_end_to_end_and_reuses_what_it_built(db_url, db, tmp_path, capsys):
    env = {"DATABASE_URL": db_url, "LOG_DIR": str(tmp_path / "logs")}  # no secret: demo makes one
    assert main(["demo", "--skus", "20", "--orders-per-day", "10"], env) == 0
    out = capsys.readouterr().out
    assert "Reference dashboard API on http://127.0.0.1:" in out
    assert "Cache rows written by this run" in out
    assert "total_sales" in out
    assert "Results: 7 successful, 0 failed out of 7 total jobs" in "\n".join(log_lines(env))

    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM order_lines")
        (order_lines,) = cur.fetchone()
        cur.execute("SELECT trigger, status, exit_code FROM refresh_runs")
        assert cur.fetchall() == [("demo", "succeeded", 0)]

    assert main(["demo", "--skus", "20", "--orders-per-day", "10"], env) == 0
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM order_lines")
        assert cur.fetchone() == (order_lines,)  # the second demo reused the data
        cur.execute("SELECT count(*) FROM refresh_runs WHERE status = 'succeeded'")
        assert cur.fetchone() == (2,)
