"""A bound kept by the client on one database call: past it the connection's socket is shut.

A server that hangs, or a proxy in front of one, still acknowledges packets, so neither
keepalives nor ``statement_timeout`` (enforced by the server) end a wait on it. Shutting
the socket down does: the waiting call fails at once with a driver error, and the
connection is closed, so it is never used again half-read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

# Past the statement's own timeout, the server has had time to answer that it cancelled it.
GRACE_SECONDS = 2.0


class Cutoff:
    """Whether a bounded call ran out of time (its socket was shut)."""

    def __init__(self) -> None:
        self.fired = False


def cut(conn) -> None:
    """Shut ``conn``'s socket down so that any call waiting on it fails now; never raise."""
    # The run's other connections then wait on this server no more (dbwatch).
    found_silent = getattr(conn, "found_silent", None)
    if found_silent is not None:
        found_silent()
    with contextlib.suppress(Exception):
        fd = os.dup(conn.fileno())
        sock = socket.socket(fileno=fd)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


@contextlib.contextmanager
def bounded(conn, seconds: float) -> Iterator[Cutoff]:
    """Shut ``conn``'s socket if the block is still waiting ``seconds`` (+ grace) from now."""
    state = Cutoff()

    def fire() -> None:
        state.fired = True
        cut(conn)

    timer = threading.Timer(max(0.0, seconds) + GRACE_SECONDS, fire)
    timer.daemon = True
    timer.start()
    try:
        yield state
    finally:
        timer.cancel()
