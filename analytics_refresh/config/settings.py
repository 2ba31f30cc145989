"""One settings object, built once from the environment (and ``.env``), loud on bad values.

Everything downstream receives ``Settings`` as an argument; nothing else reads
``os.environ``. Each variable has one parser (``VARIABLES``), used both for the variable
and for the command-line flag that overrides it, so the two accept and refuse the same
values. Every problem names the variable and what it expects, and all problems are
reported together so a user fixes them in one pass.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analytics_refresh.config import deployment, names
from analytics_refresh.config.envfile import (
    change_source,
    dotenv_names,
    origin_of,
)
from analytics_refresh.config.parsers import (
    PLATFORMS,
    boolean,
    choice,
    existing_file,
    number,
    parse_platforms,
    path_text,
)
from analytics_refresh.config.reader import MIN_SECRET_LENGTH, Reader
from analytics_refresh.config.urls import http_url, url_secrets
from analytics_refresh.errors import ConfigError

TRIGGERS = ("cron", "manual", "demo")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Variables with these prefixes are the project's: an unknown one is probably a typo.
PREFIXES = ("REFRESH_", "ANALYTICS_", "API_", "LOG_", "METRICS_", "HEALTHCHECK_", "CACHE_")
# Read by the reference API (dashboard_api/config.py) or its gunicorn configuration.
API_VARIABLES = ("CACHE_TTL", "API_MAX_CONCURRENT_COMPUTES", "API_WORKERS", "API_THREADS")


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


def _shard(text: str) -> Shard:
    return Shard.parse(text)


@dataclass(frozen=True)
class Variable:
    """One environment variable: the Settings field it sets and its parser."""

    field: str
    parse: Callable[[str], Any]


VARIABLES: dict[str, Variable] = {
    "ANALYTICS_API_URL": Variable("api_url", http_url),
    "ANALYTICS_ENDPOINT": Variable("endpoint", path_text),
    "REFRESH_PLATFORMS": Variable("platforms", parse_platforms),
    "REFRESH_CONCURRENCY": Variable("concurrency", number(int, 1, 1024)),
    "REFRESH_TIMEOUT": Variable("timeout", number(float, 0.1, 86400)),
    "REFRESH_MAX_ATTEMPTS": Variable("max_attempts", number(int, 1, 20)),
    "REFRESH_DEADLINE": Variable("deadline", number(float, 1, 7 * 86400)),
    "LOG_DIR": Variable("log_dir", Path),
    "LOG_FORMAT": Variable("log_format", choice(LOG_FORMATS)),
    "LOG_LEVEL": Variable("log_level", choice(LOG_LEVELS, upper=True)),
    "HEALTHCHECK_URL": Variable("healthcheck_url", http_url),
    "METRICS_FILE": Variable("metrics_file", Path),
    "METRICS_PUSHGATEWAY_URL": Variable("pushgateway_url", http_url),
    "METRICS_WORST_KEYS": Variable("metrics_worst_keys", number(int, 0, 500)),
    "REFRESH_ADAPTIVE": Variable("adaptive", boolean),
    "REFRESH_SKIP_FRESH_MINUTES": Variable("skip_fresh_minutes", number(float, 0, 10**6)),
    "REFRESH_SHARD": Variable("shard", _shard),
    "REFRESH_CA_BUNDLE": Variable("ca_bundle", existing_file),
    "REFRESH_HISTORY_DAYS": Variable("history_days", number(int, 0, 100_000)),
    "REFRESH_MAX_AGE_MINUTES": Variable("max_age_minutes", number(float, 1, 10**6)),
    "REFRESH_INTERVAL_MINUTES": Variable("interval_minutes", number(float, 1, 10**6)),
    "ANALYTICS_REFRESH_DATA_DIR": Variable("data_dir", Path),
    "REFRESH_POLL_SECONDS": Variable("poll_seconds", number(float, 1, 86400)),
    "REFRESH_SETTLE_SECONDS": Variable("settle_seconds", number(float, 0, 3600)),
    "REFRESH_MAX_DELAY_SECONDS": Variable("max_delay_seconds", number(float, 0, 86400)),
    "REFRESH_ALIVE_FILE": Variable("alive_file", Path),
}
# Settings whose value is a URL that may carry a password or a key in its query string.
URL_VARIABLES = ("DATABASE_URL", "ANALYTICS_API_URL", "HEALTHCHECK_URL", "METRICS_PUSHGATEWAY_URL")
# Read by their own code below (secrets, the database URL, the change query).
SPECIAL_VARIABLES = (
    "DATABASE_URL",
    "API_SECRET_KEY",
    "API_SECRET_KEY_FILE",
    "REFRESH_CHANGE_SQL",
    "REFRESH_CHANGE_SQL_FILE",
)
KNOWN_VARIABLES = frozenset((*VARIABLES, *SPECIAL_VARIABLES, *API_VARIABLES))


def flag_type(name: str) -> Callable[[str], Any]:
    """Return an argparse ``type`` that parses a flag as the variable ``name`` is parsed."""
    import argparse

    parse = VARIABLES[name].parse

    def parse_flag(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{exc} (as {name}), got {text!r}") from None

    parse_flag.__name__ = name  # argparse names the type in its messages
    return parse_flag


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
    pushgateway_url: str | None = None
    # The stalest keys the metrics name (a series each); the rest are only counted.
    metrics_worst_keys: int = 20
    adaptive: bool = True
    skip_fresh_minutes: float = 0.0
    shard: Shard | None = None
    ca_bundle: Path | None = None
    data_dir: Path = Path(".data")
    history_days: int = 30
    change_sql: str | None = field(default=None, repr=False)
    # Which variable gave the change query, and where it was set (for messages).
    change_sql_source: str = ""
    max_age_minutes: float = 1440.0
    # How often the scheduler starts a run (the installers write it beside the schedule):
    # what the freshness promise, the copies' refresh lead and the deadline are judged by.
    interval_minutes: float = 120.0
    # The listener: how often it reads pending requests without a notification, how long a
    # key's changes must be quiet before it refreshes, and the most it waits after the first.
    poll_seconds: float = 60.0
    settle_seconds: float = 5.0
    max_delay_seconds: float = 60.0
    # Touched every few seconds while the listener's loop makes progress (a liveness probe).
    alive_file: Path | None = None
    # systemd sets JOURNAL_STREAM for a unit's output: the log then also goes to stderr.
    journal: bool = False
    # Unknown variables (a project prefix, or a near-miss of a known name), each with the
    # closest known name; and problems of settings that are valid one by one.
    warnings: tuple[str, ...] = ()
    # (misspelt name, the known name it resembles), from .env or the environment.
    near_misses: tuple[tuple[str, str], ...] = ()
    # Where DATABASE_URL was set ("the environment", or the .env file), "" when unset.
    database_origin: str = ""
    # What says a real deployment is meant (deployment.signs): no embedded database then.
    deployment: tuple[str, ...] = ()
    # A run the scheduler started (trigger cron): never on the embedded database.
    scheduled: bool = False
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

    @property
    def shard_label(self) -> str:
        """The shard as history rows record it: '' for an unsharded run."""
        return str(self.shard) if self.shard else ""

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied (command-line flags over the environment)."""
        return dataclasses.replace(self, **changes)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in a log, a table or a message."""
        return secrets_of(
            self.secret_key,
            self.database_url,
            self.api_url,
            self.healthcheck_url,
            self.pushgateway_url,
        )

    def require_secret(self) -> str:
        """Return the token secret, or raise ConfigError naming API_SECRET_KEY."""
        if not self.secret_key:
            raise ConfigError(
                "API_SECRET_KEY is not set: expected the HMAC secret shared with the "
                f"dashboard API, at least {MIN_SECRET_LENGTH} characters"
                + self.misspelling_of("API_SECRET_KEY", "API_SECRET_KEY_FILE"),
                hint="set API_SECRET_KEY in the environment or .env "
                "(or API_SECRET_KEY_FILE naming a file that holds it)",
            )
        return self.secret_key

    def misspelling_of(self, *wanted: str) -> str:
        """Return '; NAME is set: did you mean WANTED?' for a near-miss of ``wanted``."""
        found = [
            f"{wrong} is set: did you mean {right}?"
            for wrong, right in self.near_misses
            if right in wanted
        ]
        return "; " + "; ".join(found) if found else ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from ``environ``; raise ConfigError listing every problem."""
        env = Reader(environ)
        values: dict[str, Any] = {}
        for name, variable in VARIABLES.items():
            value = env.parsed(name, variable.parse)
            if value is not None:
                values[variable.field] = value
        values["database_url"] = env.database_url()
        values["secret_key"] = env.secret("API_SECRET_KEY")
        values["change_sql"] = env.text_or_file("REFRESH_CHANGE_SQL")
        values["journal"] = bool(env.text("JOURNAL_STREAM"))
        env.check_secret_length("API_SECRET_KEY", values["secret_key"])
        env.raise_problems()
        found = names.misspelt(environ, KNOWN_VARIABLES, PREFIXES, dotenv_names(environ))
        where = origin_of(environ)
        values["near_misses"] = tuple((k, v) for k, v in found.items() if v)
        values["database_origin"] = where("DATABASE_URL") if values["database_url"] else ""
        values["deployment"] = deployment.signs(environ, where, values["near_misses"])
        values["change_sql_source"] = change_source(environ, where) if values["change_sql"] else ""
        interval = values.get("interval_minutes", cls.interval_minutes)
        if "deadline" not in values:
            values["deadline"] = deployment.default_deadline(interval)
        short = deployment.change_query_warning(interval, values["change_sql"])
        values["warnings"] = (
            names.warnings_for(found, where)
            + deployment.schedule_warnings(
                values["deadline"], interval, values.get("timeout", cls.timeout)
            )
            + ((short,) if short else ())
        )
        return cls(**values)


def secrets_of(secret_key: str | None, *urls: str | None) -> tuple[str, ...]:
    """Return the values to mask: the token secret, and the passwords and query-string
    values of the URL settings."""
    found = [secret_key, *(part for url in urls for part in url_secrets(url))]
    # A value too short to be a secret (an invalid setting) would mask ordinary words.
    return tuple(dict.fromkeys(value for value in found if value and len(value) >= 4))


def raw_secrets(environ: Mapping[str, str]) -> tuple[str, ...]:
    """Return the secrets to mask when ``environ`` may not even be valid settings."""
    reader = Reader(environ)
    secret = reader.secret("API_SECRET_KEY")
    if secret is not None and len(secret) < MIN_SECRET_LENGTH:
        secret = None  # too short to be the secret: masking it would hide common words
    return secrets_of(secret, *(environ.get(name, "").strip() or None for name in URL_VARIABLES))


def partial(environ: Mapping[str, str], name: str, default: Any = None) -> Any:
    """Return one variable's value if it is valid, else ``default`` (for error reports)."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return VARIABLES[name].parse(raw)
    except ValueError:
        return default


def unknown_variables(environ: Mapping[str, str]) -> tuple[str, ...]:
    """Return a warning for each variable that is a near-miss of a known name or carries a
    project prefix the project does not know."""
    found = names.misspelt(environ, KNOWN_VARIABLES, PREFIXES, dotenv_names(environ))
    return names.warnings_for(found, origin_of(environ))
