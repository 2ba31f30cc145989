"""A day of traffic, two ways: the classic full refresh every 2 h, and change-aware runs.

(a) runs every job every two hours at the even hours (12 runs a day); (b) runs every
10 minutes with change detection (144 runs a day), each run deciding with the runner's own
``changes.decide``. Both play the same traffic: each client has shopify and amazon
connected (3 jobs: shopify, amazon, all), and new data arrives for a share of the clients
each hour, 10% from 08:00 to 20:00 and 1% at night, at random moments (seeded). As with the
reference change query, every key carries its window's UTC day, so every key changes at
midnight; each refreshed copy expires ``--cache-ttl`` after its refresh (the API's
``expires_at``), and (b) refreshes a copy that would expire within the lead (the interval
and a run). The backend is C workers with a fixed service time per job. It is a
discrete-event simulation (bench/change_sim.py): a simulated clock, no HTTP. One warm-up
day comes first, then the measured day, then a few hours so that the day's last changes
are refreshed. Short copies are checked twice: simulated (``CACHE_TTL=60``, change-aware
runs every 10 seconds for an hour) and for real (bench/change_readers.py: the reference
API, the runner's own process every 10 seconds, readers counting cold answers).

The records are measured on the real runner (bench/change_records.py): its own process
against PostgreSQL and the stub backend, at ``--record-clients`` x 3 keys, a full run, a
classic run, and a quiet run after 15 keys' versions were bumped; the rows and log lines
per day of both modes are those runs' costs applied to the simulated day's runs.

``python bench/change_bench.py`` prints the issue's goals with the measured figures, met or
missed, and the command that produced them. It takes a few minutes (``--quick``: seconds).
"""

from __future__ import annotations

import argparse
import math
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import change_readers
import change_records
import change_sim
from change_sim import DAY, START, Simulation

from analytics_refresh import promise

CLASSIC_INTERVAL = 2 * 3600.0
CHANGE_INTERVAL = 600.0
# The window's day in every key refreshes each key once a day already: the max age is
# only the net under it, a week (at 1440 every key would also come due once a day).
MAX_AGE_MINUTES = 10080.0
# Longer than a day: the midnight refresh replaces every copy before it would expire.
CACHE_TTL = 2 * 86400.0
API_DEFAULT_TTL = 10800.0
CHANGED = 15
WARM_UP_DAYS = 1
TAIL_HOURS = 4
SLOT = 600.0


def percentile(values: list[float], share: float) -> float:
    """Nearest rank: the smallest value at least ``share`` of the values do not exceed."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def hours_minutes(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m{seconds % 60:04.1f}s"


def figures(log, traffic, begin: float, end: float) -> dict:
    waits, never = change_sim.staleness(log, traffic, begin, end)
    slots = change_sim.slot_load(log, begin, end, SLOT)
    age, age_key, age_at = change_sim.oldest_age(log, begin, end)
    runs = [r for r in log.runs if begin <= r[0] < end]
    kinds: dict[str, int] = {}
    for at, kind in log.kinds:
        if begin <= at < end:
            kinds[kind] = kinds.get(kind, 0) + 1
    return {
        "work": change_sim.work_seconds(log, begin, end),
        "jobs": sum(r[2] for r in runs),
        "runs": len(runs),
        "locked": sum(begin <= t < end for t in log.locked),
        "longest_run": max(r[1] - r[0] for r in runs),
        "stale_median": statistics.median(waits),
        "stale_p95": percentile(waits, 0.95),
        "stale_max": max(waits),
        "stale_count": len(waits),
        "never": never,
        "oldest": age,
        "oldest_key": age_key,
        "oldest_at": age_at,
        "peak": max(slots),
        "mean": statistics.fmean(slots),
        "kinds": kinds,
    }


def table(
    a, b, records, logs, begin, end, cold, args, readers
) -> tuple[str, list[tuple[bool, str]]]:
    ratio = b["work"] / a["work"]
    day_runs = {n: [r for r in logs[n].runs if begin <= r[0] < end] for n in ("a", "b")}
    # At the records' scale: the simulated day's refreshes per run, times the client ratio.
    scale = args.record_clients / args.clients
    rows_a, rows_b = (records.rows_per_day(day_runs[n], scale) for n in ("a", "b"))
    lines_a, lines_b = (records.lines_per_day(day_runs[n], scale) for n in ("a", "b"))
    quiet = records.quiet
    m_end, m_covered, m_keys = b["midnight"]
    served = b["expired"] == 0
    goals = [
        (
            m_covered == m_keys and served,
            f"across midnight: {m_covered:,} of {m_keys:,} dashboards cover the new day once "
            f"the first run past it ended (+{hours_minutes(m_end - begin)}); "
            f"{b['expired'] / 60:,.0f} key-minutes with an expired copy all day",
        ),
        (
            cold == 0 and readers.cold == 0,
            f"CACHE_TTL=60, runs every 10 s: {readers.cold} of {readers.reads} reads of the "
            f"reference API met a cold cache after the first run ({readers.runs} real runs, "
            f"{readers.refreshes} refreshes); simulated, {cold:,.0f} key-seconds expired",
        ),
        (
            quiet.rows <= 1000 and quiet.log_lines <= 100 and quiet.seconds <= 5,
            f"a run at {records.keys:,} keys where {records.changed} changed: "
            f"{quiet.rows:,} rows, {quiet.log_lines} log lines, {quiet.seconds:.2f} s "
            "(goal at most 1,000 rows, 100 lines, 5 s)",
        ),
        (ratio <= 1 / 5, f"backend work per day (b)/(a) {ratio:.3f}, goal at most 1/5"),
        (
            b["stale_p95"] <= 15 * 60,
            f"staleness after change p95 {minutes(b['stale_p95'])} min, goal at most 15 min",
        ),
        (
            rows_b <= rows_a,
            f"rows written per day at {args.record_clients:,} clients (b) {rows_b:,.0f} vs "
            f"(a) {rows_a:,.0f}, goal at most (a)",
        ),
    ]
    mark = ["met" if ok else "MISSED" for ok, _ in goals]
    rows = [
        ("figure", "goal", "(a) classic, every 2 h", "(b) change-aware, every 10 min", "(b)"),
        ("---", "---", "---", "---", "---"),
        (
            "across midnight: dashboards covering the new day after the first run past it",
            "all, served from the cache",
            f"{a['midnight'][1]:,} / {a['midnight'][2]:,}",
            f"{m_covered:,} / {m_keys:,}; expired copies {b['expired'] / 60:,.0f} key-min",
            mark[0],
        ),
        (
            "readers meeting a cold cache, CACHE_TTL=60, change-aware runs every 10 s",
            "none after the first run",
            "",
            f"{readers.cold} of {readers.reads} reads (real API, {readers.seconds:g} s); "
            f"simulated: {cold:,.0f} key-seconds expired",
            mark[1],
        ),
        (
            f"a run at {records.keys:,} keys where {records.changed} changed",
            "at most 1,000 rows written, 100 log lines, 5 s",
            f"full run: {records.classic.rows:,} rows, {records.classic.log_lines:,} lines, "
            f"{records.classic.seconds:.1f} s",
            f"{quiet.rows:,} rows, {quiet.log_lines} lines, {quiet.seconds:.2f} s",
            mark[2],
        ),
        (
            "backend work per day, change-aware, with TTL and day boundary",
            "at most 1/5 of classic",
            f"{a['work']:,.0f} s ({a['jobs']:,} jobs)",
            f"{b['work']:,.0f} s ({b['jobs']:,} jobs) = {ratio:.3f} x (a)",
            mark[3],
        ),
        (
            "staleness after change, median / p95 / max min",
            "p95 at most 15 minutes",
            " / ".join(minutes(a[k]) for k in ("stale_median", "stale_p95", "stale_max")),
            " / ".join(minutes(b[k]) for k in ("stale_median", "stale_p95", "stale_max")),
            mark[4],
        ),
        (
            f"rows written per day; log lines per day ({args.record_clients:,} clients)",
            "rows at most classic's",
            f"{rows_a:,.0f}; {lines_a:,.0f}",
            f"{rows_b:,.0f}; {lines_b:,.0f}",
            mark[5],
        ),
        (
            "oldest dashboard age; peak / mean load per 10-minute slot",
            "",
            f"{hours_minutes(a['oldest'])}; {a['peak'] / a['mean']:.2f}",
            f"{hours_minutes(b['oldest'])}; {b['peak'] / b['mean']:.2f}",
            "",
        ),
    ]
    text = "\n".join("| " + " | ".join(r) + " |" for r in rows)
    return text, goals


def simulate(traffic, args, interval, aware, until, *, ttl, max_age, name):
    sim = Simulation(
        traffic,
        workers=args.workers,
        service_seconds=args.service_seconds,
        name=name,
        initial_success=START - CLASSIC_INTERVAL,
        start_jitter=args.start_jitter,
        seed=args.seed,
        cache_ttl=ttl,
        lead=interval + interval * promise.RUN_SHARE,
    )
    return sim.play(START, interval, until, change_aware=aware, max_age_minutes=max_age)


def short_copies(args) -> tuple[float, int]:
    """Key-seconds with an expired copy after the first run, CACHE_TTL=60, runs every 10 s."""
    traffic = change_sim.make_traffic(
        min(args.clients, 100), 2, args.seed, day_share=args.day_share, night_share=0.0
    )
    log = simulate(
        traffic,
        argparse.Namespace(**{**vars(args), "service_seconds": 0.05}),
        10.0,
        True,
        START + 3600,
        ttl=60.0,
        max_age=MAX_AGE_MINUTES,
        name="short",
    )
    first_end = log.runs[0][1]
    return change_sim.expired_seconds(log, 60.0, first_end, START + 3600), len(log.runs)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000, help="clients (default 1000)")
    parser.add_argument("--workers", type=int, default=8, help="backend workers C (default 8)")
    parser.add_argument(
        "--service-seconds",
        type=float,
        default=2.0,
        help="service time of one refresh job (default 2)",
    )
    parser.add_argument("--seed", type=int, default=13, help="traffic seed (default 13)")
    parser.add_argument(
        "--quick", action="store_true", help="200 clients, 1,000 for the records, unless given"
    )
    parser.add_argument(
        "--day-share",
        type=float,
        default=0.10,
        help="share of clients with new data per hour, 08:00-20:00 (0.10)",
    )
    parser.add_argument(
        "--night-share",
        type=float,
        default=0.01,
        help="share of clients with new data per hour at night (0.01)",
    )
    parser.add_argument(
        "--start-jitter",
        type=float,
        default=0.0,
        help="each run plans up to this many seconds later than "
        f"{change_sim.STARTUP_SECONDS:g} s after its tick, at random (0)",
    )
    parser.add_argument(
        "--cache-ttl",
        type=float,
        default=CACHE_TTL,
        help=f"seconds a refreshed copy lives (default {CACHE_TTL:g})",
    )
    parser.add_argument(
        "--max-age-minutes",
        type=float,
        default=MAX_AGE_MINUTES,
        help=f"(b)'s REFRESH_MAX_AGE_MINUTES (default {MAX_AGE_MINUTES:g})",
    )
    parser.add_argument(
        "--record-clients",
        type=int,
        default=10_000,
        help="clients of the real runs that measure the records (default 10,000)",
    )
    args = parser.parse_args(argv)
    if args.quick and "--clients" not in argv:
        args.clients = 200
    if args.quick and "--record-clients" not in argv:
        args.record_clients = 1000

    started = time.monotonic()
    begin = START + WARM_UP_DAYS * DAY
    end = begin + DAY
    until = end + TAIL_HOURS * 3600
    traffic = change_sim.make_traffic(
        args.clients,
        round((until - START) / 3600),
        args.seed,
        day_share=args.day_share,
        night_share=args.night_share,
    )
    logs = {
        "a": simulate(
            traffic, args, CLASSIC_INTERVAL, False, until, ttl=args.cache_ttl,
            max_age=args.max_age_minutes, name="a",
        ),
        "b": simulate(
            traffic, args, CHANGE_INTERVAL, True, until, ttl=args.cache_ttl,
            max_age=args.max_age_minutes, name="b",
        ),
    }  # fmt: skip
    a, b = (figures(logs[n], traffic, begin, end) for n in ("a", "b"))
    for name, f in (("a", a), ("b", b)):
        f["expired"] = change_sim.expired_seconds(logs[name], args.cache_ttl, begin, end)
        f["midnight"] = change_sim.covering_new_day(logs[name], begin)
    cold, short_runs = short_copies(args)
    # The same day with the reference API's default lifetime: copies refreshed ahead.
    default_ttl = simulate(
        traffic, args, CHANGE_INTERVAL, True, until, ttl=API_DEFAULT_TTL,
        max_age=args.max_age_minutes, name="b3h",
    )  # fmt: skip
    default_ratio = change_sim.work_seconds(default_ttl, begin, end) / a["work"]
    with tempfile.TemporaryDirectory(prefix="change-bench-") as workdir:
        records = change_records.measure(args.record_clients, CHANGED, Path(workdir))
        readers = change_readers.measure(Path(workdir), seconds=30 if args.quick else 120)
    text, goals = table(a, b, records, logs, begin, end, cold, args, readers)

    day_changes = sum(begin <= t < end for t, _, _ in traffic.arrivals)
    print(
        "Mode: discrete-event simulation on a simulated clock (bench/change_sim.py), with the "
        "runner's own changes.decide, ordering.schedule and ordering.JobQueue; the backend is "
        f"{args.workers} workers of {args.service_seconds:g} s per job, not the HTTP stub. "
        "Records: the real runner's process, PostgreSQL and the stub backend "
        "(bench/change_records.py)."
    )
    print(
        f"Set-up: {args.clients:,} clients x (shopify, amazon, all) = {args.clients * 3:,} "
        f"jobs; new data for {args.day_share:.0%} of clients per hour 08:00-20:00 and "
        f"{args.night_share:.0%} at night, one platform each, seed {args.seed}: "
        f"{day_changes:,} arrivals in the measured day (day 2; day 1 warms up). Copies live "
        f"{args.cache_ttl:g} s; (b): max age {args.max_age_minutes:g} min, lead "
        f"{CHANGE_INTERVAL * (1 + promise.RUN_SHARE):g} s; every key's window moves at "
        f"midnight UTC. Short copies: {short_runs} runs every 10 s over an hour, CACHE_TTL=60."
    )
    kinds = b["kinds"]
    print(
        "(b) jobs by kind over the day: "
        + ", ".join(f"{k} {kinds.get(k, 0):,}" for k in ("changed", "expiring", "due"))
        + f", unchanged (skipped) {kinds.get('unchanged', 0):,}; "
        f"changes never refreshed in the span: (a) {a['never']}, (b) {b['never']}."
    )
    print(
        f"(b) with the API's default CACHE_TTL={API_DEFAULT_TTL:g}: backend work "
        f"{default_ratio:.3f} x (a), every copy refreshed before it expires."
    )
    for name, run in (("full (every key)", records.full), ("classic", records.classic),
                      (f"quiet ({CHANGED} keys changed)", records.quiet)):  # fmt: skip
        print(
            f"Real run at {records.keys:,} keys, {name}: {run.jobs:,} refreshes, "
            f"{run.rows:,} rows written, {run.log_lines:,} log lines, {run.seconds:.2f} s "
            f"(exit {run.exit_code})."
        )
    print()
    print(text)
    print()
    for ok, line in goals:
        print(f"- {'met' if ok else 'MISSED'}: {line}")
    print()
    print(f"Command: .venv/bin/python bench/change_bench.py {shlex.join(argv)}".rstrip())
    print(f"({time.monotonic() - started:.1f} s)")
    return 0 if all(ok for ok, _ in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
