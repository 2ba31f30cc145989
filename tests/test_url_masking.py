"""No URL setting's password or query-string secret reaches any output: check, the run's
log and summary, stderr, the heartbeat bodies, the job table."""

from __future__ import annotations

import socket
from pathlib import Path

import psycopg2.extensions
import pytest

from analytics_refresh.cli import main
from analytics_refresh.config.urls import display_url, url_secrets
from tests.conftest import connect_clients
from tests.ops_helpers import PingRecorder

ALICE = "3b619a14-3cd8-49fa-9c24-d8df5e54c452"
SECRET = "Pw-7c1e9a44b2"
# A password with characters a URL must percent-encode: it may surface either way.
ENCODED, DECODED = "p%40ss%2Fw0rd-91d3", "p@ss/w0rd-91d3"


def closed_port() -> int:
    with socket.socket() as sock:  # nothing listens on it afterwards: connections refused
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def monitor():
    recorder = PingRecorder()
    yield recorder
    recorder.stop()


def shapes(db_url: str, monitor_url: str) -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """{case: (variable, value, secrets it holds)}."""
    api = f"127.0.0.1:{closed_port()}"
    hc = monitor_url.removeprefix("http://")
    database = psycopg2.extensions.parse_dsn(db_url)
    return {
        "API password": ("ANALYTICS_API_URL", f"http://svc:{SECRET}@{api}", (SECRET,)),
        "API encoded password": (
            "ANALYTICS_API_URL",
            f"http://svc:{ENCODED}@{api}",
            (ENCODED, DECODED),
        ),
        "API query key": ("ANALYTICS_API_URL", f"http://{api}/?api_key={SECRET}", (SECRET,)),
        "heartbeat password and token": (
            "HEALTHCHECK_URL",
            f"http://hc:{SECRET}@{hc}?token={ENCODED}",
            (SECRET, ENCODED, DECODED),
        ),
        "gateway password": (
            "METRICS_PUSHGATEWAY_URL",
            f"http://push:{SECRET}@127.0.0.1:{closed_port()}",
            (SECRET,),
        ),
        "gateway query key": (
            "METRICS_PUSHGATEWAY_URL",
            f"http://127.0.0.1:{closed_port()}/?apikey={ENCODED}",
            (ENCODED, DECODED),
        ),
        "database URL password": (
            "DATABASE_URL",
            f"postgresql://postgres:{ENCODED}@127.0.0.1:{closed_port()}/{database['dbname']}",
            (ENCODED, DECODED),
        ),
        "database URL password parameter": (
            "DATABASE_URL",
            f"postgresql://postgres@127.0.0.1:{closed_port()}/app?password={SECRET}",
            (SECRET,),
        ),
        "database keyword password": (
            "DATABASE_URL",
            f"host=127.0.0.1 port={closed_port()} dbname=app password={SECRET}",
            (SECRET,),
        ),
        "invalid API URL": ("ANALYTICS_API_URL", f"ftp://svc:{SECRET}@{api}", (SECRET,)),
        "invalid gateway URL": (
            "METRICS_PUSHGATEWAY_URL",
            f"gopher://push:{SECRET}@host?key={ENCODED}",
            (SECRET, ENCODED, DECODED),
        ),
    }


CASES = list(shapes("dbname=x", "http://127.0.0.1:1/ping/check-key"))


def outputs(argv, env, capsys, monitor) -> list[str]:
    main(argv, env)
    captured = capsys.readouterr()
    log = Path(env["LOG_DIR"]) / "analytics_refresh_cron.log"
    texts = [captured.out, captured.err, *(p.body for p in monitor.pings)]
    texts.append(log.read_text(encoding="utf-8") if log.exists() else "")
    monitor.pings.clear()
    return texts


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("argv", [["run"], ["check"]], ids=["run", "check"])
def test_no_url_secret_reaches_any_output(case, argv, run_env, db, db_url, monitor, capsys):
    connect_clients(db, {ALICE: ("shopify",)})
    variable, value, secrets = shapes(db_url, monitor.url)[case]
    env = {**run_env, "HEALTHCHECK_URL": monitor.url, "REFRESH_PLATFORMS": "shopify,all"}
    env["REFRESH_MAX_ATTEMPTS"] = "1"
    env["REFRESH_TIMEOUT"] = "2"
    env[variable] = value
    texts = outputs(argv, env, capsys, monitor)
    with db.cursor() as cur:
        cur.execute("SELECT coalesce(error, '') FROM refresh_jobs")
        texts += [row[0] for row in cur.fetchall()]
        cur.execute("SELECT coalesce(note, '') FROM refresh_runs")
        texts += [row[0] for row in cur.fetchall()]
    joined = "\n".join(texts)
    for secret in secrets:
        assert secret not in joined, f"{secret!r} shown for {case} by {argv[0]}"
    if variable == "ANALYTICS_API_URL" and not case.startswith("invalid"):
        # The URL is shown, masked: the check's settings line, the summary of a failed run.
        assert "[redacted]" in joined


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://u:pw-1234@h:5000/p?x=1&token=abcd", "http://u:[redacted]@h:5000/p?x=[redacted]"),
        ("https://h/path", "https://h/path"),
        ("postgresql://u:s%40cret@db/app?sslmode=require", "postgresql://u:[redacted]@db/app"),
        ("host=db password='a b c' dbname=x", "host=db password=[redacted] dbname=x"),
    ],
)
def test_display_url_masks_the_password_and_every_query_value(url, shown):
    assert display_url(url).startswith(shown)
    for secret in url_secrets(url):
        if len(secret) >= 4:
            assert secret not in display_url(url)
