"""The tables of bench/README.md (and the soak's in docs/RELIABILITY.md), written by the
benchmarks that measure them.

``python bench/bench_report.py`` runs every benchmark at full size and replaces each
generated section (between ``<!-- bench_report.py: NAME -->`` and
``<!-- /bench_report.py: NAME -->``) with what the benchmark printed, stamped with the
commit it measured and the command; ``--only NAME`` runs some, ``--quick`` runs small sizes
and prints instead of writing. It also renders refresh_bench.py's figures (``report``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def report(results: dict) -> str:
    """Return the markdown tables and the goals, met or missed."""
    rows = {r["name"]: r for r in results["refresh"]}
    lines = [
        "| scenario | jobs ok | wall s (span s) | bound s | span / bound | queue wait / service"
        " | most in flight | 503 share | probe p99 idle -> run ms | limit moves |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["refresh"]:
        lines.append(
            f"| {r['name']} | {r['jobs_ok']} | {r['wall']:.2f} ({r['span']:.2f}) "
            f"| {r['bound']:.2f} | {r['span_ratio']:.2f}x | {r['wait_share']:.0%} "
            f"| {r['max_in_flight']} | {r['shed_share']:.1%} "
            f"| {r['idle_p99'] * 1000:.0f} -> {r['run_p99'] * 1000:.0f} "
            f"| {r['limit_changes']}: {r['limit_path'] or '-'} |"
        )
    cost, plan = results["cost"], results["plan"]
    lines += [
        "",
        "| runner cost | value |",
        "|---|---|",
        f"| jobs (service time 0) | {cost['jobs_ok']} in {cost['wall']:.1f}s |",
        f"| runner CPU per job | {cost['cpu_per_job_ms']:.2f} ms |",
        f"| bare pooled requests GET | {cost['bare_get_ms']:.2f} ms |",
        f"| ratio | {cost['cpu_ratio']:.2f}x |",
        f"| runner peak RSS | {cost['max_rss_mb']:.0f} MB |",
        f"| plan, {plan['clients']:,} clients, --dry-run | {plan['jobs']:,} jobs in "
        f"{plan['wall']:.2f}s, peak RSS {plan['max_rss_mb']:.0f} MB |",
        f"| the same, -q (no line per job) | {plan.get('quiet_wall', 0):.2f}s, peak RSS "
        f"{plan.get('quiet_max_rss_mb', 0):.0f} MB |",
    ]
    lines += ["", *goals(results, rows)]
    return "\n".join(lines)


def goals(results: dict, rows: dict) -> list[str]:
    """Return one line per goal of the issue, each judged on this run's figures."""

    def line(ok: bool, text: str) -> str:
        return f"- {'met' if ok else 'MISSED'}: {text}"

    out = []
    known = rows.get("known C=8, ceiling 8, adaptive")
    if known:
        out.append(
            line(
                known["span_ratio"] <= 1.10,
                f"known capacity within 1.10x of the bound: {known['span_ratio']:.2f}x"
                f" (process wall {known['wall_ratio']:.2f}x)",
            )
        )
        if "sequential_wall" in results:
            speedup = results["sequential_wall"] / known["wall"]
            out.append(
                line(
                    speedup >= 7,
                    f"{speedup:.1f}x faster than the sequential "
                    f"baseline ({results['sequential_wall']:.1f}s)",
                )
            )
    adaptive = rows.get("unknown C=8, ceiling 64, adaptive")
    fixed = rows.get("unknown C=8, fixed 64")
    if adaptive:
        out.append(
            line(
                adaptive["span_ratio"] <= 1.25,
                f"unknown capacity within 1.25x of the bound: {adaptive['span_ratio']:.2f}x"
                f" (process wall {adaptive['wall_ratio']:.2f}x)",
            )
        )
        out.append(
            line(
                adaptive["wait_share"] <= 0.25,
                f"mean queue wait {adaptive['wait_share']:.0%} of mean service"
                + (f" (fixed 64: {fixed['wait_share']:.0%})" if fixed else ""),
            )
        )
        allowed = 2 * adaptive["idle_p99"] + adaptive["median_job"]
        out.append(
            line(
                adaptive["run_p99"] <= allowed,
                f"probe p99 {adaptive['run_p99'] * 1000:.0f} ms during the run, allowed "
                f"{allowed * 1000:.0f} ms"
                + (f" (fixed 64: {fixed['run_p99'] * 1000:.0f} ms)" if fixed else ""),
            )
        )
    shed = rows.get("shedding (503 past queue 2), ceiling 64, adaptive")
    if shed:
        out.append(
            line(
                shed["shed_share"] <= 0.05 and shed["all_ok"],
                f"shedding: {shed['shed_share']:.1%} answered 503, jobs ok {shed['jobs_ok']}",
            )
        )
    cost, plan = results["cost"], results["plan"]
    out.append(
        line(
            cost["cpu_ratio"] <= 2, f"runner CPU per job {cost['cpu_ratio']:.2f}x a bare pooled GET"
        )
    )
    out.append(line(cost["max_rss_mb"] <= 100, f"runner peak RSS {cost['max_rss_mb']:.0f} MB"))
    out.append(
        line(
            plan["wall"] <= 5 and plan["max_rss_mb"] <= 200,
            f"--dry-run of {plan['clients']:,} clients in {plan['wall']:.2f}s, "
            f"{plan['max_rss_mb']:.0f} MB (the plan alone, -q: {plan.get('quiet_wall', 0):.2f}s)",
        )
    )
    return out


# -- the generated sections -----------------------------------------------------------------
@dataclass(frozen=True)
class Section:
    """One generated section: the benchmark command (full size) and its smoke-test size."""

    argv: tuple[str, ...]
    quick: tuple[str, ...] = ()
    # Extra runs whose one figure each makes a table of its own: (row label, column).
    variants: tuple[tuple[str, ...], ...] = field(default=())
    figure: tuple[str, int] | None = None
    doc: str = "bench/README.md"  # the file holding the section
    preamble: bool = False  # keep the lines printed before the first table too


SECTIONS = {
    "api": Section(("bench/api_bench.py",), ("--sizes", "2000,20000", "--runs", "2")),
    "refresh": Section(
        ("bench/refresh_bench.py",),
        ("--clients", "50", "--cost-jobs", "300", "--plan-clients", "3000", "--skip-baseline"),
    ),
    "change": Section(("bench/change_bench.py",), ("--quick",)),
    # The oldest age of (b) across set-ups that once missed the goal.
    "change-cases": Section(
        ("bench/change_bench.py",),
        ("--quick",),
        variants=((), ("--workers", "2"), ("--service-seconds", "10"), ("--seed", "2")),
        figure=("oldest dashboard age", 2),
    ),
    "history": Section(("bench/history_bench.py",), ("--quick",)),
    "soak": Section(
        ("bench/soak.py",), ("--jobs", "500"), doc="docs/RELIABILITY.md", preamble=True
    ),
}


# The machine's load while each section was measured (1-minute averages, before and after):
# the cores may be shared, and every figure but the simulated ones moves with it.
LOADS: list[tuple[float, float]] = []


def run_bench(argv: list[str]) -> str:
    """Run one benchmark as a process of its own and return what it printed."""
    started = time.monotonic()
    before = os.getloadavg()[0]
    print(f"running: python {' '.join(argv)}", file=sys.stderr, flush=True)
    done = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}")
    LOADS.append((before, os.getloadavg()[0]))
    print(f"  {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return done.stdout


def printed_tables(output: str, preamble: bool = False) -> str:
    """Return the tables and goal lines a benchmark printed: from its first table on (or
    from the start), without the figures it printed as JSON, its command line or timing."""
    lines = output.splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith("|")), len(lines))
    kept = [
        line
        for line in lines[0 if preamble else first :]
        if not line.startswith(("{", "command:", "Command:", "running", "runs recorded:"))
        and not re.fullmatch(r"\(\d+(\.\d+)? s\)", line.strip())
    ]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()


def figure_of(output: str, row: str, column: int) -> str:
    """Return one cell of a printed markdown table: the row named ``row``, ``column``."""
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells and cells[0] == row:
            return cells[column]
    raise SystemExit(f"the benchmark printed no row {row!r}")


def measured(section: Section, quick: bool) -> tuple[str, list[str]]:
    """Run a section's benchmark(s); return its markdown and the commands that made it."""
    extra = list(section.quick) if quick else []
    if not section.variants:
        argv = [*section.argv, *extra]
        return printed_tables(run_bench(argv), section.preamble), [argv]
    label, column = section.figure or ("", 0)
    rows = ["| command | " + label + " (b) |", "| --- | --- |"]
    commands = []
    for variant in section.variants:
        argv = [*section.argv, *extra, *variant]
        commands.append(argv)
        value = figure_of(run_bench(argv), label, column)
        rows.append(f"| `.venv/bin/python {' '.join(argv)}` | {value} |")
    return "\n".join(rows), commands


def stamp(commands: list[list[str]]) -> str:
    """Say what measured the figures below: the commit, the machine, the command."""
    commit = _git("rev-parse", "--short=12", "HEAD") or "unknown"
    # Only the code a benchmark runs changes what it measures: prose (these very sections
    # included) and the tests may differ.
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!*.md", ":!tests")
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    server = "the server in DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded"
    shown = "; ".join(f"`.venv/bin/python {' '.join(argv)}`" for argv in commands[:1])
    loads = LOADS[-len(commands) :]
    load = f"{min(min(pair) for pair in loads):.1f}-{max(max(pair) for pair in loads):.1f}"
    return (
        f"Written by `.venv/bin/python bench/bench_report.py` on {when}: commit {commit}"
        f"{' with uncommitted changes' if dirty else ''}, {os.cpu_count()} CPUs (load "
        f"average {load}), Python {platform.python_version()}, {server} PostgreSQL; {shown}."
    )


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def replace_section(text: str, name: str, body: str) -> str:
    """Return ``text`` with the generated section ``name`` replaced by ``body``."""
    begin, end = f"<!-- bench_report.py: {name} -->", f"<!-- /bench_report.py: {name} -->"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"no section {begin} ... {end} to replace")
    return pattern.sub(lambda _: f"{begin}\n{body}\n{end}", text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="small sizes; print, not write")
    args = parser.parse_args(argv)
    for name in args.only or SECTIONS:
        body, commands = measured(SECTIONS[name], args.quick)
        section = f"{stamp(commands)}\n\n{body}"
        if args.quick:
            print(f"--- {name} (quick sizes, not written)\n{section}\n")
            continue
        # Written as each finishes, so a later failure keeps what was measured.
        doc = ROOT / SECTIONS[name].doc
        doc.write_text(replace_section(doc.read_text(encoding="utf-8"), name, section))
        print(f"wrote the {name} section of {SECTIONS[name].doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
