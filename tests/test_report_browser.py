"""The report as a person sees it: rendered by headless Chromium on a desktop and a phone.

The page itself holds no script; the test renders a copy with one measuring script added
at its end, which writes what it found into the DOM that ``--dump-dom`` prints.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import timedelta

import pytest

from analytics_refresh.cli import main
from tests.conftest import connect_clients
from tests.report_history import KeyHistory, Refresh, database_minute, write

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (scripts/install-test-tools.sh installs it)",
)

# Where every element is, against the viewport; what the report must show.
MEASURE = """
<script>
(function () {
  var width = window.innerWidth, out = [];
  document.querySelectorAll("body *").forEach(function (el) {
    var r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) return;
    if (el.closest("title")) return;
    if (r.left < -1 || r.right > width + 1) out.push(el.tagName + " " + (el.id || el.className
      && el.className.baseVal !== undefined ? el.className.baseVal : el.className) +
      " " + Math.round(r.left) + ".." + Math.round(r.right));
  });
  function seen(sel) {
    return Array.prototype.filter.call(document.querySelectorAll(sel), function (el) {
      var r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0;
    }).length;
  }
  parent.postMessage(JSON.stringify({
    width: width,
    scrollWidth: document.documentElement.scrollWidth,
    offPage: out,
    headline: seen("#headline"),
    headlineText: document.querySelector("#headline").textContent,
    dayRows: seen("#days tbody tr"),
    legend: Array.prototype.map.call(document.querySelectorAll("#legend li"),
      function (li) { return li.textContent; }),
    legendSeen: seen("#legend li .sw"),
    gridRows: seen("#grid .row"),
    cells: seen("#grid rect"),
    tooltips: Array.prototype.map.call(document.querySelectorAll("#grid rect title"),
      function (t) { return t.textContent; }).slice(0, 400)
  }), "*");
})();
</script>
"""


# Headless Chromium keeps its window at least 500 pixels wide: the page is shown in a frame
# of the phone's size, and the frame's script hands what it measured to this page.
FRAME = """<!DOCTYPE html><html><body style="margin:0">
<iframe src="{src}" width="{width}" height="{height}" style="border:0;display:block"></iframe>
<pre id="measured"></pre>
<script>
window.addEventListener("message", function (e) {{
  document.getElementById("measured").textContent = e.data;
}});
</script></body></html>"""


def render(tmp_path, html: str, width: int, height: int) -> dict:
    page = tmp_path / f"measure-{width}.html"
    page.write_text(html.replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    frame = tmp_path / f"frame-{width}.html"
    frame.write_text(FRAME.format(src=page.name, width=width, height=height), encoding="utf-8")
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            f"--user-data-dir={tmp_path / f'profile-{width}'}",
            f"--window-size={max(width, 800)},{height + 100}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            frame.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    match = re.search(r'<pre id="measured">(.*?)</pre>', done.stdout, re.S)
    assert match, f"chromium printed no measurement (exit {done.returncode}): {done.stderr[-800:]}"
    import html as html_lib

    return json.loads(html_lib.unescape(match.group(1)))


@pytest.fixture
def report_html(db, db_url, tmp_path, capsys):
    from tests.runs import ALICE, BOB, CAROL, DAVE

    connect_clients(db, {ALICE: ("shopify", "amazon"), BOB: ("shopify",), CAROL: ("amazon",)})
    # Dave was refreshed once, then disconnected: drawn, never counted.
    connect_clients(db, {DAVE: ("shopify",)}, status="disconnected")
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO refresh_state (client_id, platform, last_status, last_success_at) "
            "VALUES (%s, 'shopify', 'succeeded', now() - interval '3 days')",
            (DAVE,),
        )
    now = database_minute(db)
    hours = timedelta(hours=1)
    runs = [now - timedelta(hours=70) + i * 2 * hours for i in range(35)]
    write(
        db,
        [
            # A manual refresh that failed between two good runs: failing, not late.
            KeyHistory(
                ALICE,
                "shopify",
                [Refresh(t) for t in runs]
                + [Refresh(runs[20] + hours / 2, "failed", error="HTTP 500 after 3 attempts")],
            ),
            KeyHistory(
                ALICE,
                "amazon",
                [Refresh(t) for t in runs[:12]]
                + [Refresh(t, "failed", error="timed out after 3 attempts") for t in runs[12:16]]
                + [Refresh(t) for t in runs[16:]],
            ),
            KeyHistory(BOB, "shopify", [Refresh(t) for t in runs[::3]]),
        ],
    )
    out = tmp_path / "report.html"
    env = {"DATABASE_URL": db_url, "LOG_DIR": str(tmp_path / "logs")}
    assert main(["report", "--days", "4", "--out", str(out)], environ=env) == 0
    capsys.readouterr()
    return out.read_text(encoding="utf-8")


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)])
def test_every_part_is_on_screen(report_html, tmp_path, width, height):
    seen = render(tmp_path, report_html, width, height)
    assert seen["width"] == width
    assert seen["offPage"] == []
    assert seen["scrollWidth"] <= width
    assert seen["headline"] == 1
    assert "Freshness report" in seen["headlineText"]
    assert seen["dayRows"] == 4
    assert seen["legend"] == ["current", "late", "failing", "never refreshed", "not connected"]
    assert seen["legendSeen"] == 5
    assert seen["gridRows"] == 8  # every key: the report has fewer than 50
    assert seen["cells"] >= 5
    tips = " ".join(seen["tooltips"])
    assert "late" in tips
    assert "refresh failed: HTTP 500" in tips
    assert "never refreshed" in tips  # Carol: connected, no refresh yet
    assert "not connected now" in tips  # Dave
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:00", tips)
    assert "UTC" in tips
