"""``analytics-refresh report``: the freshness report as one HTML file, or its figures as JSON."""

from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
from pathlib import Path

from .. import db
from ..settings import Settings
from .figures import STATEMENT_SECONDS, Figures, collect

DEFAULT_OUT = "freshness-report.html"


def run_report(settings: Settings, *, days: int, out: str | None, as_json: bool) -> int:
    """Write the report (or print its JSON); return 0."""
    gc.disable()  # a short-lived command building many small objects, freeing none early
    url = db.database_url(settings)
    with db.connection(url, statement_ceiling=STATEMENT_SECONDS) as conn:
        db.require_runner_tables(conn)
        db.require_credentials_table(conn)
        figures = collect(conn, settings, days, url)
    if as_json:
        text = json.dumps(as_dict(figures, days), separators=(",", ":"))
        if out:
            _write(Path(out), text + "\n")
        else:
            sys.stdout.write(text + "\n")
        return 0
    path = Path(out or DEFAULT_OUT)
    _write_html(path, figures, days)
    day = figures.days[-1] if figures.days else None
    share = "" if day is None or day.within_promise is None else f"{day.within_promise:.1%}"
    print(f"Freshness report written to {path.resolve()}")
    if share:
        print(f"Today (UTC) so far: {share} of key-minutes within the promise")
    return 0


def write_report(settings: Settings, path: Path, *, days: int = 1) -> Path:
    """Write the HTML report of the last ``days`` days to ``path``; return its full path."""
    url = db.database_url(settings)
    with db.connection(url, statement_ceiling=STATEMENT_SECONDS) as conn:
        figures = collect(conn, settings, days, url)
    _write_html(path, figures, days)
    return path.resolve()


def _write_html(path: Path, figures: Figures, days: int) -> None:
    from .html import render

    _write(path, render(figures, days))


def _write(path: Path, text: str) -> None:
    """Write atomically: a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".report-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        # mkstemp makes the file private; a report is for whoever may read the folder.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _iso(value) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def as_dict(f: Figures, days: int) -> dict:
    """Return the figures as the documented JSON (times in UTC)."""
    ran = sum(d.ran for d in f.days)
    unchanged = sum(d.unchanged for d in f.days)
    judged_keys = sorted(f.judged, key=lambda k: (-f.key_late.get(k, 0), k))
    return {
        "generated_at": _iso(f.now),
        "timezone": "UTC",
        "window": {"from": _iso(f.start), "to": _iso(f.now), "days": days},
        "mode": f.bounds.mode,
        "promise": {
            "text": f.bounds.describe(),
            "age_seconds": f.bounds.age_seconds,
            "change_seconds": f.bounds.change_seconds,
            "expiry": f.bounds.expiry,
        },
        "keys_judged": f.keys_judged,
        "days": [
            {
                "date": d.date,
                "within_promise": d.within_promise,
                "breaches": d.breaches,
                "breach_minutes": d.late_minutes,
                "latency_p95_s": d.latency["p95_s"] if d.latency else None,
                "latency_median_s": d.latency["median_s"] if d.latency else None,
                "latency_max_s": d.latency["max_s"] if d.latency else None,
                "changes_shown": d.latency["count"] if d.latency else 0,
                "counted_minutes": d.counted_minutes,
                "jobs_ran": d.ran,
                "jobs_unchanged": d.unchanged,
                "worst_keys": [
                    {"client_id": k[0], "platform": k[1], "late_minutes": m} for k, m in d.worst
                ],
            }
            for d in f.days
        ],
        "clients": [
            {"client_id": c, "backend_seconds": s}
            for c, s in sorted(f.client_seconds.items(), key=lambda cs: (-cs[1], cs[0]))
        ],
        "keys": [
            {
                "client_id": k[0],
                "platform": k[1],
                "late_minutes": f.key_late.get(k, 0),
                "late_hours": round(f.key_late.get(k, 0) / 60, 4),
            }
            for k in judged_keys
        ],
        "skipped_unchanged_share": round(unchanged / (ran + unchanged), 6)
        if ran + unchanged
        else None,
        "failures": {
            "reasons": [
                {"reason": r, "count": n, "keys": keys, "example": example}
                for r, n, keys, example in f.reasons
            ],
            "failing_keys": [
                {
                    "client_id": k[0],
                    "platform": k[1],
                    "failures": n,
                    "last_failed_at": _iso(at),
                    "consecutive_failures": streak,
                    "last_error": err,
                }
                for k, n, at, streak, err in f.failing_keys
            ],
        },
    }
