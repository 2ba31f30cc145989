"""What the freshness report costs on a long history: time and memory of the real command.

One scratch database with ``--clients`` connected clients and ``--days`` days of runs
(history_data.py: ``--runs-per-day`` runs a day, three keys per client, 0.5% of the jobs
failing, each success row naming the one before it as the runner writes it). It times,
as a real process over ``--repeat`` rounds (median), ``analytics-refresh report --days N
--json`` and the HTML report, and reads each process's peak resident memory. The goal:
5 s and 200 MB at 5,000 clients x 30 days.

``python bench/report_bench.py`` prints the figures, each goal met or missed, and the
command line; ``--quick`` is a smoke run of under a minute.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import history_data as data
from history_bench import DROPPED_PREFIXES, start_server

GOAL_SECONDS = 5.0
GOAL_MB = 200.0


def environment(url: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(DROPPED_PREFIXES)}
    return {**env, "DATABASE_URL": url}


def time_report(env: dict, *flags: str) -> tuple[float, float]:
    """Run the report once; return its wall seconds and peak resident MB."""
    started = time.perf_counter()
    done = subprocess.run(
        [str(data.CLI), "report", *flags],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"report {' '.join(flags)}: exit {done.returncode}\n{done.stderr}")
    # ru_maxrss of the children is the largest of them so far: each round is its own child.
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return seconds, peak


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--days", type=int, default=30, help="days of history and of report")
    parser.add_argument("--runs-per-day", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the median is shown")
    parser.add_argument("--quick", action="store_true", help="500 clients x 3 days, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.days, args.repeat = 500, 3, 1
    with tempfile.TemporaryDirectory(prefix="report-bench-") as work:
        server, embedded = start_server(Path(work))
        try:
            ds = data.build(
                server,
                "history",
                "report_bench",
                clients=args.clients,
                days=args.days,
                runs_per_day=args.runs_per_day,
                env=environment(server),
                progress=lambda line: print(line, file=sys.stderr),
            )
            env = environment(ds.url)
            out = Path(work) / "freshness-report.html"
            rounds = {"json": [], "html": []}
            peaks = {"json": 0.0, "html": 0.0}
            for _ in range(args.repeat):
                for name, flags in (
                    ("json", ("--days", str(args.days), "--json", "--out", str(out) + ".json")),
                    ("html", ("--days", str(args.days), "--out", str(out))),
                ):
                    seconds, peak = time_report(env, *flags)
                    rounds[name].append(seconds)
                    peaks[name] = max(peaks[name], peak)
            size = out.stat().st_size
        finally:
            if embedded is not None:
                embedded.cleanup()
    print(
        f"Freshness report on {ds.clients:,} clients x {ds.days} days "
        f"({ds.keys:,} keys, {ds.job_rows:,} refresh_jobs rows), median of {args.repeat}:"
    )
    print("| report | seconds | peak MB |")
    print("|---|---|---|")
    for name in ("json", "html"):
        print(f"| --{name} | {statistics.median(rounds[name]):.2f} | {peaks[name]:.0f} |")
    print(f"HTML file: {size / 1024:.0f} KiB")
    for name in ("json", "html"):
        seconds = statistics.median(rounds[name])
        met = seconds <= GOAL_SECONDS and peaks[name] <= GOAL_MB
        print(
            f"{'MET' if met else 'MISSED'}: --{name} within {GOAL_SECONDS:g} s and "
            f"{GOAL_MB:g} MB ({seconds:.2f} s, {peaks[name]:.0f} MB)"
        )
    print("command: python bench/report_bench.py " + shlex.join(argv or sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
