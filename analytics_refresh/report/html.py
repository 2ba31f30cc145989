"""The report as one self-contained HTML page: inline CSS and SVG, no script, no fetch.

The status grid is one line per key: an SVG whose cells are hours (runs of quiet hours
are one cell), each with a ``<title>`` as its tooltip. Every width is relative, so the
page fits a phone's screen as well as a desktop's.
"""

from __future__ import annotations

from datetime import timedelta
from html import escape

from .bounds import duration
from .figures import Figures
from .grid import Cell

STATES = {
    "current": ("#2e9d5b", "current"),
    "late": ("#d64545", "late"),
    "failing": ("#e8a33d", "failing"),
    "never": ("#9aa5b1", "never refreshed"),
    "disconnected": ("#e4e7eb", "not connected"),
}

CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2933;
background:#f5f7fa}
main{max-width:1200px;margin:0 auto;padding:16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:24px 0 8px}
section{background:#fff;border:1px solid #e4e7eb;border-radius:6px;padding:12px;margin:12px 0}
section>h2:first-child{margin-top:0}
.meta{color:#52606d;margin:0}
table{border-collapse:collapse;width:100%;table-layout:fixed}
th,td{text-align:left;padding:4px 6px;border-bottom:1px solid #e4e7eb;vertical-align:top;
overflow-wrap:anywhere}
th{font-weight:600;color:#3e4c59}
td.n,th.n{text-align:right}
.bar{height:8px;background:#e4e7eb;border-radius:4px;overflow:hidden}
.bar i{display:block;height:100%;background:#2e9d5b}
.legend{display:flex;flex-wrap:wrap;gap:6px 14px;margin:4px 0 10px;padding:0;list-style:none}
.legend li{display:flex;align-items:center;gap:6px}
.sw{display:inline-block;width:14px;height:14px;border-radius:3px}
.grid .row{display:flex;align-items:center;gap:8px;margin:1px 0}
.grid .key{flex:0 0 170px;font:12px/1.2 ui-monospace,Menlo,Consolas,monospace;
overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.grid svg{flex:1 1 auto;min-width:0;width:100%;height:14px;display:block}
.axis{display:flex;justify-content:space-between;color:#52606d;font-size:12px;margin-left:178px}
.empty{color:#52606d}
th{overflow-wrap:normal}
.c-day{width:18%}.c-share{width:22%}.c-n{width:14%}
.tiles{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.tile{flex:1 1 150px;background:#fff;border:1px solid #e4e7eb;border-radius:6px;padding:8px 12px}
.tile b{display:block;font-size:22px}
.tile span{color:#52606d;font-size:12px}
@media (max-width:700px){
 main{padding:8px}
 .grid .row{flex-wrap:wrap;gap:0;margin:0 0 4px}
 .grid .key{flex:1 1 100%}
 .axis{margin-left:0}
 .wide{display:none}
 table{font-size:12px}
 .c-day{width:27%}.c-share{width:29%}.c-n{width:22%}
}
"""


def render(f: Figures, days: int) -> str:
    """Return the whole page."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Freshness report</title>",
        f"<style>{CSS}</style></head><body><main>",
        '<h1 id="headline">Freshness report</h1>',
        f'<p class="meta">{_utc(f.start)} to {_utc(f.now)} (UTC), {days} days, '
        f"{f.keys_judged} keys. Mode: {escape(f.bounds.mode)}; promise: "
        f"{escape(f.bounds.describe())}.</p>",
        _tiles(f),
        _headline(f),
        _grid(f),
        _latency(f),
        _cost(f),
        _failures(f),
        "</main></body></html>",
    ]
    return "\n".join(parts)


def _utc(t) -> str:
    return t.strftime("%Y-%m-%d %H:%M")


def _key(key) -> str:
    return f"{key[0]} ({key[1]})"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.2f}%"


def _tiles(f: Figures) -> str:
    counted = sum(d.counted_minutes for d in f.days)
    late = sum(d.late_minutes for d in f.days)
    share = 1 - late / counted if counted else None
    tiles = (
        (_pct(share), "of key-minutes within the promise"),
        (str(sum(d.breaches for d in f.days)), "breaches"),
        (str(late), "late key-minutes"),
        (str(len([k for k, m in f.key_late.items() if m])), "keys late at some time"),
    )
    return (
        '<div class="tiles" id="summary">'
        + "".join(f'<div class="tile"><b>{v}</b><span>{t}</span></div>' for v, t in tiles)
        + "</div>"
    )


def _short(key) -> str:
    """Return a key as a person scans it: the client id's first block and the platform."""
    return f"{key[0][:8]}… ({key[1]})"


def _headline(f: Figures) -> str:
    rows = []
    for d in reversed(f.days):
        share = d.within_promise
        width = 0 if share is None else round(share * 100, 1)
        worst = (
            "<br>".join(
                f'<span title="{escape(_key(k))}">{escape(_short(k))}</span>: {m} min'
                for k, m in d.worst
            )
            or "–"
        )
        rows.append(
            f"<tr><td>{d.date}</td><td class='n'>{_pct(share)}"
            f"<div class='bar'><i style='width:{width}%'></i></div></td>"
            f"<td class='n'>{d.breaches}</td><td class='n'>{d.late_minutes}</td>"
            f"<td class='wide'>{worst}</td></tr>"
        )
    return (
        '<section id="days"><h2>Within the promise, per day (UTC)</h2>'
        "<p class='meta'>Share of key-minutes within the promise; a breach is a key's unbroken "
        "run of late minutes, counted on the day it began.</p>"
        "<table><colgroup><col class='c-day'><col class='c-share'>"
        "<col class='c-n'><col class='c-n'><col class='wide'></colgroup>"
        "<thead><tr><th>Day (UTC)</th><th class='n'>Within promise</th>"
        "<th class='n'>Breaches</th><th class='n'>Late minutes</th>"
        "<th class='wide'>Worst keys</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></section>"
    )


def _legend() -> str:
    items = "".join(
        f'<li><span class="sw" style="background:{color}"></span>{label}</li>'
        for color, label in STATES.values()
    )
    return f'<ul class="legend" id="legend">{items}</ul>'


def _svg(cells: list[Cell], hours: int, title_of) -> str:
    rects = []
    x = 0
    for cell in cells:
        color = STATES.get(cell.state, ("#d64545", ""))[0] if cell.state in STATES else cell.state
        rects.append(
            f'<rect x="{x}" y="0" width="{cell.hours}" height="1" fill="{color}">'
            f"<title>{escape(title_of(cell))}</title></rect>"
        )
        x += cell.hours
    return (
        f'<svg viewBox="0 0 {hours} 1" preserveAspectRatio="none" role="img">'
        + "".join(rects)
        + "</svg>"
    )


def _span(cell: Cell) -> str:
    end = cell.start + timedelta(hours=cell.hours)
    if cell.hours == 1:
        return f"{_utc(cell.start)}–{end:%H:%M} UTC"
    return f"{_utc(cell.start)} – {_utc(end)} UTC"


def _grid(f: Figures) -> str:
    hours = f.hours
    lines = []
    for key, cells in f.grid:
        name = escape(_key(key))
        lines.append(
            f'<div class="row"><div class="key" title="{name}">{escape(_short(key))}</div>'
            + _svg(cells, hours, lambda c, k=key: f"{_key(k)} · {_span(c)} · {c.reason}")
            + "</div>"
        )
    if f.rest_keys:
        late = dict(f.rest)
        cells = []
        for h in range(hours):
            at = f.start + timedelta(hours=h)
            n = late.get(at, 0)
            share = n / f.rest_keys
            color = STATES["current"][0] if not n else _shade(share)
            cells.append(Cell(at, 1, color, f"{n} of {f.rest_keys} other keys late"))
        merged: list[Cell] = []
        for c in cells:
            if merged and merged[-1].state == c.state and merged[-1].reason == c.reason:
                merged[-1].hours += 1
            else:
                merged.append(c)
        lines.append(
            f'<div class="row"><div class="key">the other {f.rest_keys} keys</div>'
            + _svg(merged, hours, lambda c: f"{_span(c)} · {c.reason}")
            + "</div>"
        )
    if not lines:
        body = "<p class='empty'>No connected keys.</p>"
    else:
        first = f.start.strftime("%Y-%m-%d")
        last = f.now.strftime("%Y-%m-%d %H:%M")
        body = (
            '<div class="grid" id="grid">'
            + "".join(lines)
            + f'</div><div class="axis"><span>{first} 00:00 UTC</span><span>{last} UTC</span></div>'
        )
    return (
        '<section id="status"><h2>Status history, by hour (UTC)</h2>'
        "<p class='meta'>The worst keys first (most late minutes, then failures); hover a cell "
        "for the key, the hour and the reason.</p>" + _legend() + body + "</section>"
    )


def _shade(share: float) -> str:
    """Return a red whose strength grows with the share of keys late."""
    alpha = 0.25 + 0.75 * min(1.0, share * 10)
    return f"rgba(214,69,69,{alpha:.2f})"


def _latency(f: Figures) -> str:
    rows = [
        f"<tr><td>{d.date}</td><td class='n'>{d.latency['count']}</td>"
        f"<td class='n'>{duration(d.latency['median_s'])}</td>"
        f"<td class='n'>{duration(d.latency['p95_s'])}</td>"
        f"<td class='n'>{duration(d.latency['max_s'])}</td></tr>"
        for d in reversed(f.days)
        if d.latency
    ]
    if not rows:
        body = (
            "<p class='empty'>No refresh in this window recorded the change it covered: "
            "latency is measured with change detection or the listener.</p>"
        )
    else:
        body = (
            "<table><thead><tr><th>Day (UTC)</th><th class='n'>Changes shown</th>"
            "<th class='n'>Median</th><th class='n'>p95</th><th class='n'>Max</th></tr></thead>"
            "<tbody>" + "".join(rows) + "</tbody></table>"
        )
    return '<section id="latency"><h2>From a change to the dashboard</h2>' + body + "</section>"


def _cost(f: Figures) -> str:
    ran = sum(d.ran for d in f.days)
    unchanged = sum(d.unchanged for d in f.days)
    share = unchanged / (ran + unchanged) if ran + unchanged else None
    dates = [d.date for d in f.days]
    rows = []
    for client, per_day in sorted(
        f.client_day_seconds.items(), key=lambda cs: (-f.client_seconds[cs[0]], cs[0])
    ):
        total = f.client_seconds[client]
        peak = max(per_day.values()) or 1
        bars = "".join(
            f'<rect x="{i}" y="{1 - per_day.get(d, 0) / peak:.3f}" width="0.8" '
            f'height="{per_day.get(d, 0) / peak:.3f}" fill="#3e7cb1">'
            f"<title>{d}: {per_day.get(d, 0):.1f} s</title></rect>"
            for i, d in enumerate(dates)
        )
        spark = (
            f'<svg viewBox="0 0 {max(1, len(dates))} 1" preserveAspectRatio="none" '
            f'style="width:100%;height:18px">{bars}</svg>'
        )
        rows.append(
            f"<tr><td>{escape(client)}</td><td class='n'>{total:.1f}</td>"
            f"<td class='n'>{total / max(1, len(dates)):.1f}</td><td class='wide'>{spark}</td></tr>"
        )
    table = (
        "<table><thead><tr><th>Client</th><th class='n'>Backend s</th><th class='n'>s per day</th>"
        "<th class='wide'>Per day</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        if rows
        else "<p class='empty'>No refresh ran in this window.</p>"
    )
    return (
        '<section id="cost"><h2>Backend cost (top 20 clients)</h2>'
        f"<p class='meta'>Seconds of refreshes per client, every attempt that ran; "
        f"work skipped as unchanged: {_pct(share)} of {ran + unchanged} jobs.</p>"
        + table
        + "</section>"
    )


def _failures(f: Figures) -> str:
    reasons = "".join(
        f"<tr><td>{escape(example or reason)}</td><td class='n'>{n}</td><td class='n'>{k}</td></tr>"
        for reason, n, k, example in f.reasons
    )
    keys = "".join(
        f"<tr><td>{escape(_key(key))}</td><td class='n'>{n}</td><td class='n'>{streak}</td>"
        f"<td class='wide'>{escape(err or '')}</td></tr>"
        for key, n, _at, streak, err in f.failing_keys
    )
    body = (
        "<table><thead><tr><th>Reason (e.g.)</th><th class='n'>Failures</th>"
        "<th class='n'>Keys</th></tr></thead><tbody>" + reasons + "</tbody></table>"
        if reasons
        else "<p class='empty'>No refresh failed in this window.</p>"
    )
    if keys:
        body += (
            "<h2>Keys failing repeatedly</h2><table><thead><tr><th>Key</th>"
            "<th class='n'>Failures</th><th class='n'>In a row now</th>"
            "<th class='wide'>Last error</th></tr></thead><tbody>" + keys + "</tbody></table>"
        )
    return '<section id="failures"><h2>Failures</h2>' + body + "</section>"
