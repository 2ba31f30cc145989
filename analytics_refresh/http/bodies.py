"""Reading an answer's body within bounds: decoded chunk by chunk, by a deadline, up to a cap.

urllib3 decompresses at most the amount asked for per read, so a small compressed answer
that expands to gigabytes never occupies more than a chunk; a body that trickles is cut
at the attempt's deadline. The refresh (client.py) and the preflight's probes (probe.py)
read every body through here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import requests
import urllib3.exceptions

# A dashboard answer is a few MB at most; anything far larger is not one. Decoded bytes.
MAX_BODY_BYTES = 256 * 2**20
# Of an error answer only this much is read: its `error` text is cut to 300 characters.
MAX_ERROR_BODY_BYTES = 64 * 2**10
# Decoded bytes per read: bounds what one compressed chunk may expand to in memory.
CHUNK_BYTES = 32 * 2**10


class BodyTooSlow(Exception):
    """The answer's body did not arrive before the attempt's time ran out."""


class BodyTooLarge(Exception):
    """The answer's body is larger than any dashboard."""


def read_chunks(response: requests.Response, deadline: float, limit: int) -> Iterator[bytes]:
    """Yield the decoded body in chunks of at most CHUNK_BYTES, by ``deadline``, up to ``limit``.

    urllib3 decompresses at most the amount asked for per read, so a small compressed
    answer that expands to gigabytes never occupies more than a chunk.
    """
    size = 0
    raw = response.raw
    try:
        # read1() returns what one socket read brings (iter_content would wait for a whole
        # chunk), so the deadline is checked as often as data arrives.
        while chunk := raw.read1(CHUNK_BYTES, decode_content=True):
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            if time.monotonic() > deadline:
                raise BodyTooSlow
            yield chunk
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.exceptions.ReadTimeout(exc) from exc
    except urllib3.exceptions.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from exc
    except urllib3.exceptions.HTTPError as exc:
        # A reset or a truncated body: what requests itself would call a connection error.
        raise requests.exceptions.ConnectionError(exc) from exc


def read_prefix(response: requests.Response, deadline: float, limit: int) -> bytes:
    """Return at most ``limit`` decoded bytes of the body; the rest is never read."""
    parts, size = [], 0
    for chunk in read_chunks(response, deadline, MAX_BODY_BYTES):
        parts.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(parts)[:limit]


def seconds_text(value: float) -> str:
    return f"{round(value, 1):g}s"
