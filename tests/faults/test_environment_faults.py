"""Faults around the run rather than in the API: TLS trust and a log that cannot be written."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest
import trustme

from analytics_refresh.cli import main
from tests.backend import Backend
from tests.conftest import connect_clients

CLIENT = "3b619a14-3cd8-49fa-9c24-d8df5e54c452"


@pytest.fixture
def tls_backend(tmp_path):
    """The scripted backend behind HTTPS with a certificate from a throwaway CA."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server = Backend()
    server.server.socket = context.wrap_socket(server.server.socket, server_side=True)
    server.start()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    yield server, ca_file
    server.stop()


def jobs(db):
    with db.cursor() as cur:
        cur.execute("SELECT status, attempts, error FROM refresh_jobs")
        return cur.fetchall()


def test_self_signed_https_is_refused_with_a_clear_error(run_env, db, tls_backend):
    server, _ = tls_backend
    connect_clients(db, {CLIENT: ("shopify",)})
    env = {**run_env, "ANALYTICS_API_URL": server.url.replace("http:", "https:")}
    env.pop("REQUESTS_CA_BUNDLE", None)
    assert main(["run", "--platform", "shopify"], env) == 1
    ((status, attempts, error),) = jobs(db)
    assert (status, attempts) == ("failed", 1)  # a trust problem is not retried
    assert "TLS verification failed" in error
    assert "REFRESH_CA_BUNDLE" in error
    assert server.refreshes() == []  # nothing reached the untrusted server


def test_https_with_the_ca_bundle_succeeds(run_env, db, tls_backend):
    server, ca_file = tls_backend
    connect_clients(db, {CLIENT: ("shopify",)})
    env = {
        **run_env,
        "ANALYTICS_API_URL": server.url.replace("http:", "https:"),
        "REFRESH_CA_BUNDLE": str(ca_file),
    }
    assert main(["run", "--platform", "shopify"], env) == 0
    assert jobs(db) == [("succeeded", 1, None)]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_disk_full_on_the_log_falls_back_to_stderr(run_env, db, backend, tmp_path, capsys):
    logs = tmp_path / "full"
    logs.mkdir()
    os.symlink("/dev/full", logs / "analytics_refresh_cron.log")
    connect_clients(db, {CLIENT: ("shopify",)})
    env = {**run_env, "LOG_DIR": str(logs)}
    assert main(["run", "--platform", "shopify"], env) == 0
    err = capsys.readouterr().err
    assert "cannot write the log file" in err
    assert "Found 1 active clients for analytics refresh" in err
    assert "Results: 1 successful, 0 failed out of 1 total jobs" in err
    assert jobs(db) == [("succeeded", 1, None)]
