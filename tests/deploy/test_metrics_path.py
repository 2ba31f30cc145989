"""One metrics directory everywhere: node_exporter's, writable by the systemd unit.

Debian's prometheus-node-exporter reads its textfile collector from
/var/lib/prometheus/node-exporter. The unit's ProtectSystem=strict makes everything else
read-only, so METRICS_FILE must sit under one of its ReadWritePaths; .env.example and the
guide must name that same file.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from tests.deploy.conftest import ROOT

NODE_EXPORTER_TEXTFILE_DIR = PurePosixPath("/var/lib/prometheus/node-exporter")


def read_write_paths() -> list[PurePosixPath]:
    """Every ReadWritePaths= entry of the service (the setting accumulates), prefixes off."""
    text = (ROOT / "deploy/systemd/analytics-refresh.service").read_text(encoding="utf-8")
    words = [w for line in re.findall(r"^ReadWritePaths=(.*)$", text, re.M) for w in line.split()]
    return [PurePosixPath(w.lstrip("-+")) for w in words]


def metrics_files(text: str) -> set[str]:
    return set(re.findall(r"METRICS_FILE=([^\s`'\"]+)", text))


def test_env_example_guide_and_readme_name_one_metrics_file():
    example = metrics_files((ROOT / ".env.example").read_text(encoding="utf-8"))
    guide = metrics_files((ROOT / "ANALYTICS_REFRESH_CRON_GUIDE.md").read_text(encoding="utf-8"))
    readme = metrics_files((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(example) == 1, example
    assert guide, "the guide names no METRICS_FILE"
    assert guide | readme == example, (guide, readme, example)
    [path] = example
    assert PurePosixPath(path).parent == NODE_EXPORTER_TEXTFILE_DIR
    assert path.endswith(".prom")  # node_exporter reads only *.prom


def test_the_metrics_directory_is_writable_under_the_units_sandbox():
    [path] = metrics_files((ROOT / ".env.example").read_text(encoding="utf-8"))
    directory = PurePosixPath(path).parent
    writable = read_write_paths()
    assert any(directory == p or p in directory.parents for p in writable), (directory, writable)
    # The unit's own directories stay writable too.
    assert PurePosixPath("/opt/analytics-refresh/logs") in writable


def test_the_parser_sees_every_read_write_path():
    assert len(read_write_paths()) >= 3
