"""The log file: rotation, and rotation that the platform refuses."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from analytics_refresh.config.settings import Settings
from analytics_refresh.logs import get_logger, setup_logging


def test_the_log_rotates_by_size(tmp_path, monkeypatch):
    monkeypatch.setattr("analytics_refresh.logs.MAX_LOG_BYTES", 2000)
    logger = setup_logging(Settings(log_dir=tmp_path), interactive=False)
    for n in range(100):
        get_logger("test").info("line %03d %s", n, "x" * 40)
    logging.shutdown()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "analytics_refresh_cron.log" in files
    assert "analytics_refresh_cron.log.1" in files
    assert logger.handlers


def test_a_refused_rename_keeps_logging_to_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr("analytics_refresh.logs.MAX_LOG_BYTES", 2000)

    def refuse(src, dst):  # what Windows does while another process holds the file
        raise PermissionError(32, "The process cannot access the file", str(src))

    monkeypatch.setattr(os, "rename", refuse)
    setup_logging(Settings(log_dir=tmp_path), interactive=False)
    for n in range(100):
        get_logger("test").info("line %03d", n)
    text = (Path(tmp_path) / "analytics_refresh_cron.log").read_text(encoding="utf-8")
    assert "line 099" in text
    assert "cannot write the log file" not in text
