"""A day of traffic, two ways: the classic full refresh every 2 h, and change-aware runs.

(a) runs every job every two hours at the even hours (12 runs a day); (b) runs every
10 minutes with change detection and a 24 h max age (144 runs a day), each run deciding with
the runner's own ``changes.decide``. Both play the same traffic: each client has shopify and
amazon connected (3 jobs: shopify, amazon, all), and new data arrives for a share of the
clients each hour, 10% from 08:00 to 20:00 and 1% at night, at random moments (seeded).
The backend is C workers with a fixed service time per job. It is a discrete-event
simulation (bench/change_sim.py): a simulated clock, no HTTP. One warm-up day comes first
((b) starts from the state the last classic run left), then the measured day, then a few
hours so that the day's last changes are refreshed.

``python bench/change_bench.py`` prints the figures of both side by side with the goals
for (b), met or missed, and the command that produced them. It takes a few seconds.
"""

from __future__ import annotations

import argparse
import math
import shlex
import statistics
import sys
import time

import change_sim
from change_sim import DAY, START, Simulation

CLASSIC_INTERVAL = 2 * 3600.0
CHANGE_INTERVAL = 600.0
MAX_AGE_MINUTES = 1440.0
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


def table(a: dict, b: dict) -> tuple[str, list[tuple[bool, str]]]:
    ratio = b["work"] / a["work"]
    max_age = MAX_AGE_MINUTES * 60
    age_goal = max_age + CHANGE_INTERVAL
    b_load = b["peak"] / b["mean"]
    goals = [
        (ratio <= 1 / 5, f"work (b)/(a) {ratio:.3f}, goal at most 1/5 (0.200)"),
        (
            b["stale_p95"] <= 15 * 60,
            f"staleness p95 {minutes(b['stale_p95'])} min, goal at most 15 min",
        ),
        (
            b["oldest"] <= age_goal,
            f"oldest age {hours_minutes(b['oldest'])}, goal at most {hours_minutes(age_goal)}"
            + (f" ({b['oldest'] - age_goal:.2f} s over)" if b["oldest"] > age_goal else ""),
        ),
        (b_load <= 3, f"peak/mean per 10-minute slot {b_load:.2f}, goal at most 3"),
    ]
    mark = ["met" if ok else "MISSED" for ok, _ in goals]

    def work(f):
        return f"{f['work']:,.0f} s ({f['jobs']:,} jobs, {f['runs']} runs)"

    def stale(f):
        return " / ".join(minutes(f[k]) for k in ("stale_median", "stale_p95", "stale_max"))

    def load(f):
        return f"{f['peak'] / f['mean']:.2f} ({f['peak']:,.0f} / {f['mean']:,.0f})"

    rows = [
        (
            "figure (measured day)",
            "(a) classic, every 2 h",
            "(b) change-aware, every 10 min",
            "goal for (b)",
            "(b)",
        ),
        ("---", "---", "---", "---", "---"),
        (
            "backend work per day, busy worker-s",
            work(a),
            f"{work(b)} = {ratio:.3f} x (a)",
            "at most 1/5 of (a)",
            mark[0],
        ),
        (
            "staleness after change, median / p95 / max min",
            stale(a),
            stale(b),
            "p95 at most 15 min",
            mark[1],
        ),
        (
            "oldest dashboard age",
            hours_minutes(a["oldest"]),
            hours_minutes(b["oldest"]),
            f"at most {hours_minutes(age_goal)}",
            mark[2],
        ),
        (
            "peak / mean load per 10-minute slot, busy worker-s",
            load(a),
            load(b),
            "at most 3",
            mark[3],
        ),
        (
            "longest run; runs that found the lock held (exit 5)",
            f"{hours_minutes(a['longest_run'])}; {a['locked']}",
            f"{hours_minutes(b['longest_run'])}; {b['locked']}",
            "",
            "",
        ),
    ]
    text = "\n".join("| " + " | ".join(r) + " |" for r in rows)
    return text, goals


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
    parser.add_argument("--quick", action="store_true", help="200 clients unless --clients")
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
    args = parser.parse_args(argv)
    if args.quick and "--clients" not in argv:
        args.clients = 200

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
    logs = {}
    for name, interval, aware in (("a", CLASSIC_INTERVAL, False), ("b", CHANGE_INTERVAL, True)):
        sim = Simulation(
            traffic,
            workers=args.workers,
            service_seconds=args.service_seconds,
            name=name,
            initial_success=START - CLASSIC_INTERVAL,
            start_jitter=args.start_jitter,
            seed=args.seed,
        )
        logs[name] = sim.play(
            START, interval, until, change_aware=aware, max_age_minutes=MAX_AGE_MINUTES
        )
    a, b = (figures(logs[n], traffic, begin, end) for n in ("a", "b"))
    text, goals = table(a, b)

    day_changes = sum(begin <= t < end for t, _, _ in traffic.arrivals)
    print(
        "Mode: discrete-event simulation on a simulated clock (bench/change_sim.py), with the "
        "runner's own changes.decide, ordering.schedule and ordering.JobQueue; the backend is "
        f"{args.workers} workers of {args.service_seconds:g} s per job, not the HTTP stub."
    )
    print(
        f"Set-up: {args.clients:,} clients x (shopify, amazon, all) = {args.clients * 3:,} "
        f"jobs; new data for {args.day_share:.0%} of clients per hour 08:00-20:00 and "
        f"{args.night_share:.0%} at night, one platform each, seed {args.seed}: "
        f"{day_changes:,} arrivals in the measured day (day 2; day 1 warms up). "
        f"(b): max age {MAX_AGE_MINUTES:g} min."
    )
    kinds = b["kinds"]
    print(
        f"(b) jobs by kind over the day: changed {kinds.get('changed', 0):,}, "
        f"due {kinds.get('due', 0):,}, unchanged (skipped) {kinds.get('unchanged', 0):,}; "
        f"changes never refreshed in the span: (a) {a['never']}, (b) {b['never']}."
    )
    print(
        f"(b) oldest age seen on {b['oldest_key'][0]} ({b['oldest_key'][1]}) at "
        f"+{hours_minutes(b['oldest_at'] - begin)} into the day."
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
