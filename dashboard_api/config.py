"""The API's settings: read once, from a mapping or the environment, loud on bad values.

``create_app(config)`` takes a mapping (tests, the CLI's ``serve``); ``create_app()`` reads
the process environment (gunicorn). Either way every value is checked here, and a problem
names the variable and what it expects, never the value itself (it may be a secret).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotenv import load_dotenv

from api_key_auth import MIN_SECRET_LENGTH

DEFAULT_CACHE_TTL = 3 * 60 * 60
REQUIRED = object()


class ConfigError(ValueError):
    """A setting of the dashboard API is missing or invalid."""


@dataclass(frozen=True)
class Config:
    """What the API needs to run, validated."""

    database_url: str = field(repr=False)
    secret_key: str = field(repr=False)
    cache_ttl: int = DEFAULT_CACHE_TTL
    max_concurrent_computes: int = 1
    testing: bool = False


def _text(raw: Any) -> str:
    return str(raw).strip()


def _secret(raw: Any) -> str:
    # Stripped as the runner strips it: a secret file ends in a newline, and the two sides
    # must sign and verify with the same bytes.
    value = str(raw).strip()
    if len(value) < MIN_SECRET_LENGTH:
        raise ValueError(f"is too short (got {len(value)} characters)")
    return value


def _positive_int(raw: Any) -> int:
    if isinstance(raw, bool) or not str(raw).strip().isdigit() or int(str(raw)) < 1:
        raise ValueError("is not a whole number of at least 1")
    return int(str(raw))


def _boolean(raw: Any) -> bool:
    word = str(raw).strip().lower()
    if word not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError("is not true or false")
    return word in ("true", "1", "yes")


# variable: (parser, default, what it expects)
SETTINGS: dict[str, tuple[Callable[[Any], Any], Any, str]] = {
    "DATABASE_URL": (_text, REQUIRED, "the PostgreSQL URL of the dashboard data"),
    "API_SECRET_KEY": (
        _secret,
        REQUIRED,
        f"the token signing secret, at least {MIN_SECRET_LENGTH} characters",
    ),
    "CACHE_TTL": (_positive_int, DEFAULT_CACHE_TTL, "seconds a cached dashboard stays fresh"),
    "API_MAX_CONCURRENT_COMPUTES": (
        _positive_int,
        os.cpu_count() or 1,
        "how many computations may run at once, at least 1",
    ),
    "TESTING": (_boolean, False, "true or false"),
}


def from_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the API's variables that are set in ``environ`` (default: the process's).

    For the process environment, a ``.env`` in the working directory is loaded first
    without overriding anything already set, as the runner does; ``API_SECRET_KEY_FILE``
    names a file holding the secret (Docker and Kubernetes secrets).
    """
    if environ is None:
        load_dotenv(Path.cwd() / ".env", override=False)
        environ = os.environ
    values = {key: environ[key] for key in SETTINGS if key in environ}
    secret_file = environ.get("API_SECRET_KEY_FILE", "").strip()
    if not values.get("API_SECRET_KEY", "").strip() and secret_file:
        try:
            values["API_SECRET_KEY"] = Path(secret_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"API_SECRET_KEY_FILE cannot be read: {exc.strerror}") from exc
    return values


def load(values: Mapping[str, Any]) -> Config:
    """Return a Config built from ``values``, or raise ConfigError naming each bad variable."""
    parsed, problems = {}, []
    for key, (parse, default, expected) in SETTINGS.items():
        raw = values.get(key)
        if raw is None or str(raw).strip() == "":
            if default is REQUIRED:
                problems.append(f"{key} is required: {expected}")
            parsed[key] = default
            continue
        try:
            parsed[key] = parse(raw)
        except ValueError as exc:
            problems.append(f"{key} {exc}: expected {expected}")
    if problems:
        raise ConfigError("; ".join(problems))
    return Config(
        database_url=parsed["DATABASE_URL"],
        secret_key=parsed["API_SECRET_KEY"],
        cache_ttl=parsed["CACHE_TTL"],
        max_concurrent_computes=parsed["API_MAX_CONCURRENT_COMPUTES"],
        testing=parsed["TESTING"],
    )
