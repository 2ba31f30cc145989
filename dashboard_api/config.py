"""The API's settings: read once, from a mapping or the environment, loud on bad values.

``create_app(config)`` takes a mapping (tests, the CLI's ``serve``); ``create_app()`` reads
the process environment (gunicorn). Either way every value is checked here, and a problem
names the variable and what it expects, never the value itself (it may be a secret).
This is the only module of the API that reads the environment: the demo loader and the
gunicorn configuration get their values from the functions below.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from dotenv.parser import parse_stream

from api_key_auth import MIN_SECRET_LENGTH

DEFAULT_CACHE_TTL = 3 * 60 * 60
REQUIRED = object()
# The words the runner's settings accept too, compared case-insensitively.
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


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
    # ASCII digits only, and few of them: no "١٢", no 5,000-digit conversions.
    text = str(raw).strip()
    if isinstance(raw, bool) or not re.fullmatch(r"[0-9]{1,9}", text) or int(text) < 1:
        raise ValueError("is not a whole number of at least 1")
    return int(text)


def _boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    word = str(raw).strip().lower()
    if word not in (*TRUE_WORDS, *FALSE_WORDS):
        raise ValueError("is not a yes/no word")
    return word in TRUE_WORDS


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
    "TESTING": (_boolean, False, "one of 1/true/yes/on or 0/false/no/off"),
}


def process_environ(
    cwd: Path | None = None, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Return ``base`` (default: the process environment) over the ``.env`` of ``cwd``.

    ``cwd`` defaults to the working directory. The file never overrides a variable that
    is set, as for the runner, and the process environment is left as it is. A line that
    cannot be parsed is a ConfigError naming the file and the line: skipping it would run
    with a default instead.
    """
    merged = read_dotenv((cwd or Path.cwd()) / ".env")
    merged.update(os.environ if base is None else base)
    return merged


def read_dotenv(path: Path) -> dict[str, str]:
    """Return the variables of a ``.env`` file (none when it is absent)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise ConfigError(f"{path} cannot be read: {reason}") from exc
    bad = [binding.original.line for binding in parse_stream(io.StringIO(text)) if binding.error]
    if bad:
        lines = ", ".join(str(number) for number in bad[:5])
        raise ConfigError(f"{path}: line {lines} cannot be parsed (expected NAME=value)")
    values = dotenv_values(stream=io.StringIO(text), interpolate=True)
    return {key: value for key, value in values.items() if value is not None}


def from_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the API's variables that are set in ``environ`` (default: the process's).

    For the process environment, ``.env`` in the working directory counts too (see
    ``process_environ``); ``API_SECRET_KEY_FILE`` names a file holding the secret (Docker
    and Kubernetes secrets).
    """
    if environ is None:
        environ = process_environ()
    values = {key: environ[key] for key in SETTINGS if key in environ}
    secret_file = environ.get("API_SECRET_KEY_FILE", "").strip()
    if values.get("API_SECRET_KEY", "").strip() and secret_file:
        # The runner's rule too: whichever won, the other would be ignored without a word.
        raise ConfigError(
            "API_SECRET_KEY and API_SECRET_KEY_FILE are both set: expected one of them"
        )
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


# -- the production server (dashboard_api/gunicorn_config.py) -------------------------------
DEFAULT_PORT = 5000
DEFAULT_WORKERS = 2


@dataclass(frozen=True)
class ServerConfig:
    """Where gunicorn listens and how many worker processes it runs."""

    bind: str = f"0.0.0.0:{DEFAULT_PORT}"
    workers: int = DEFAULT_WORKERS


def server_config(environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Return the server settings from ``PORT`` and ``WEB_CONCURRENCY`` (the hosts' names)."""
    if environ is None:
        environ = process_environ()
    problems = []
    port, workers = DEFAULT_PORT, DEFAULT_WORKERS
    if str(environ.get("PORT", "")).strip():
        try:
            port = _positive_int(environ["PORT"])
            if port > 65535:
                raise ValueError("is past 65535")
        except ValueError as exc:
            problems.append(f"PORT {exc}: expected the TCP port to listen on, 1 to 65535")
    if str(environ.get("WEB_CONCURRENCY", "")).strip():
        try:
            workers = _positive_int(environ["WEB_CONCURRENCY"])
        except ValueError as exc:
            problems.append(f"WEB_CONCURRENCY {exc}: expected how many worker processes")
    if problems:
        raise ConfigError("; ".join(problems))
    return ServerConfig(bind=f"0.0.0.0:{port}", workers=workers)
