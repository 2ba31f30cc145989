"""One settings object, built once from the environment (and ``.env``), loud on bad values.

Everything downstream receives ``Settings`` as an argument; nothing else reads
``os.environ``. Every problem names the variable and what it expects, and all problems
are reported together so a user fixes them in one pass.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg2
import psycopg2.extensions

from .errors import ConfigError

PLATFORMS = ("shopify", "amazon", "all")
TRIGGERS = ("cron", "manual", "demo")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MIN_SECRET_LENGTH = 32


@dataclass(frozen=True)
class Shard:
    """This runner's share of the clients: shard ``index`` of ``count`` (0-based)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @classmethod
    def parse(cls, text: str) -> Shard:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match:
            raise ValueError("expected INDEX/COUNT, e.g. 0/4")
        index, count = int(match[1]), int(match[2])
        if count < 1 or index >= count:
            raise ValueError("expected 0 <= INDEX < COUNT, e.g. 0/4")
        return cls(index, count)


@dataclass(frozen=True)
class Settings:
    """Everything a command needs to know, validated."""

    database_url: str | None = field(default=None, repr=False)
    api_url: str = "http://127.0.0.1:5000"
    endpoint: str = "/api/dashboard/inventory-analytics"
    secret_key: str | None = field(default=None, repr=False)
    platforms: tuple[str, ...] = PLATFORMS
    concurrency: int = 4
    timeout: float = 300.0
    max_attempts: int = 3
    deadline: float = 6600.0
    log_dir: Path = Path("logs")
    log_format: str = "text"
    log_level: str = "INFO"
    healthcheck_url: str | None = None
    metrics_file: Path | None = None
    adaptive: bool = True
    skip_fresh_minutes: float = 0.0
    shard: Shard | None = None
    ca_bundle: Path | None = None
    data_dir: Path = Path(".data")
    # Run options that only the command line sets.
    clients: tuple[str, ...] = ()
    dry_run: bool = False
    trigger: str = "cron"

    @property
    def endpoint_url(self) -> str:
        return self.api_url.rstrip("/") + self.endpoint

    @property
    def log_file(self) -> Path:
        return self.log_dir / "analytics_refresh_cron.log"

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied (command-line flags over the environment)."""
        return dataclasses.replace(self, **changes)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in a log, a table or a message."""
        found = [self.secret_key, database_password(self.database_url)]
        return tuple(value for value in found if value)

    def require_secret(self) -> str:
        """Return the token secret, or raise ConfigError naming API_SECRET_KEY."""
        if not self.secret_key:
            raise ConfigError(
                "API_SECRET_KEY is not set: expected the HMAC secret shared with the "
                f"dashboard API, at least {MIN_SECRET_LENGTH} characters",
                hint="set API_SECRET_KEY in the environment or .env "
                "(or API_SECRET_KEY_FILE naming a file that holds it)",
            )
        return self.secret_key

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default: the process environment)."""
        env = _Reader(os.environ if environ is None else environ)
        settings = cls(
            database_url=env.database_url("DATABASE_URL"),
            api_url=env.parsed("ANALYTICS_API_URL", _http_url, cls.api_url),
            endpoint=env.parsed("ANALYTICS_ENDPOINT", _path, cls.endpoint),
            secret_key=env.secret("API_SECRET_KEY"),
            platforms=env.parsed("REFRESH_PLATFORMS", parse_platforms, cls.platforms),
            concurrency=env.number("REFRESH_CONCURRENCY", int, cls.concurrency, low=1, high=1024),
            timeout=env.number("REFRESH_TIMEOUT", float, cls.timeout, low=0.1),
            max_attempts=env.number("REFRESH_MAX_ATTEMPTS", int, cls.max_attempts, low=1, high=20),
            deadline=env.number("REFRESH_DEADLINE", float, cls.deadline, low=1),
            log_dir=Path(env.text("LOG_DIR") or cls.log_dir),
            log_format=env.choice("LOG_FORMAT", LOG_FORMATS, cls.log_format),
            log_level=env.choice("LOG_LEVEL", LOG_LEVELS, cls.log_level),
            healthcheck_url=env.parsed("HEALTHCHECK_URL", _http_url, None),
            metrics_file=env.parsed("METRICS_FILE", Path, None),
            adaptive=env.boolean("REFRESH_ADAPTIVE", cls.adaptive),
            skip_fresh_minutes=env.number(
                "REFRESH_SKIP_FRESH_MINUTES", float, cls.skip_fresh_minutes, low=0
            ),
            shard=env.parsed("REFRESH_SHARD", Shard.parse, None),
            ca_bundle=env.parsed("REFRESH_CA_BUNDLE", _existing_file, None),
            data_dir=Path(env.text("ANALYTICS_REFRESH_DATA_DIR") or cls.data_dir),
        )
        env.check_secret_length("API_SECRET_KEY", settings.secret_key)
        env.raise_problems()
        return settings


def database_password(url: str | None) -> str | None:
    """Return the password inside a PostgreSQL URL or connection string, if any."""
    if not url:
        return None
    try:
        return psycopg2.extensions.parse_dsn(url).get("password") or None
    except psycopg2.ProgrammingError:
        return None


def parse_platforms(text: str) -> tuple[str, ...]:
    """Parse a comma-separated platform list, keeping the canonical order."""
    names = {part.strip().lower() for part in text.split(",") if part.strip()}
    unknown = names - set(PLATFORMS)
    if unknown or not names:
        raise ValueError(f"expected a comma-separated subset of {','.join(PLATFORMS)}")
    return tuple(p for p in PLATFORMS if p in names)


def _http_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an http:// or https:// URL")
    return text.rstrip("/")


def _path(text: str) -> str:
    if not text.startswith("/"):
        raise ValueError("expected a path starting with /")
    return text


def _existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise ValueError("expected the path of a readable CA bundle file")
    return path


class _Reader:
    """Reads typed values and collects every problem before raising once."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ
        self.problems: list[str] = []

    def text(self, name: str) -> str:
        return self.environ.get(name, "").strip()

    def parsed(self, name: str, parse: Callable[[str], Any], default: Any) -> Any:
        raw = self.text(name)
        if not raw:
            return default
        try:
            return parse(raw)
        except ValueError as exc:
            self.problems.append(f"{name}={raw!r} is invalid: {exc}")
            return default

    def number(self, name, kind, default, *, low=None, high=None):
        def parse(raw: str):
            try:
                value = kind(raw)
            except ValueError:
                expected = "a whole number" if kind is int else "a number"
                raise ValueError(f"expected {expected}") from None
            if (low is not None and value < low) or (high is not None and value > high):
                bounds = f"at least {low}" if high is None else f"between {low} and {high}"
                raise ValueError(f"expected a value {bounds}")
            return value

        return self.parsed(name, parse, default)

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        def parse(raw: str) -> str:
            value = raw.upper() if name == "LOG_LEVEL" else raw.lower()
            if value not in choices:
                raise ValueError(f"expected one of {', '.join(choices)}")
            return value

        return self.parsed(name, parse, default)

    def boolean(self, name: str, default: bool) -> bool:
        def parse(raw: str) -> bool:
            value = raw.lower()
            if value in ("1", "true", "yes", "on"):
                return True
            if value in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")

        return self.parsed(name, parse, default)

    def database_url(self, name: str) -> str | None:
        """Read a libpq URL or connection string; a bad one is reported without its value,
        which may hold a password."""
        value = self.text(name)
        if not value:
            return None
        try:
            psycopg2.extensions.parse_dsn(value)
        except psycopg2.ProgrammingError:
            self.problems.append(
                f"{name} is invalid: expected a PostgreSQL URL such as "
                "postgresql://user:password@host:5432/dbname, or a key=value connection string"
            )
            return None
        return value

    def secret(self, name: str) -> str | None:
        """Read a secret from ``NAME``, or from the file ``NAME_FILE`` names (Docker secrets)."""
        value = self.environ.get(name, "").strip()
        file_name = self.text(f"{name}_FILE")
        if not value and file_name:
            try:
                value = Path(file_name).read_text(encoding="utf-8").strip()
            except OSError as exc:
                self.problems.append(f"{name}_FILE={file_name!r} cannot be read: {exc.strerror}")
        return value or None

    def check_secret_length(self, name: str, secret: str | None) -> None:
        # The value itself never appears in the message: only its length.
        if secret is not None and len(secret) < MIN_SECRET_LENGTH:
            self.problems.append(
                f"{name} is too short: expected at least {MIN_SECRET_LENGTH} "
                f"characters, got {len(secret)}"
            )

    def raise_problems(self) -> None:
        if self.problems:
            lines = "\n  ".join(self.problems)
            raise ConfigError(f"invalid configuration:\n  {lines}")
