"""Whether a command is a try-out or a real deployment, and settings that follow the schedule.

Without ``DATABASE_URL`` a command may use the embedded PostgreSQL under
``ANALYTICS_REFRESH_DATA_DIR``, which is right for a try-out on this machine and a trap for
a deployment: there, a missing or misspelt ``DATABASE_URL`` would quietly run against an
empty (or the demo's) database and report success. So the embedded database is used only
when nothing says a deployment is meant; these do, and the command then stops with exit 3
naming ``DATABASE_URL``:

- a near-miss of its name (``DATABSE_URL``, ``database_url``), in ``.env`` or the environment;
- a scheduled run (``run`` or the cron script with trigger ``cron``: standard input is not a
  terminal, as under cron, systemd, Task Scheduler or a container, or ``--trigger cron``);
- a production setting: ``ANALYTICS_API_URL`` naming a host other than loopback,
  ``API_SECRET_KEY_FILE``, ``HEALTHCHECK_URL``, ``METRICS_FILE``, ``METRICS_PUSHGATEWAY_URL``
  or ``REFRESH_SHARD``.

``demo`` always uses the embedded database (it creates it), whatever the settings say.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from .errors import ConfigError

# Set only where the runner works for real: each says a deployment is meant.
PRODUCTION_VARIABLES = (
    "API_SECRET_KEY_FILE",
    "HEALTHCHECK_URL",
    "METRICS_FILE",
    "METRICS_PUSHGATEWAY_URL",
    "REFRESH_SHARD",
)
# The default deadline is this share of the interval: the rest is the margin in which a run
# writes its record and lets go of the lock before the next one starts.
DEADLINE_SHARE = 11 / 12
# A schedule shorter than this without a change query refreshes everything every time.
CLASSIC_INTERVAL_MINUTES = 120
SCHEDULED_SIGN = (
    "this is a scheduled run (trigger cron: standard input is not a terminal, as under "
    "cron, systemd, Task Scheduler or a container)"
)


def is_loopback(host: str) -> bool:
    """Return whether ``host`` is this machine (localhost, 127.0.0.0/8, ::1)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def signs(
    environ: Mapping[str, str],
    origin: Callable[[str], str],
    near_misses: tuple[tuple[str, str], ...],
) -> tuple[str, ...]:
    """Return what in ``environ`` says a real deployment is meant, each with where it is set."""
    found = [
        f"{wrong} is set in {origin(wrong)}: did you mean DATABASE_URL?"
        for wrong, right in near_misses
        if right == "DATABASE_URL"
    ]
    api = environ.get("ANALYTICS_API_URL", "").strip()
    try:
        host = urlsplit(api).hostname if api else None
    except ValueError:
        host = None
    if host and not is_loopback(host):
        found.append(f"ANALYTICS_API_URL names {host} (set in {origin('ANALYTICS_API_URL')})")
    for name in PRODUCTION_VARIABLES:
        if environ.get(name, "").strip():
            found.append(f"{name} is set in {origin(name)}")
    return tuple(found)


def embedded_reason(settings) -> str:
    """Return why the embedded PostgreSQL may be used, or raise ConfigError (exit 3)."""
    reasons = list(settings.deployment)
    if settings.scheduled:
        reasons.append(SCHEDULED_SIGN)
    pgdata = Path(settings.data_dir) / "postgres"
    if reasons:
        raise ConfigError(
            "DATABASE_URL is not set, and this looks like a real deployment ("
            + "; ".join(reasons)
            + f"): the embedded PostgreSQL under {pgdata} is only for trying the system out",
            hint="set DATABASE_URL to the application's PostgreSQL, in .env or the "
            "environment (DATABASE_URL=postgresql://user:password@host:5432/dbname)",
        )
    return f"DATABASE_URL is unset and nothing says this is a deployment: embedded under {pgdata}"


def default_deadline(interval_minutes: float) -> float:
    """Return the deadline a run gets unless REFRESH_DEADLINE is set: 11/12 of the interval."""
    return round(interval_minutes * 60 * DEADLINE_SHARE, 1)


# Past the longest request a run may have in flight, the lease holds this much longer:
# six missed renewals, room for a database restart or a failover's switch.
LEASE_GRACE_SECONDS = 30.0


def lease_length(timeout: float) -> float:
    """The lease a run with REFRESH_TIMEOUT ``timeout`` promises to renew within: longer
    than any request it may have in flight, so it is never taken for dead while it sends."""
    return max(LEASE_GRACE_SECONDS, timeout + LEASE_GRACE_SECONDS)


def schedule_warnings(
    deadline: float, interval_minutes: float, timeout: float = 300.0
) -> tuple[str, ...]:
    """Return what in the settings does not fit the schedule's interval: a deadline, or
    the lease of a killed run (which holds the next runs off), longer than it."""
    interval = interval_minutes * 60
    found = []
    if deadline > interval:
        found.append(
            f"REFRESH_DEADLINE={deadline:g} s is longer than the schedule's interval "
            f"(REFRESH_INTERVAL_MINUTES={interval_minutes:g}, {interval:g} s): a run still "
            "going when the next one starts makes that one exit 5; set REFRESH_DEADLINE to "
            f"at most {default_deadline(interval_minutes):g}, or unset it to follow the interval"
        )
    lease = lease_length(timeout)
    if lease > interval:
        found.append(
            f"REFRESH_TIMEOUT={timeout:g} s makes a killed run's lease hold for {lease:g} s, "
            f"longer than the schedule's interval ({interval:g} s): the next runs after a "
            "crash exit 5 until it expires; set REFRESH_TIMEOUT to at most "
            f"{max(1.0, interval - LEASE_GRACE_SECONDS):g}"
        )
    return tuple(found)


def change_query_warning(interval_minutes: float, change_sql: str | None) -> str | None:
    """Return a warning when a short schedule has no change query, else None."""
    if change_sql or interval_minutes >= CLASSIC_INTERVAL_MINUTES:
        return None
    times = CLASSIC_INTERVAL_MINUTES / interval_minutes
    return (
        f"REFRESH_INTERVAL_MINUTES={interval_minutes:g} but no change query is set "
        f"(REFRESH_CHANGE_SQL or REFRESH_CHANGE_SQL_FILE): every run refreshes every key, "
        f"{times:.3g} times the load of the two-hour schedule"
    )
