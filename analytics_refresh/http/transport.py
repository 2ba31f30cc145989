"""Connections a watchdog can cut: the transport under every request the runner sends.

requests' timeouts bound each socket operation, not a whole answer: a server that trickles
a header byte a second is never timed out by them. So every connection registers its socket
with one shared watchdog thread, which holds a heap of the attempts' deadlines and shuts a
socket down when its attempt's time is up, in whatever phase: name resolution (done in a
helper thread within the time left), connecting, the status line and headers, the body.
"""

from __future__ import annotations

import contextlib
import heapq
import ipaddress
import itertools
import socket
import threading
import time

import requests
import requests.adapters
import urllib3
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions
import urllib3.util.connection

from analytics_refresh import __version__

USER_AGENT = f"analytics-refresh/{__version__}"
# Only encodings the client reads within bounds are offered to the server.
ACCEPT_ENCODING = "gzip, deflate"


# -- the watchdog ---------------------------------------------------------------------------
class _Guard:
    """One attempt's deadline and the socket it is using now."""

    __slots__ = ("deadline", "done", "fired", "sock")

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.sock: socket.socket | None = None
        self.fired = False
        self.done = False


class Watchdog:
    """One thread that shuts down the socket of every attempt whose time is up.

    requests' timeouts bound each socket read, not an answer: a server that sends a byte
    now and then is never timed out by them. A shared thread with a heap of deadlines
    costs a lock per request, where a timer per request would cost a thread.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _Guard]] = []
        self._seq = itertools.count()
        self._released = 0  # released guards still in the heap
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float) -> _Guard:
        """Start watching an attempt that must be over by ``deadline`` (monotonic)."""
        guard = _Guard(deadline)
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="refresh-watchdog", daemon=True
                )
                self._thread.start()
            heap = self._heap
            earliest = not heap or deadline < heap[0][0]
            heapq.heappush(heap, (deadline, next(self._seq), guard))
            if self._released > 1024 and 2 * self._released > len(heap):
                # Finished attempts wait in the heap until their deadline; drop them at once.
                self._heap = [entry for entry in heap if not entry[2].done]
                heapq.heapify(self._heap)
                self._released = 0
            if earliest:
                self._cond.notify()
        return guard

    def watch(self, guard: _Guard, sock: socket.socket) -> None:
        """Make ``sock`` the socket to shut down when ``guard``'s time is up."""
        with self._cond:
            if guard.done:
                return
            guard.sock = sock
            if guard.fired:
                _shutdown(sock)

    def release(self, guard: _Guard) -> None:
        """Stop watching: the attempt is over, its connection may serve another."""
        with self._cond:
            guard.done = True
            guard.sock = None
            if not guard.fired:
                self._released += 1

    def _run(self) -> None:
        with self._cond:
            while True:
                heap = self._heap
                while heap and heap[0][2].done:
                    heapq.heappop(heap)
                    self._released -= 1
                if not heap:
                    self._cond.wait()
                    continue
                delay = heap[0][0] - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                guard = heapq.heappop(heap)[2]
                guard.fired = True
                if guard.sock is not None:
                    _shutdown(guard.sock)


def _shutdown(sock: socket.socket) -> None:
    # The plain socket's method: ssl.SSLSocket.shutdown would drop its TLS state under the
    # thread still reading from it. A socket already closed has nothing left to cut.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


WATCHDOG = Watchdog()
_attempt = threading.local()  # .guard: the guard of the attempt this thread is making


def _current_guard() -> _Guard | None:
    return getattr(_attempt, "guard", None)


class AttemptTime:
    """The context of one bounded request on this thread."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds
        self.guard: _Guard | None = None

    def __enter__(self) -> _Guard:
        self.guard = WATCHDOG.arm(self.deadline)
        _attempt.guard = self.guard
        return self.guard

    def __exit__(self, *exc) -> None:
        _attempt.guard = None
        WATCHDOG.release(self.guard)


# -- connections that report their sockets to the watchdog ----------------------------------
def _resolve(conn, host: str, port: int, seconds: float) -> list[str]:
    """Resolve ``host`` within ``seconds``: getaddrinfo cannot be interrupted otherwise."""
    result: dict = {}

    def work() -> None:
        try:
            family = urllib3.util.connection.allowed_gai_family()
            result["infos"] = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
        except OSError as exc:
            result["error"] = exc

    thread = threading.Thread(target=work, name="refresh-resolve", daemon=True)
    thread.start()
    thread.join(max(seconds, 0.0))
    if thread.is_alive():
        raise urllib3.exceptions.ConnectTimeoutError(conn, f"resolving {host} timed out")
    if "error" in result:
        raise urllib3.exceptions.NameResolutionError(host, conn, result["error"])
    return list(dict.fromkeys(info[4][0] for info in result["infos"]))


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class _Watched:
    """Mixed into urllib3's connections: each socket in use is the attempt's to cut."""

    def _new_conn(self) -> socket.socket:
        guard = _current_guard()
        host = self._dns_host
        if guard is None or _is_address(host):
            sock = super()._new_conn()
        else:
            addresses = _resolve(self, host, self.port, guard.deadline - time.monotonic())
            error = None
            for address in addresses:
                self._dns_host = address
                try:
                    sock = super()._new_conn()
                    break
                except urllib3.exceptions.NewConnectionError as exc:
                    error = exc
                finally:
                    self._dns_host = host
            else:
                raise error or urllib3.exceptions.NewConnectionError(self, f"no address for {host}")
        if guard is not None:
            WATCHDOG.watch(guard, self._watchable(sock))
        return sock

    def _watchable(self, sock: socket.socket) -> socket.socket:
        return sock

    def request(self, *args, **kwargs):
        guard = _current_guard()
        if guard is not None and self.sock is not None:
            WATCHDOG.watch(guard, self.sock)  # a pooled connection, already open
        return super().request(*args, **kwargs)


class _HTTPConnection(_Watched, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_Watched, urllib3.connection.HTTPSConnection):
    _handshake: socket.socket | None = None

    def _watchable(self, sock: socket.socket) -> socket.socket:
        # Wrapping the socket for TLS detaches it; a duplicate of its descriptor stays
        # valid through the handshake, and the wrapped socket is watched once it exists.
        self._handshake = sock.dup()
        return self._handshake

    def connect(self) -> None:
        try:
            super().connect()
        finally:
            guard = _current_guard()
            if guard is not None and self.sock is not None:
                WATCHDOG.watch(guard, self.sock)
            if self._handshake is not None:
                self._handshake.close()
                self._handshake = None


class _HTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class BoundedAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter with connections the watchdog can cut, and no retries of its own."""

    def __init__(self, pool_maxsize: int = 1):
        super().__init__(pool_connections=1, pool_maxsize=max(pool_maxsize, 1), max_retries=0)

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, *args, **kwargs):
        manager = super().proxy_manager_for(*args, **kwargs)
        manager.pool_classes_by_scheme = _POOLS
        return manager


def new_session(pool_maxsize: int = 1) -> requests.Session:
    """Return a session whose requests ``probe`` and ``RefreshClient`` can bound."""
    session = requests.Session()
    adapter = BoundedAdapter(pool_maxsize)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update(
        {
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            "Accept-Encoding": ACCEPT_ENCODING,
        }
    )
    return session
