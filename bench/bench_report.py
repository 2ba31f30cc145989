"""The refresh benchmark's table and its goals, from the figures refresh_bench.py gathers."""

from __future__ import annotations


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
