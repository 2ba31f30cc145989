"""Operating the listener: status, metrics, heartbeat pings, a clean stop."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from analytics_refresh.cli import main
from tests.conftest import connect_clients
from tests.listen_helpers import listening, refreshed, request, start, stop, wait_for
from tests.runs import ALICE, BOB


@pytest.fixture
def pings():
    """A healthchecks-style endpoint on loopback that records each ping's path."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(self.path.split("?")[0])
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/ping/check-1", seen
    server.shutdown()
    server.server_close()


def test_status_shows_live_listeners_and_pending_keys(db, backend, run_env, capsys):
    connect_clients(db, {ALICE: ("shopify",), BOB: ("shopify",)})
    env = {
        **run_env,
        "REFRESH_PLATFORMS": "shopify",
        "REFRESH_SETTLE_SECONDS": "60",
        "REFRESH_MAX_DELAY_SECONDS": "60",
    }
    proc = start(env)
    try:
        assert wait_for(lambda: listening(db))
        request(db, ALICE, "shopify")
        main(["status", "--json"], environ=env)
        report = json.loads(capsys.readouterr().out)
        main(["status"], environ=env)
        text = capsys.readouterr().out
    finally:
        code, out = stop(proc)
    assert code == 0, out
    assert [item["host"] for item in report["listeners"]] == [socket.gethostname()]
    assert report["listeners"][0]["mode"] == "notify"
    assert report["pending_keys"] == 1
    assert "Listeners: 1 live" in text
    assert "Pending keys: 1" in text
    # A stopped listener is not live any more, and no listener round shows as a run.
    main(["status", "--json"], environ=env)
    after = json.loads(capsys.readouterr().out)
    assert after["listeners"] == []
    assert all(run["trigger"] != "listen" for run in after["runs"])


def test_metrics_and_heartbeat_while_listening(db, backend, run_env, tmp_path, pings):
    url, seen = pings
    connect_clients(db, {ALICE: ("shopify", "amazon")})
    metrics = tmp_path / "metrics" / "analytics_refresh.prom"
    alive = tmp_path / "listener.alive"
    env = {**run_env, "METRICS_FILE": str(metrics), "HEALTHCHECK_URL": url}
    env["REFRESH_ALIVE_FILE"] = str(alive)
    proc = start(env)
    try:
        assert wait_for(lambda: listening(db))
        request(db, ALICE)  # every platform: shopify, amazon and all
        assert wait_for(lambda: len(refreshed(backend)) == 3)
        assert wait_for(lambda: "/ping/check-1/0" in seen, timeout=15)  # alive
        assert wait_for(alive.exists, timeout=10)
    finally:
        code, out = stop(proc)
    assert code == 0, out
    assert seen[0] == "/ping/check-1/start"
    host = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())
    text = (metrics.parent / f"analytics_refresh.listen-{host}.prom").read_text()
    assert 'analytics_refresh_listen_refreshes_total{status="succeeded"} 3.0' in text
    assert "analytics_refresh_listen_change_to_refresh_seconds_count 3.0" in text
    assert "analytics_refresh_listen_pending_keys 0.0" in text
    assert "analytics_refresh_listen_notify 1.0" in text
    # Bounded: no series names a client.
    assert ALICE not in text
