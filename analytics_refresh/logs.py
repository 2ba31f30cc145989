"""Logging, set up once per process and safe to set up again.

Text records read ``YYYY-MM-DD HH:MM:SS - message`` (the guide's "The log") and go to
``logs/analytics_refresh_cron.log`` (rotated by size) and, on a terminal or under systemd
(``JOURNAL_STREAM``), to stderr. ``LOG_FORMAT=json`` writes one JSON object a line to stdout
instead of the console, for containers. Every record passes through a filter that masks
anything shaped like a token, and the text formatter escapes control characters, so the
file stays plain text, one line a record, whatever bytes an API sent.
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
from .text import plain

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
        if record.exc_info and not record.exc_text:
            # A traceback quotes values too: format it here, masked, for every handler.
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(text, self.secrets)
        return True


class PlainFormatter(logging.Formatter):
    """The text format, each record on one line of printable text."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT, DATE_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return plain(super().format(record))


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
        # Lone surrogates cannot be written as UTF-8: escape them rather than lose the line.
        return plain(json.dumps(entry, ensure_ascii=False))


def _file_handler(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    # delay=False opens the file now, so an unwritable log is found before the run starts.
    return logging.handlers.RotatingFileHandler(
        path,
        maxBytes=MAX_LOG_BYTES,
        backupCount=LOG_BACKUPS,
        encoding="utf-8",
        errors="backslashreplace",
    )


class _StderrFallback(logging.Handler):
    """Writes to stderr after the log file fails (disk full), so no record is lost."""

    def __init__(self, primary: logging.Handler):
        super().__init__()
        self.primary = primary
        self.failed = False
        self.console = _console_handler()

    def setFormatter(self, fmt):
        super().setFormatter(fmt)
        self.console.setFormatter(fmt)

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            try:
                # The file handler's own emit() swallows write errors; write here to see them.
                with self.primary.lock:
                    self._reopen_if_removed()
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

    def _reopen_if_removed(self) -> None:
        """Start a new file when the log (or its folder) was removed under the run."""
        path = Path(self.primary.baseFilename)
        if self.primary.stream is not None and not path.exists():
            self.primary.stream.close()
            self.primary.stream = None
            path.parent.mkdir(parents=True, exist_ok=True)

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


class _NullStream:
    """Where console output goes when the process has no stderr (started with 2>&-)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def _stream(stream):
    return stream if stream is not None else _NullStream()


def _console_handler(stream=None) -> logging.Handler:
    return logging.StreamHandler(_stream(stream if stream is not None else sys.stderr))


def setup_logging(settings: Settings, *, interactive: bool | None = None) -> logging.Logger:
    """Configure the runner's logger from ``settings``; calling it again replaces the setup."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        # Only the handlers set up here: a heartbeat's log tail stays attached.
        if getattr(handler, "set_up_here", False):
            logger.removeHandler(handler)
            handler.close()
    for old in list(logger.filters):
        logger.removeFilter(old)
    logger.setLevel(settings.log_level)
    logger.propagate = False
    # On the handlers, not the logger: a logger's filters skip records from its children.
    redactor = RedactFilter(settings.secrets)

    text = PlainFormatter()
    if interactive is None:
        interactive = _stream(sys.stderr).isatty()

    # systemd hands a unit's stderr to the journal and says so in JOURNAL_STREAM.
    console_needed = interactive or settings.journal
    try:
        handler: logging.Handler = _StderrFallback(_file_handler(settings.log_file))
        handler.setFormatter(text)
        handler.addFilter(redactor)
        _add(logger, handler)
        file_problem = None
    except OSError as exc:
        file_problem = f"{settings.log_file}: {exc.strerror or exc}"
        console_needed = True

    if settings.log_format == "json":
        stdout = logging.StreamHandler(_stream(sys.stdout))
        stdout.setFormatter(JsonFormatter())
        stdout.addFilter(redactor)
        _add(logger, stdout)
    elif console_needed:
        console = _console_handler()
        console.setFormatter(text)
        console.addFilter(redactor)
        _add(logger, console)

    if file_problem:
        logger.warning(
            "WARNING: cannot write the log file (%s); logging to the console only", file_problem
        )
    return logger


def _file_only(record: logging.LogRecord) -> bool:
    """Keep records marked ``extra={"file_only": True}`` (already printed) off the console."""
    return not getattr(record, "file_only", False)


def _add(logger: logging.Logger, handler: logging.Handler) -> None:
    handler.set_up_here = True
    if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
        handler.addFilter(_file_only)
    logger.addHandler(handler)


def writes_stderr() -> bool:
    """Return whether the log already shows on stderr (so a message need not be repeated)."""
    return any(
        getattr(h, "set_up_here", False) and getattr(h, "stream", None) is sys.stderr
        for h in logging.getLogger(LOGGER_NAME).handlers
    )


def get_logger(name: str = "") -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)
