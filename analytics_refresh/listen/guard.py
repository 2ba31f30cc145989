"""A client-side bound on one database call: past it, the connection's socket is shut.

``statement_timeout`` is enforced by the server, so a server that stops answering while
its connection stays open (a hung host, a proxy in front of one) would hold a blocking
call forever; keepalives do not notice it either, since the peer still acknowledges. A
timer that shuts the socket down makes the call fail at once with a lost connection,
which the caller handles like any other (reconnect with backoff).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def bounded(conn, seconds: float) -> Iterator[None]:
    """Run the block; shut ``conn``'s socket if it is still inside after ``seconds``."""
    timer = threading.Timer(seconds, _shut, (conn,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _shut(conn) -> None:
    with contextlib.suppress(Exception):
        sock = socket.socket(fileno=conn.fileno())
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.detach()  # the descriptor stays libpq's; only the stream is ended
