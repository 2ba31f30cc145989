"""What a live listener does in the background: renews its claims and its row, pings the
heartbeat URL and writes its metrics, on a connection of its own.

One thread. Claims are renewed every few seconds, so a listener cut off from the database
for longer than the lease stops starting work (its rounds' keeper sees the claims lapse)
and another listener may take its keys. A heartbeat ping goes out once a minute while the
database answers, so a listener that is alive but useless lets its check go down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .. import db
from ..errors import first_line
from ..heartbeat import Heartbeat
from ..key_claims import RENEW_SECONDS, Claims
from . import queries as sql
from .gauges import Gauges
from .guard import bounded

log = logging.getLogger(__name__)

PUBLISH_SECONDS = 60.0
STATEMENT_SECONDS = 10.0


class Beacon:
    """Renews, beats, pings and publishes until ``close()``."""

    def __init__(
        self,
        url: str,
        listener_id: str,
        claims: Claims,
        gauges: Gauges,
        heartbeat: Heartbeat | None,
        describe: Callable[[], dict],
        alive_file=None,
    ):
        self.url = url
        self.listener_id = listener_id
        self.claims = claims
        self.gauges = gauges
        self.heartbeat = heartbeat
        self.describe = describe  # {"mode", "refreshes", "healthy", "progressing", "summary"}
        self.conn = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="listen-beacon", daemon=True)
        self._failing = False
        self.alive_file = alive_file
        self._touch_failed = False

    def start(self) -> Beacon:
        self._thread.start()
        return self

    def _loop(self) -> None:
        published = 0.0
        while not self._done.wait(RENEW_SECONDS):
            self.renew()
            now = time.monotonic()
            if now - published >= PUBLISH_SECONDS:
                published = now
                self.publish()

    def renew(self) -> None:
        """Renew the claims and this listener's row; never raise."""
        state = self.describe()
        try:
            if self.conn is None or self.conn.closed:
                self.conn = db.connect(
                    self.url,
                    application_name="analytics-refresh listen beacon",
                    statement_ceiling=STATEMENT_SECONDS,
                )
            with bounded(self.conn, STATEMENT_SECONDS + 5):
                self.claims.renew(self.conn)
                with self.conn.cursor() as cur:
                    cur.execute(
                        sql.BEAT,
                        {
                            "listener_id": self.listener_id,
                            "mode": state["mode"],
                            "refreshes": state["refreshes"],
                        },
                    )
        except Exception as exc:
            if not self._failing:
                log.warning("⚠️ Listener could not renew its claims (%s)", first_line(exc))
            self._failing = True
            if self.conn is not None:
                self.conn.close()
                self.conn = None
        else:
            self._failing = False
        self.touch(state)

    def touch(self, state: dict) -> None:
        """Touch the alive file while the loop makes progress; never raise."""
        path = self.alive_file
        if path is None or not state["progressing"]:
            return
        try:
            path.touch()
        except OSError as exc:
            if not self._touch_failed:
                log.warning("⚠️ Cannot touch REFRESH_ALIVE_FILE %s: %s", path, exc.strerror or exc)
            self._touch_failed = True

    def publish(self) -> None:
        """Write the metrics and ping the heartbeat while healthy; never raise."""
        state = self.describe()
        try:
            if self.conn is not None and not self.conn.closed:
                with bounded(self.conn, STATEMENT_SECONDS + 5), self.conn.cursor() as cur:
                    # Rounds cut off by a lost database, here or on a killed listener.
                    cur.execute(sql.ABANDON_ROUNDS, (self.claims.lease * 2,))
                    cur.execute(sql.PRUNE_LISTENERS)
        except Exception as exc:
            log.debug("Listener could not tidy its rounds (%s)", first_line(exc))
        try:
            self.gauges.notify.set(1 if state["mode"] == "notify" else 0)
            self.gauges.publish()
            if self.heartbeat is not None and state["healthy"] and not self._failing:
                self.heartbeat.finish(0, state["summary"], None)
        except Exception as exc:  # monitoring never stops the listener
            log.warning("⚠️ Listener monitoring failed once (%s)", type(exc).__name__)

    def close(self) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(STATEMENT_SECONDS + 10)
        if self.conn is not None:
            self.conn.close()
            self.conn = None
