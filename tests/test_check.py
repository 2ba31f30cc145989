"""`analytics-refresh check`: one line per check, the fix on a failure, the contract's codes."""

from __future__ import annotations

import socket

import pytest

import api_key_auth
from analytics_refresh.cli import main
from tests.backend import Answer
from tests.conftest import connect_clients

ALICE = "3b619a14-3cd8-49fa-9c24-d8df5e54c452"
BOB = "5f0c3a52-7d5e-4c43-9a4e-0f2d6b1c9e11"


def lines_of(capsys) -> list[str]:
    return capsys.readouterr().out.splitlines()


def line(lines: list[str], name: str) -> str:
    return next(x for x in lines if name in x)


def fix_after(lines: list[str], name: str) -> str:
    index = next(i for i, x in enumerate(lines) if name in x)
    assert lines[index + 1].strip().startswith("fix: ")
    return lines[index + 1]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def clients(db):
    connect_clients(db, {ALICE: ("shopify", "amazon"), BOB: ("amazon",)})


def test_healthy_system_passes_every_line(run_env, clients, backend, capsys, secret):
    assert main(["check"], run_env) == 0
    out = lines_of(capsys)
    checks = [x for x in out if x.startswith("  ")]
    assert [x.split(":")[0].strip() for x in checks] == [
        "✓ Settings valid",
        "✓ Log and metrics files writable",
        "✓ Database reachable",
        "✓ Runner tables present",
        "✓ Active clients found",
        "✓ Token mints and verifies",
        "✓ API /health answers",
        "✓ Endpoint accepts a token",
    ]
    assert "2 clients, 5 jobs (shopify 1, amazon 2, all 2)" in line(out, "Active clients")
    assert "no run recorded yet" in line(out, "Runner tables")
    assert out[-1] == "✓ all 8 checks passed"
    assert secret not in "\n".join(out)

    health, read = backend.requests
    assert health.path == "/health"
    # The read is a read: the first client's first platform, not forced, a read token.
    assert read.query == {"client_id": ALICE, "platform": "shopify", "force_refresh": "false"}
    token = read.headers["Authorization"].removeprefix("Bearer ")
    claims = api_key_auth.verify_client_token(token, secret, client_id=ALICE)
    assert claims["scope"] == api_key_auth.SCOPE_READ
    assert "7 SKUs" in line(out, "Endpoint accepts")


def test_client_and_platform_choose_what_is_read(run_env, clients, backend, capsys):
    assert main(["check", "--client", BOB, "--platform", "all"], run_env) == 0
    read = backend.requests[-1]
    assert (read.query["client_id"], read.query["platform"]) == (BOB, "all")
    assert "1 clients, 1 jobs (all 1)" in line(lines_of(capsys), "Active clients")


def test_api_down_fails_with_the_fix_and_exit_1(run_env, clients, capsys):
    env = {**run_env, "ANALYTICS_API_URL": f"http://127.0.0.1:{closed_port()}"}
    assert main(["check"], env) == 1
    out = lines_of(capsys)
    assert "connection refused" in line(out, "✗ API /health answers")
    assert "start the dashboard API" in fix_after(out, "✗ API /health answers")
    assert line(out, "Endpoint accepts").startswith("  - ")
    assert "(first failure: API /health answers)" in out[-1]
    assert "exit 1" in out[-1]


def test_api_whose_database_is_down_fails(run_env, clients, backend, capsys):
    # /health carries no client_id: its script is the one for ("", "").
    backend.script("", "", Answer(503, {"status": "error", "database": "down"}))
    assert main(["check"], run_env) == 1
    out = lines_of(capsys)
    assert "its database is down" in line(out, "✗ API /health answers")
    assert "DATABASE_URL" in fix_after(out, "✗ API /health answers")


def test_database_down_fails_with_exit_4(run_env, capsys):
    env = {**run_env, "DATABASE_URL": "postgresql://ops:pw-hidden@127.0.0.1:1/none"}
    assert main(["check"], env) == 4
    out = lines_of(capsys)
    assert "cannot connect" in line(out, "✗ Database reachable")
    assert "DATABASE_URL" in fix_after(out, "✗ Database reachable")
    assert line(out, "Runner tables present").startswith("  - ")
    assert line(out, "Active clients found").startswith("  - ")
    # Checks that need no database still run.
    assert line(out, "Token mints").startswith("  ✓")
    assert line(out, "API /health").startswith("  ✓")
    assert "pw-hidden" not in "\n".join(out)
    assert "exit 4" in out[-1]


def test_missing_runner_tables_name_db_init(run_env, empty_db_url, capsys):
    assert main(["check"], {**run_env, "DATABASE_URL": empty_db_url}) == 4
    out = lines_of(capsys)
    assert "refresh_runs, refresh_jobs" in line(out, "✗ Runner tables present")
    assert "analytics-refresh db init" in fix_after(out, "✗ Runner tables present")


def test_no_connected_client_is_a_warning_and_exits_0(run_env, db, capsys):
    connect_clients(db, {ALICE: ("shopify",)}, status="disconnected")
    assert main(["check"], run_env) == 0
    out = lines_of(capsys)
    warning = line(out, "⚠ Active clients found")
    assert "no connected client" in warning
    assert "disconnected 1" in warning
    assert "status = 'connected'" in fix_after(out, "⚠ Active clients found")
    assert line(out, "Endpoint accepts").startswith("  - ")
    assert out[-1] == "✓ all 8 checks passed with 1 warning"


def test_missing_secret_fails_settings_with_exit_3(run_env, clients, capsys):
    env = {k: v for k, v in run_env.items() if k != "API_SECRET_KEY"}
    assert main(["check"], env) == 3
    out = lines_of(capsys)
    assert "API_SECRET_KEY is not set" in line(out, "✗ Settings valid")
    assert "API_SECRET_KEY" in fix_after(out, "✗ Settings valid")
    assert line(out, "Token mints").startswith("  - ")


def test_short_secret_exits_3_naming_it(run_env, capsys):
    assert main(["check"], {**run_env, "API_SECRET_KEY": "short-secret-value"}) == 3
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "API_SECRET_KEY is too short" in text
    assert "✗ Settings valid" in text
    assert "fix:" in text
    assert "short-secret-value" not in text


@pytest.mark.parametrize(
    ("answer", "detail", "fix"),
    [
        (Answer(401, {"error": "invalid token"}), "HTTP 401 invalid token", "same API_SECRET_KEY"),
        (Answer(500, {"error": "boom"}), "HTTP 500 boom", "see the API's log"),
        (Answer(200, "<html>proxy</html>"), "not a JSON object", "ANALYTICS_ENDPOINT"),
    ],
)
def test_endpoint_that_refuses_the_read_fails_with_exit_1(
    run_env, clients, backend, capsys, answer, detail, fix
):
    backend.script(ALICE, "shopify", answer)
    assert main(["check"], run_env) == 1
    out = lines_of(capsys)
    assert detail in line(out, "✗ Endpoint accepts a token")
    assert fix in fix_after(out, "✗ Endpoint accepts a token")
