"""Every answer says until when its copy holds: in the body and in the caching headers."""

from __future__ import annotations

import datetime as dt
import time
from email.utils import parsedate_to_datetime

import pytest
import requests

from dashboard_api import create_app
from dashboard_api.server import start_background

from .conftest import ALICE, days_ago

ENDPOINT = "/api/dashboard/inventory-analytics"


def parse(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def shop_alice(shop):
    shop.connect(ALICE, "shopify")
    shop.item(ALICE, "shopify", "S1", on_hand=5, cost="1.00", price="2.00")
    shop.order(ALICE, "shopify", "o-1", days_ago(1), ("S1", 1, "2.00"))


@pytest.fixture
def short_lived(settings):
    """The API over real HTTP with copies that live 3 seconds."""
    app = create_app({**settings, "CACHE_TTL": "3"})
    server = start_background(app)
    yield server
    server.stop()
    app.extensions["dashboard_api"].close()


def get(server, auth, **params):
    return requests.get(
        server.url + ENDPOINT,
        params={"client_id": ALICE, "platform": "shopify", **params},
        headers=auth(),
        timeout=10,
    )


def test_the_answer_and_its_headers_name_the_same_expiry(shop_alice, short_lived, auth):
    forced = get(short_lived, auth, force_refresh="true")
    body = forced.json()

    expires = parse(body["expires_at"])
    assert expires - parse(body["generated_at"]) == dt.timedelta(seconds=3)
    assert body["expires_at"].endswith("Z")
    assert parsedate_to_datetime(forced.headers["Expires"]) == expires.replace(microsecond=0)
    cache_control = forced.headers["Cache-Control"]
    assert cache_control.startswith("private, max-age=")
    assert 0 <= int(cache_control.rsplit("=", 1)[1]) <= 3


def test_a_cached_copy_keeps_its_expiry_and_a_read_after_it_computes(shop_alice, short_lived, auth):
    first = get(short_lived, auth, force_refresh="true").json()
    cached = get(short_lived, auth)
    assert cached.json()["cached"] is True
    assert cached.json()["expires_at"] == first["expires_at"]

    time.sleep(max(0.0, (parse(first["expires_at"]) - dt.datetime.now(dt.timezone.utc))
                   .total_seconds()) + 0.2)  # fmt: skip
    after = get(short_lived, auth).json()
    assert after["cached"] is False
    assert parse(after["expires_at"]) > parse(first["expires_at"])


def test_the_default_lifetime_is_three_hours(shop_alice, client, auth):
    body = client.get(
        ENDPOINT, query_string={"client_id": ALICE, "platform": "shopify"}, headers=auth()
    ).get_json()
    assert parse(body["expires_at"]) - parse(body["generated_at"]) == dt.timedelta(hours=3)
