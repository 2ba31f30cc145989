"""Logging, set up once per process and safe to set up again.

Text records read ``YYYY-MM-DD HH:MM:SS - message`` (INTERFACE.md section 5) and go to
``logs/analytics_refresh_cron.log`` (rotated by size) and, on a terminal, to stderr.
``LOG_FORMAT=json`` writes one JSON object a line to stdout instead of the console, for
containers. Every record passes through a filter that masks anything shaped like a token.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import re
import sys
from pathlib import Path

from .settings import Settings

LOGGER_NAME = "analytics_refresh"
TEXT_FORMAT = "%(asctime)s - %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
MAX_LOG_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 5

# A JWT (three base64url parts, the first starting with '{"' encoded) or a Bearer header.
_TOKEN_PATTERNS = (
    re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
    re.compile(r"(?i)(bearer\s+)[^\s\"',;]+"),
)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Return ``text`` with tokens, Bearer credentials and the given secrets masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = _TOKEN_PATTERNS[0].sub("[redacted]", text)
    return _TOKEN_PATTERNS[1].sub(r"\1[redacted]", text)


class RedactFilter(logging.Filter):
    """Mask tokens and the configured secret in every record, whatever logged it."""

    def __init__(self, secrets: tuple[str, ...] = ()):
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, message, and any structured ``extra`` fields."""

    FIELDS = (
        "client_id",
        "platform",
        "status",
        "attempts",
        "http_status",
        "duration_ms",
    )

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, DATE_FORMAT),
            "level": record.levelname,
            "message": record.getMessage(),
        }
        for name in self.FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _file_handler(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    # delay=False opens the file now, so an unwritable log is found before the run starts.
    return logging.handlers.RotatingFileHandler(
        path, maxBytes=MAX_LOG_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
    )


class _StderrFallback(logging.Handler):
    """Writes to stderr after the log file fails (disk full), so no record is lost."""

    def __init__(self, primary: logging.Handler):
        super().__init__()
        self.primary = primary
        self.failed = False
        self.console = logging.StreamHandler(sys.stderr)

    def setFormatter(self, fmt):
        super().setFormatter(fmt)
        self.console.setFormatter(fmt)

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            try:
                # The file handler's own emit() swallows write errors; write here to see them.
                with self.primary.lock:
                    if self.primary.shouldRollover(record):
                        self._roll_over()
                    if self.primary.stream is None:
                        self.primary.stream = self.primary._open()
                    self.primary.stream.write(self.format(record) + "\n")
                    self.primary.stream.flush()
                return
            except Exception as exc:
                self.failed = True
                warning = logging.makeLogRecord(
                    {
                        "msg": f"WARNING: cannot write the log file ({exc}); logging to stderr "
                        "from here on",
                        "levelno": logging.WARNING,
                        "levelname": "WARNING",
                    }
                )
                self.console.emit(warning)
        self.console.emit(record)

    def _roll_over(self) -> None:
        """Rotate the file; when it cannot be renamed, keep writing to it unrotated.

        Windows refuses to rename a file another process holds open (a second run that
        found the lock held, `Get-Content -Wait`); that is no reason to leave the file.
        """
        try:
            self.primary.doRollover()
        except OSError:
            if self.primary.stream is None or self.primary.stream.closed:
                self.primary.stream = self.primary._open()

    def close(self) -> None:
        # The final flush of a full disk fails again; there is nothing more to save.
        with contextlib.suppress(OSError):
            self.primary.close()
        super().close()


def setup_logging(settings: Settings, *, interactive: bool | None = None) -> logging.Logger:
    """Configure the runner's logger from ``settings``; calling it again replaces the setup."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    for old in list(logger.filters):
        logger.removeFilter(old)
    logger.setLevel(settings.log_level)
    logger.propagate = False
    # On the handlers, not the logger: a logger's filters skip records from its children.
    redactor = RedactFilter(settings.secrets)

    text = logging.Formatter(TEXT_FORMAT, DATE_FORMAT)
    if interactive is None:
        interactive = sys.stderr.isatty()

    console_needed = interactive
    try:
        handler: logging.Handler = _StderrFallback(_file_handler(settings.log_file))
        handler.setFormatter(text)
        handler.addFilter(redactor)
        logger.addHandler(handler)
        file_problem = None
    except OSError as exc:
        file_problem = f"{settings.log_file}: {exc.strerror or exc}"
        console_needed = True

    if settings.log_format == "json":
        stdout = logging.StreamHandler(sys.stdout)
        stdout.setFormatter(JsonFormatter())
        stdout.addFilter(redactor)
        logger.addHandler(stdout)
    elif console_needed:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(text)
        console.addFilter(redactor)
        logger.addHandler(console)

    if file_problem:
        logger.warning(
            "WARNING: cannot write the log file (%s); logging to the console only", file_problem
        )
    return logger


def get_logger(name: str = "") -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)
