"""Reading the API's answers within bounds: a streamed scan of the top level, plain error text.

An answer is never parsed into a tree: ``scan_object`` streams it through ijson and keeps
only the top level's scalar fields and the lengths of its arrays, which is all the runner
and the preflight read. Its memory is one chunk's events and one value, whatever the size.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from email.utils import parsedate_to_datetime

import ijson

from .logs import redact
from .text import plain

# A dashboard nests five levels or so; a JSON document nested far deeper is not one.
MAX_DEPTH = 64
# Bytes fed to the parser without its finishing a single value: a string, a number or a run
# of whitespace this long is not part of any dashboard, and the parser would buffer it whole.
MAX_VALUE_BYTES = 2**20
MAX_FIELDS = 64  # top-level scalar fields kept
MAX_FIELD_CHARS = 1024  # of each string kept
MAX_TEXT = 300  # characters of an error text
# PostgreSQL's integer: a count outside it is dropped rather than break the job's record.
MAX_COUNT = 2**31 - 1

_BOM = b"\xef\xbb\xbf"
_OPENERS = frozenset({"start_map", "start_array"})
_CLOSERS = frozenset({"end_map", "end_array"})
# Control characters a JSON string may not hold raw, but a broken backend sends anyway,
# as JSON escapes; line breaks and tabs as spaces, which are valid in and out of strings.
_REPAIRS = {code: f"\\u{code:04x}" for code in (*range(0x20), 0x7F)} | dict.fromkeys(
    (0x09, 0x0A, 0x0D), " "
)
_ERROR_PREFIX = re.compile(rb'"error"\s*:\s*"((?:[^"\\]|\\.){1,2000})')


class InvalidAnswer(Exception):
    """malformed JSON"""

    def __str__(self) -> str:
        return self.args[0] if self.args else type(self).__doc__


class NotAnObject(InvalidAnswer):
    """not a JSON object"""


class TooDeep(InvalidAnswer):
    """nested too deeply"""


class ValueTooLong(InvalidAnswer):
    """a single value longer than 1 MiB"""


@dataclass
class Scan:
    """The top level of a JSON object: its scalar fields, and the length of each array."""

    fields: dict[str, object] = field(default_factory=dict)
    lengths: dict[str, int] = field(default_factory=dict)


class _Walker:
    """Follows ijson's events, keeping only what the top level holds."""

    def __init__(self, max_depth: int):
        self.scan = Scan()
        self.max_depth = max_depth
        self.depth = 0
        self.key: str | None = None
        self.items = -1  # items of the top-level array being read, -1 when none is
        self.done = False

    def walk(self, events: list) -> None:
        depth, key, items = self.depth, self.key, self.items
        try:
            for event, value in events:
                if event == "map_key":
                    if depth == 1:
                        key = value
                    continue
                if event in _CLOSERS:
                    depth -= 1
                    if depth == 1 and items >= 0:
                        self.scan.lengths[key] = items
                        items = -1
                    elif depth == 0:
                        self.done = True
                    continue
                if depth == 1:
                    if event == "start_array":
                        items = 0
                    elif event != "start_map":
                        self._keep(key, value)
                elif depth == 2:
                    if items >= 0:
                        items += 1
                elif depth == 0 and event != "start_map":
                    raise NotAnObject
                if event in _OPENERS:
                    depth += 1
                    if depth > self.max_depth:
                        raise TooDeep
        finally:
            self.depth, self.key, self.items = depth, key, items

    def _keep(self, key: str, value: object) -> None:
        fields = self.scan.fields
        if len(fields) >= MAX_FIELDS and key not in fields:
            return
        if isinstance(value, str):
            value = value[:MAX_FIELD_CHARS]
        fields[key] = value


def scan_object(chunks: Iterable[bytes], max_depth: int = MAX_DEPTH) -> Scan:
    """Stream ``chunks`` of one JSON document; return its top level, or raise InvalidAnswer.

    The whole document is read and checked, but only the top level is kept; the iterator
    is not read further once the answer is known to be invalid.
    """
    walker = _Walker(max_depth)
    events = ijson.sendable_list()
    parser = ijson.basic_parse_coro(events)
    pending = 0  # bytes fed since the parser last finished a value
    first = True
    for chunk in chunks:  # the reader's own errors (a reset, a timeout) pass through
        if first:
            chunk, first = chunk.removeprefix(_BOM), False
        _feed(parser.send, chunk, events, walker)
        if events:
            pending = 0
            del events[:]
        pending += len(chunk)
        if pending > MAX_VALUE_BYTES:
            raise ValueTooLong
    _feed(parser.close, None, events, walker)
    if not walker.done:
        raise InvalidAnswer
    return walker.scan


def _feed(step, chunk, events: list, walker: _Walker) -> None:
    """Run one parser step, then follow the events it produced, even up to an error."""
    try:
        if chunk is None:
            step()
        else:
            step(chunk)
    # ijson's JSONError, and the ValueError (as a SystemError) of an integer past
    # Python's 4,300 digits: either way not an answer the runner can read.
    except Exception as exc:
        walker.walk(events)  # an invalid top level or depth is the better reason
        raise InvalidAnswer from exc
    walker.walk(events)


def count(value: object) -> int | None:
    """Return ``value`` as a count the job's record can hold, else None."""
    if type(value) is int and 0 <= value <= MAX_COUNT:
        return value
    return None


def scalar(value: object, secrets: tuple[str, ...] = ()) -> object:
    """Return a top-level field as plain Python: strings plain and masked, decimals floats."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, str):
        return plain_text(value, secrets)
    return value


def error_text(body: bytes, reason: str | None, secrets: tuple[str, ...] = ()) -> str:
    """Return the ``error`` field of an error answer (or an excerpt) as plain, masked text.

    ``body`` is at most a bounded prefix of the answer. Bytes a JSON parser refuses
    (invalid UTF-8, raw control characters) are repaired before a second try, and a
    prefix that cut a long error short still yields its beginning.
    """
    text = _error_field(body)
    if text is None:
        repaired = _repair(body)
        text = _error_field(repaired.encode("utf-8"))
        if text is None:
            match = _ERROR_PREFIX.search(body)
            if match:
                text = match.group(1).decode("utf-8", "replace")
            else:
                text = body.decode("utf-8", "replace").strip() or reason or ""
    return plain_text(text, secrets)


def _error_field(body: bytes) -> str | None:
    try:
        value = scan_object((body,)).fields.get("error")
    except InvalidAnswer:
        return None
    return value if isinstance(value, str) and value.strip() else None


def _repair(body: bytes) -> str:
    return body.decode("utf-8", "replace").translate(_REPAIRS)


def plain_text(text: str, secrets: tuple[str, ...] = (), limit: int = MAX_TEXT) -> str:
    """Return ``text`` on one printable line: tokens masked, whitespace runs one space,
    anything unprintable escaped (text.plain), cut at ``limit``."""
    # Mask first, so that no cut below can leave half a token unrecognised.
    text = redact(text[: 64 * limit], secrets)
    return plain(" ".join(text[: 8 * limit].split()))[:limit]


# -- until when an answer's copy holds --------------------------------------------------------
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?([0-9]{1,12})\"?\s*(?:,|$)", re.I)
# An expiry further out than this is no promise the runner can act on: stored as this.
MAX_LIFETIME = timedelta(days=3650)


def expiry(
    declared: object,
    cache_control: str | None,
    expires: str | None,
    received: datetime,
) -> datetime | None:
    """Return until when an answer's copy holds, or None when the answer does not say.

    First the body's ``expires_at`` (ISO 8601; without an offset it is UTC), then the
    ``Cache-Control`` header's ``max-age`` (seconds after ``received``), then ``Expires``
    (an HTTP date). A value that cannot be read counts as not said; the result is UTC.
    """
    found = _iso_moment(declared) if isinstance(declared, str) else None
    if found is None and cache_control:
        match = _MAX_AGE.search(cache_control)
        if match:
            found = received + timedelta(seconds=int(match[1]))
    if found is None and expires:
        try:
            found = parsedate_to_datetime(expires.strip())
        except (TypeError, ValueError, IndexError, OverflowError):
            found = None
        if found is not None and found.tzinfo is None:
            found = found.replace(tzinfo=timezone.utc)
    if found is None:
        return None
    return min(found.astimezone(timezone.utc), received + MAX_LIFETIME)


def _iso_moment(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)
