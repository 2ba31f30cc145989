"""The run options, shared by ``analytics-refresh run``, the cron script and the manual run.

Each option with an environment twin is parsed by that variable's own parser
(``settings.flag_type``), so ``--deadline 0.5`` and ``REFRESH_DEADLINE=0.5`` are refused
alike, and ``--help`` names the variable.
"""

from __future__ import annotations

import argparse
import sys
import uuid

from .errors import UsageError
from .settings import TRIGGERS, Settings, flag_type, number, parse_platforms


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting, so one place maps the exit code."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        raise UsageError(f"{self.prog}: {message}", hint=f"see {self.prog} --help")

    def exit(self, status=0, message=None):
        if message:
            sys.stderr.write(message)
        raise SystemExit(status)


def client_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a UUID") from None


def platforms(text: str) -> tuple[str, ...]:
    try:
        return parse_platforms(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (as REFRESH_PLATFORMS), got {text!r}") from None


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Add the run options; each names its environment twin."""
    group = parser.add_argument_group("run options (each overrides its environment variable)")
    group.add_argument(
        "--client",
        action="append",
        type=client_id,
        metavar="UUID",
        help="refresh only this client (repeatable)",
    )
    group.add_argument(
        "--platform",
        action="append",
        type=platforms,
        metavar="shopify|amazon|all",
        help="refresh only this platform (repeatable) [env REFRESH_PLATFORMS]",
    )
    group.add_argument(
        "--dry-run", action="store_true", help="plan and print the jobs to stdout, call nothing"
    )
    group.add_argument(
        "--concurrency",
        type=flag_type("REFRESH_CONCURRENCY"),
        metavar="N",
        help="most requests in flight, 1 to 1024 [env REFRESH_CONCURRENCY, default 4]",
    )
    group.add_argument(
        "--deadline",
        type=flag_type("REFRESH_DEADLINE"),
        metavar="SECONDS",
        help="no job starts this long after the process started [env REFRESH_DEADLINE, "
        "default 11/12 of REFRESH_INTERVAL_MINUTES: 6600 for 120]",
    )
    group.add_argument(
        "--shard",
        type=flag_type("REFRESH_SHARD"),
        metavar="INDEX/COUNT",
        help="take only this shard of the clients [env REFRESH_SHARD]",
    )
    group.add_argument(
        "--trigger",
        choices=TRIGGERS,
        default=None,
        help="recorded with the run (default: manual when standard input is a terminal, else cron)",
    )
    verbosity = group.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-v", "--verbose", action="store_true", help="log debug detail [env LOG_LEVEL=DEBUG]"
    )
    verbosity.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="log warnings and errors only [env LOG_LEVEL=WARNING]",
    )


def default_trigger() -> str:
    """``manual`` when a person started the run from a terminal, else ``cron``."""
    stdin = sys.stdin
    try:
        return "manual" if stdin is not None and stdin.isatty() else "cron"
    except (ValueError, OSError):  # a closed stdin
        return "cron"


def apply_run_options(settings: Settings, args: argparse.Namespace) -> Settings:
    """Return ``settings`` with the command line's run options on top."""
    trigger = args.trigger or default_trigger()
    # A scheduled run is a deployment: it never falls back to the embedded database.
    changes: dict = {"trigger": trigger, "scheduled": trigger == "cron"}
    if args.client:
        changes["clients"] = tuple(dict.fromkeys(args.client))
    if args.platform:
        chosen = {p for group in args.platform for p in group}
        changes["platforms"] = tuple(p for p in ("shopify", "amazon", "all") if p in chosen)
    if args.dry_run:
        changes["dry_run"] = True
    for name in ("concurrency", "deadline", "shard"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.verbose:
        changes["log_level"] = "DEBUG"
    elif args.quiet:
        changes["log_level"] = "WARNING"
    return settings.replace(**changes)


def int_between(low: int, high: int):
    """Return an argparse type accepting whole numbers from ``low`` to ``high``."""
    parse = number(int, low, high)

    def parse_flag(text: str) -> int:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{exc}, got {text!r}") from None

    return parse_flag


def add_sample_options(parser) -> None:
    """Add the sizes of the sample data (demo and db seed)."""
    parser.add_argument(
        "--clients",
        type=int_between(1, 10_000),
        default=4,
        metavar="N",
        help="demo clients; every fourth has only a disconnected credential (default 4)",
    )
    parser.add_argument(
        "--skus",
        type=int_between(1, 100_000),
        default=200,
        metavar="N",
        help="products per client and platform (default 200)",
    )
    parser.add_argument(
        "--orders-per-day",
        type=int_between(1, 100_000),
        default=60,
        metavar="N",
        help="orders per client, platform and day over the 90 days of history (default 60)",
    )
