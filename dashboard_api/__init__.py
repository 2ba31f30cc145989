"""The reference dashboard API: a Flask app factory.

Production: ``gunicorn 'dashboard_api:create_app()'`` (settings from the environment).
Development and tests: ``create_app({...})`` with the settings as a mapping. The API shares
only ``api_key_auth`` with the refresh runner and never imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from . import bounds, cache, errors, routes
from .config import from_environ, load
from .db import IDLE_CONNECTIONS, READER_CONNECTIONS, Database


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Return the API configured by ``config``, or by the environment when None."""
    conf = load(from_environ() if config is None else config)
    app = Flask(__name__)
    app.config.update(
        TESTING=conf.testing,
        API_SECRET_KEY=conf.secret_key,
        CACHE_TTL=conf.cache_ttl,
        API_MAX_CONCURRENT_COMPUTES=conf.max_concurrent_computes,
    )
    app.extensions["dashboard_api"] = Database(
        conf.database_url,
        max_connections=conf.max_concurrent_computes + READER_CONNECTIONS,
        idle_connections=conf.max_concurrent_computes + IDLE_CONNECTIONS,
    )
    app.extensions["dashboard_api.memo"] = cache.Memo()
    errors.register(app)
    bounds.register(app)
    app.register_blueprint(routes.bp)
    return app
