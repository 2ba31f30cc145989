"""The two endpoints: ``/health`` and the inventory analytics (described in openapi.yaml)."""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import format_datetime

from flask import Blueprint, Response, current_app, jsonify

from api_key_auth import SCOPE_READ, SCOPE_REFRESH

from . import analytics, cache
from .auth import token_required
from .db import Database
from .errors import RETRY_AFTER_SECONDS, DatabaseUnavailable, InvalidRequest, NotFound
from .limits import take_compute_slot

ENDPOINT = "/api/dashboard/inventory-analytics"
PLATFORMS = ("shopify", "amazon")
UUID_PATTERN = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
CONNECTED_PLATFORMS = """
    SELECT platform, status = 'connected' FROM client_api_credentials WHERE client_id = %s
"""

bp = Blueprint("dashboard_api", __name__)


@dataclass(frozen=True)
class AnalyticsQuery:
    """The endpoint's parameters, validated."""

    client_id: str
    platform: str
    force_refresh: bool
    days: int

    @property
    def scope(self) -> str:
        return SCOPE_REFRESH if self.force_refresh else SCOPE_READ

    @property
    def cache_key(self) -> str:
        return f"inventory-analytics?platform={self.platform}&days={self.days}"

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> AnalyticsQuery:
        """Return the parameters in ``args``, or raise InvalidRequest saying which is bad."""
        client_id = args.get("client_id", "")
        # The canonical 8-4-4-4-12 form only: uuid.UUID alone would also take braces,
        # "urn:uuid:" and missing hyphens.
        if not UUID_PATTERN.fullmatch(client_id):
            raise InvalidRequest("client_id must be a UUID (8-4-4-4-12 hex digits)")
        platform = args.get("platform", "all")
        if platform not in (*PLATFORMS, "all"):
            raise InvalidRequest("platform must be one of shopify, amazon, all")
        force = args.get("force_refresh", "false")
        if force not in ("true", "false"):
            raise InvalidRequest("force_refresh must be true or false")
        days = args.get("days", str(analytics.DEFAULT_DAYS))
        # Three ASCII digits at most before int(): no "١٢", no 5,000-digit conversions.
        if not (re.fullmatch(r"[0-9]{1,3}", days) and 1 <= int(days) <= analytics.MAX_DAYS):
            raise InvalidRequest(f"days must be a whole number from 1 to {analytics.MAX_DAYS}")
        return cls(str(uuid.UUID(client_id)), platform, force == "true", int(days))


def _db() -> Database:
    return current_app.extensions["dashboard_api"]


def _memo() -> cache.Memo:
    return current_app.extensions["dashboard_api.memo"]


@bp.get("/health")
def health() -> Response:
    """Say whether the API and its database answer."""
    try:
        _db().ping()
    except DatabaseUnavailable:
        response = jsonify(status="error", database="unavailable", error="database unavailable")
        return response, 503, {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return jsonify(status="ok", database="ok")


@bp.get(ENDPOINT)
@token_required(AnalyticsQuery.from_args)
def inventory_analytics(query: AnalyticsQuery) -> Response:
    """Answer the client's dashboard: cached while fresh, else (or when forced) computed."""
    with _db().connection() as conn:
        platforms = _connected_platforms(conn, query)
        if query.force_refresh:
            seen = cache.cached_version(conn, query.client_id, query.cache_key)
        else:
            stored = cache.get_cached_response(conn, query.client_id, query.cache_key, memo=_memo())
            if stored is not None and stored.fresh:
                return _json(stored.answer(cached=True), stored.expires_at)
            seen = stored.computed_at if stored else None
        conn.commit()
        cache.ensure_table(conn, query.client_id)
        slots = current_app.config["API_MAX_CONCURRENT_COMPUTES"]

        def compute() -> cache.CachedResponse:
            # The slot is taken only once this request is sure to compute: a request
            # waiting on the key's lock computes nothing and must not shed other clients.
            take_compute_slot(conn, slots)
            return _compute_and_save(conn, query, platforms)

        entry, computed = cache.refresh(
            conn, query.client_id, query.cache_key, seen, compute, memo=_memo()
        )
        conn.commit()
    # A forced refresh is answered as fresh whether it computed or waited for a concurrent
    # one: either way the copy was computed after the request arrived.
    return _json(entry.answer(cached=not (computed or query.force_refresh)), entry.expires_at)


def _connected_platforms(conn, query: AnalyticsQuery) -> list[str]:
    with conn.cursor() as cur:
        cur.execute(CONNECTED_PLATFORMS, (query.client_id,))
        rows = cur.fetchall()
    if not rows:
        raise NotFound("unknown client")
    connected = sorted(platform for platform, is_connected in rows if is_connected)
    if query.platform == "all":
        if not connected:
            raise NotFound("no platform is connected for this client")
        return connected
    if query.platform not in connected:
        raise NotFound(f"platform {query.platform} is not connected for this client")
    return [query.platform]


def _compute_and_save(conn, query: AnalyticsQuery, platforms: list[str]) -> cache.CachedResponse:
    started = time.perf_counter()
    dashboard = analytics.compute(
        conn,
        query.client_id,
        platforms,
        analytics.Window.ending_today(query.days),
        compare=query.platform == "all",
    )
    compute_ms = round((time.perf_counter() - started) * 1000)
    computed_at = dt.datetime.now(dt.timezone.utc)
    ttl = current_app.config["CACHE_TTL"]
    # The copy holds for the cache's lifetime; a move of its window (midnight UTC) is a
    # change of its data instead, which the change key carries, so a reader is never left
    # without a copy between midnight and the refresh that follows it.
    response = dashboard.to_json(
        client_id=query.client_id,
        platform=query.platform,
        platforms=platforms,
        generated_at=_iso(computed_at),
        expires_at=_iso(cache.expiry(computed_at, ttl)),
    )
    return cache.save_cached_response(
        conn,
        query.client_id,
        query.cache_key,
        platform=query.platform,
        params={"platform": query.platform, "days": query.days},
        response=response,
        computed_at=computed_at,
        ttl_seconds=ttl,
        compute_ms=compute_ms,
        memo=_memo(),
    )


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _json(body: bytes, expires_at: dt.datetime) -> Response:
    """Answer ``body`` with the standard caching headers of a copy that holds until
    ``expires_at``, for clients and proxies that speak HTTP caching."""
    response = current_app.response_class(body, mimetype="application/json")
    remaining = (expires_at - dt.datetime.now(dt.timezone.utc)).total_seconds()
    response.headers["Cache-Control"] = f"private, max-age={max(0, int(remaining))}"
    utc = expires_at.astimezone(dt.timezone.utc)
    response.headers["Expires"] = format_datetime(utc, usegmt=True)
    return response
