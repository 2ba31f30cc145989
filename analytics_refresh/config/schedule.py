"""The interval of a schedule, for the installers: what they write as REFRESH_INTERVAL_MINUTES.

    python -m analytics_refresh.config.schedule '*/10 * * * *'      # a crontab expression
    python -m analytics_refresh.config.schedule --minutes 10         # every N minutes
    python -m analytics_refresh.config.schedule --write-dotenv EXPR  # and set it in .env

prints the interval in minutes (the longest gap between two runs, which is what the
freshness promise and the deadline are judged by) and warns on stderr when the settings in
``.env`` and the environment do not fit it: a schedule shorter than two hours without a
change query refreshes every key every time, and a ``.env`` whose REFRESH_INTERVAL_MINUTES
differs makes ``check`` by hand judge another schedule than the one installed.
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
from datetime import date, timedelta
from pathlib import Path

from analytics_refresh.config import deployment
from analytics_refresh.config.envfile import load_environment
from analytics_refresh.config.settings import Settings
from analytics_refresh.errors import RefreshError

VARIABLE = "REFRESH_INTERVAL_MINUTES"
DAY_MINUTES = 24 * 60
# Restricted days are looked at over this many days: every weekday and month comes round.
DAYS_LOOKED_AT = 2 * 366


def field_values(text: str, low: int, high: int) -> set[int]:
    """Return the values a cron field matches (``*``, ``a-b``, ``*/n``, ``a-b/n``, lists)."""
    values: set[int] = set()
    for part in text.split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if span == "*":
            first, last = low, high
        elif "-" in span:
            first, last = (int(x) for x in span.split("-", 1))
        else:
            first = int(span)
            last = high if step_text else first
        if step < 1 or first < low or last > high or first > last:
            raise ValueError(f"field {text!r} is out of range {low}-{high}")
        values.update(range(first, last + 1, step))
    return values


def interval_minutes(expression: str) -> int:
    """Return the longest gap, in minutes, between two runs of a five-field expression."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError("expected 5 fields (minute hour day month weekday)")
    minute, hour, dom, month, dow = fields
    times = sorted(
        h * 60 + m for h in field_values(hour, 0, 23) for m in field_values(minute, 0, 59)
    )
    if (dom, month, dow) == ("*", "*", "*"):
        gaps = [b - a for a, b in itertools.pairwise(times)] + [times[0] + DAY_MINUTES - times[-1]]
        return max(gaps)
    days = _days(dom, month, dow)
    if not days:
        raise ValueError("no day matches")
    instants = [d * DAY_MINUTES + t for d in days for t in times]
    gaps = [b - a for a, b in itertools.pairwise(instants)]
    return max(gaps) if gaps else DAYS_LOOKED_AT * DAY_MINUTES


def _days(dom: str, month: str, dow: str) -> list[int]:
    """Return the day numbers (from an arbitrary Monday) that match, cron's OR rule kept:
    with both the day of month and the weekday restricted, either one matching will do."""
    doms = field_values(dom, 1, 31)
    months = field_values(month, 1, 12)
    dows = {d % 7 for d in field_values(dow, 0, 7)}  # 7 is Sunday too
    start = date(2024, 1, 1)
    matched = []
    for number in range(DAYS_LOOKED_AT):
        day = start + timedelta(days=number)
        if day.month not in months:
            continue
        weekday = (day.weekday() + 1) % 7  # cron: 0 is Sunday
        by_dom, by_dow = day.day in doms, weekday in dows
        both = dom != "*" and dow != "*"
        if (by_dom or by_dow) if both else (by_dom and by_dow):
            matched.append(number)
    return matched


def warnings(interval: int) -> list[str]:
    """Return what in the settings does not fit a schedule of ``interval`` minutes."""
    try:
        environ = load_environment()
        settings = Settings.from_env(environ)
    except RefreshError as exc:
        return [f"the settings cannot be read ({exc.message}); `analytics-refresh check` shows why"]
    # The deadline as the runs will have it: derived from this interval unless set.
    deadline = settings.deadline
    if not environ.get("REFRESH_DEADLINE", "").strip():
        deadline = deployment.default_deadline(interval)
    found = list(deployment.schedule_warnings(deadline, interval, settings.timeout))
    short = deployment.change_query_warning(interval, settings.change_sql)
    if short:
        found.append(
            short.replace(f"REFRESH_INTERVAL_MINUTES={interval:g}", f"a run every {interval} min")
            + "; set REFRESH_CHANGE_SQL_FILE (e.g. dashboard_api/change_keys.sql) in .env first"
        )
    written = environ.get("REFRESH_INTERVAL_MINUTES", "").strip()
    if written and written != str(interval):
        found.append(
            f"REFRESH_INTERVAL_MINUTES={written} in .env or the environment, but the schedule "
            f"runs every {interval} min: the scheduled runs get {interval}; set "
            f"REFRESH_INTERVAL_MINUTES={interval} in .env so that `check` by hand agrees"
        )
    return found


def write_dotenv(path: Path, interval: int) -> str | None:
    """Set ``REFRESH_INTERVAL_MINUTES=interval`` in the ``.env`` at ``path`` (its line
    replaced, or one added); return what changed, or None when it already said so."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    line = f"{VARIABLE}={interval}"
    pattern = re.compile(rf"^[ \t]*(?:export[ \t]+)?{VARIABLE}[ \t]*=.*$", re.M)
    present = [match.group(0).strip() for match in pattern.finditer(text)]
    if present == [line]:
        return None
    if present:
        new = pattern.sub(line, text)
    else:
        new = text + ("\n" if text and not text.endswith("\n") else "") + line + "\n"
    path.write_text(new, encoding="utf-8")
    return f"{line} in {path} ({'replaced the line there' if present else 'added'})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analytics_refresh.config.schedule")
    parser.add_argument("expression", nargs="?", help="a five-field crontab expression")
    parser.add_argument("--minutes", type=int, help="every N minutes instead")
    parser.add_argument(
        "--write-dotenv",
        action="store_true",
        help="also set REFRESH_INTERVAL_MINUTES in ./.env, so that commands run by hand "
        "judge the same schedule",
    )
    args = parser.parse_args(argv)
    try:
        interval = args.minutes if args.minutes else interval_minutes(args.expression or "")
    except ValueError as exc:
        print(f"schedule {args.expression!r}: {exc}", file=sys.stderr)
        return 2
    if args.write_dotenv:
        changed = write_dotenv(Path(".env"), interval)
        if changed:
            print(f"Set {changed}", file=sys.stderr)
    print(interval)
    for warning in warnings(interval):
        print(f"Warning: {warning}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
