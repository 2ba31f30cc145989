"""Credential rows the runner must not trust."""

from __future__ import annotations

from analytics_refresh.cli import main
from tests.conftest import log_lines
from tests.runs import ALICE, BOB, runs


def test_untrustworthy_credential_rows_are_skipped(run_env, backend, db, tmp_path):
    # A user's own table may hold text ids and other platforms; the runner must not trust it.
    with db.cursor() as cur:
        cur.execute("DROP TABLE client_api_credentials")
        cur.execute(
            "CREATE TABLE client_api_credentials (client_id text, platform text, status text)"
        )
        cur.executemany(
            "INSERT INTO client_api_credentials VALUES (%s, %s, 'connected')",
            [
                ("x'; DROP TABLE refresh_runs; --", "shopify"),
                (BOB, "ebay"),
                (BOB, "shopify"),
                (BOB, "shopify"),
            ],
        )
    assert main(["run"], run_env) == 0
    lines = log_lines(run_env)
    assert any("is not a UUID" in line for line in lines)
    assert any("unknown platform 'ebay'" in line for line in lines)
    assert any("duplicate credential row" in line for line in lines)
    sent = sorted((r.query["client_id"], r.query["platform"]) for r in backend.refreshes())
    assert sent == [(BOB, "all"), (BOB, "shopify")]
    assert runs(db)[0][:2] == ("succeeded", 0)


def test_one_client_spelled_two_ways_is_planned_once(run_env, backend, db):
    with db.cursor() as cur:
        cur.execute("DROP TABLE client_api_credentials")
        cur.execute(
            "CREATE TABLE client_api_credentials (client_id text, platform text, status text)"
        )
        cur.executemany(
            "INSERT INTO client_api_credentials VALUES (%s, %s, 'connected')",
            [(f"urn:uuid:{ALICE}", "amazon"), (BOB, "shopify"), (ALICE, "shopify")],
        )
    assert main(["run"], run_env) == 0
    sent = sorted((r.query["client_id"], r.query["platform"]) for r in backend.refreshes())
    # urn:uuid:... sorts after the other rows, so it is seen as the duplicate it is.
    assert sent == sorted([(ALICE, "shopify"), (ALICE, "all"), (BOB, "shopify"), (BOB, "all")])
    assert "Found 2 active clients for analytics refresh" in log_lines(run_env)
    assert any("duplicate credential row" in line for line in log_lines(run_env))
