"""How many requests a run keeps in flight: a fixed limit, or one that finds the backend's
capacity by itself under the ``REFRESH_CONCURRENCY`` ceiling."""

from __future__ import annotations

import itertools
import logging
import math
import statistics
import threading
import time
from collections.abc import Callable, Hashable, Mapping

from analytics_refresh.http.client import Attempt, Verdict
from analytics_refresh.model.outcome import Failure
from analytics_refresh.run.latency import MEDIAN_ERROR, Baseline, Window

log = logging.getLogger(__name__)

# Answers that mean "too much load": the backend shed the request or gave up on it.
OVERLOAD_STATUSES = frozenset({429, 503, 504})


class FixedLimit:
    """A constant limit: ``REFRESH_ADAPTIVE=false``, or a ceiling of 1."""

    slow_start = False

    def __init__(self, limit: int):
        self.limit = limit
        self.ceiling = limit

    def begin(self, key: Hashable) -> object:
        """Note that a request for ``key`` starts; return a ticket for ``observe``."""
        return None

    def observe(self, ticket: object, attempt: Attempt) -> None:
        """Take note of one attempt's outcome (a fixed limit ignores it)."""

    def check(self) -> None:
        """Look at the requests still out (a fixed limit does not)."""

    def blocked(self) -> None:
        """Note that a job waits for a slot (a fixed limit does not care)."""


class AdaptiveLimit:
    """A latency-based limit in the manner of TCP Vegas and Netflix's Gradient2.

    A big client's dashboard is slow because it is big, not because the backend is busy,
    so each answer is judged against what that job takes with no queue: ``expected``, its
    last successful duration. A job without one is judged on a retry against its own first
    answer divided by the run's ratio then; that first answer is judged as "cold", against
    other history-less answers, with wider tolerances (their sizes differ) and no slow
    start. Requests are
    judged in windows of ``max(MIN_WINDOW, limit / 2)`` sent under one limit, once all
    have answered (windows sent under an earlier limit are dropped)::

        x   = median of ln((latency + F) / (expected + F))      (cold: of ln(latency + F))
        x0  = the no-load level of x (latency.Baseline)
        e   = the standard error of x (from the window's spread): noise, not a queue
        g   = exp(x0) * sum(expected + F) / sum(latency + F)     1 with no queue, 0.5 when
                                                   half of the time is spent waiting
        if x - x0 > max(ln(1 + CUT_TOLERANCE), 3.5e):  a queue builds: back to what is served
            limit = max(1, min(limit, mean in flight) * max(g, 1 - BACKOFF))  at once (Little)
        elif x - x0 > max(ln(1 + GROW_TOLERANCE), 2.5e):  about one request queues: limit -= 1
        elif x - x0 > max(ln(1 + GROW_TOLERANCE), 1.5e):  hold
        elif the limit held the run back (all slots busy, a job waiting):
            limit = min(ceiling, limit * SLOW_START_GROWTH in slow start, else limit + 1)
            (from one below the highest limit since the last decrease, only every
            PROBE_EVERY such windows)

    Any decrease ends slow start; a window sent one request at a time, which sets a new
    no-load level, starts it again. Two signals do not wait for a window: an overload answer
    (429, 503, 504) or a timeout to a request sent under the current limit, which cuts
    ``limit *= 1 - BACKOFF``; and requests still out far past their expected time (see
    ``check``). ``F``, the median expected time (at least FLOOR_SECONDS), weighs a wait as
    a dashboard user does, against how long a dashboard takes: 3 ms more for a 5 ms job is
    no queue, while a long job's own ratio stays its own.
    """

    # The old fixed default: safe to start with on any backend the runner has served.
    INITIAL = 4
    MIN_WINDOW = 8
    SLOW_START_GROWTH = 1.5
    GROW_TOLERANCE = 0.05
    CUT_TOLERANCE = 0.15
    PROBE_EVERY = 3
    COLD_GROW_TOLERANCE = 0.3
    COLD_CUT_TOLERANCE = 1.0
    BACKOFF = 0.5
    # F = max(FLOOR_SECONDS, FLOOR_SHARE * the median expected time).
    FLOOR_SECONDS = 0.01
    FLOOR_SHARE = 1.0
    # Below this spread (MAD of ln ratios, about 10% from run to run) a window's own is
    # taken for luck: job times are never that steady.
    SPREAD_FLOOR = 0.07
    LATE_FACTOR = 2.0
    CHECK_SECONDS = 0.02

    def __init__(
        self,
        ceiling: int,
        expected: Mapping[Hashable, float] | None = None,
        *,
        initial: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.ceiling = max(1, ceiling)
        self._limit = float(min(self.ceiling, initial or self.INITIAL))
        self.expected = expected if expected is not None else {}
        typical = statistics.median(self.expected.values()) if self.expected else 0.0
        self.floor = max(self.FLOOR_SECONDS, self.FLOOR_SHARE * typical)
        self.clock = clock
        self.slow_start = True
        self.changes = 0
        self._learned: dict[Hashable, float] = {}
        self._baselines = {False: Baseline(prior=0.0), True: Baseline(prior=None)}  # by "cold"
        self._ratio = 1.0  # the run's latest latency ratio, for jobs without history
        self._knee: float | None = None  # the limit before the last decrease, or higher
        self._quiet = 0  # quiet windows since the limit last moved
        self._epoch = 0  # counts limit changes
        self._sending = Window(self._epoch, self._window_size())
        self._out: dict[int, tuple[float, Hashable, Window]] = {}  # ticket: (sent, key, window)
        self._tickets = itertools.count()
        self._checked_at = -math.inf
        self._mutex = threading.Lock()

    @property
    def limit(self) -> int:
        return max(1, int(self._limit))

    @property
    def in_flight(self) -> int:
        return len(self._out)

    def begin(self, key: Hashable) -> object:
        """Note that a request for ``key`` starts; return a ticket for ``observe``."""
        with self._mutex:
            ticket = next(self._tickets)
            window = self._sending
            self._out[ticket] = (self.clock(), key, window)
            window.send(len(self._out))
            if window.full:
                self._sending = Window(self._epoch, self._window_size())
            return ticket

    def observe(self, ticket: object, attempt: Attempt) -> None:
        """Take note of one attempt's outcome; judge its window once all have answered."""
        with self._mutex:
            _, key, window = self._out.pop(ticket)  # type: ignore[call-overload]
            window.answered += 1
            current = window.epoch == self._epoch
            if _overloaded(attempt):
                if current:
                    self._change(self._limit * (1 - self.BACKOFF), attempt.error or "overloaded")
                return
            if attempt.http_status is not None:  # else refused or reset: nothing computed
                latency = max(attempt.elapsed, 0.0) + self.floor
                expected = self._expected(key)
                if expected is None:
                    if attempt.verdict is not Verdict.SUCCESS:  # a retry will follow
                        self._learned[key] = max(0.0, latency / self._ratio - self.floor)
                    window.judged[True].append(math.log(latency))
                else:
                    window.judged[False].append(math.log(latency / (expected + self.floor)))
                    window.latency_sum += latency
                    window.expected_sum += expected + self.floor
            if current and window.complete:
                self._decide(window)

    def blocked(self) -> None:
        """Note that a job waits for a slot: the limit is what holds the run back."""
        with self._mutex:
            self._sending.blocked = True

    def check(self) -> None:
        """Cut at once when requests still out are far later than their jobs should take.

        A queue behind long jobs shows first in the requests stuck in it, long before their
        window is complete. A request sent under the current limit is late past
        ``LATE_FACTOR`` times its expected time at the no-load level; the limit then falls
        to the requests not late: those being served, as far as the runner can tell.
        """
        with self._mutex:
            now = self.clock()
            if now - self._checked_at < self.CHECK_SECONDS:
                return
            self._checked_at = now
            level = math.exp(self._baselines[False].level) * self.LATE_FACTOR
            late = 0
            for started, key, window in self._out.values():
                expected = self._expected(key)
                if window.epoch == self._epoch and expected is not None:
                    late += now - started > (expected + self.floor) * level
            if late:
                on_time = len(self._out) - late
                self._change(min(self._limit, max(1, on_time)), f"{late} requests late")

    # -- deciding -------------------------------------------------------------------------
    def _expected(self, key: Hashable) -> float | None:
        expected = self.expected.get(key)
        return self._learned.get(key) if expected is None else expected

    def _window_size(self) -> int:
        return max(self.MIN_WINDOW, math.ceil(self._limit / 2))

    def _decide(self, window: Window) -> None:
        known, cold = window.judged[False], window.judged[True]
        is_cold = len(cold) > len(known)
        values = cold if is_cold else known
        if len(values) < self.MIN_WINDOW // 2:
            return  # mostly overload answers or refusals: already acted on
        median = statistics.median(values)
        base = self._baselines[is_cold]
        if not is_cold:
            self._ratio = math.exp(median)
        if window.mean_in_flight <= 1.0:
            # One request at a time cannot queue behind itself: this is the backend's
            # no-load level now, even if it is slower than history says. Knees found
            # against the old level mean nothing: search again from here.
            base.reset(median)
            self._knee = None
            self.slow_start = True
        else:
            base.add(median)
        excess = median - base.level
        grow, cut = (
            (self.COLD_GROW_TOLERANCE, self.COLD_CUT_TOLERANCE)
            if is_cold
            else (self.GROW_TOLERANCE, self.CUT_TOLERANCE)
        )
        # Jobs do not take exactly what they took last time: a window's median wanders by
        # about its standard error, and only an excess well beyond that is a queue. The
        # spread is the recent windows' typical one, as one window's own is noisy too.
        base.spreads.append(statistics.median(abs(v - median) for v in values))
        spread = max(self.SPREAD_FLOOR, statistics.median(base.spreads))
        error = MEDIAN_ERROR * spread / math.sqrt(len(values))
        what = "cold latency" if is_cold else "latency"
        why = f"{what} {math.exp(excess):.2f}x its no-load level"
        if excess > max(math.log1p(cut), 3.5 * error):
            # The median says whether there is a queue; how deep it is, Little's law says
            # better from the sums: short jobs, which dominate a median, feel a wait most.
            if is_cold or not window.expected_sum:
                gradient = math.exp(-excess)
            else:
                gradient = math.exp(base.level) * window.expected_sum / window.latency_sum
            gradient = min(1.0, max(gradient, 1 - self.BACKOFF))
            self._change(min(self._limit, window.mean_in_flight) * gradient, why)
        elif excess > max(math.log1p(grow), 2.5 * error):
            # About one request queues: step back one, as Vegas does.
            self._change(self._limit - 1, why)
        elif excess > max(math.log1p(grow), 1.5 * error):
            return  # maybe a queue, maybe noise: hold
        elif window.peak >= self.limit or window.blocked:
            self._quiet += 1
            if self.slow_start and not is_cold:
                self._change(min(float(self.ceiling), self._limit * self.SLOW_START_GROWTH), why)
            elif (
                self._knee is None
                or self._limit + 1 < self._knee
                or (self._quiet >= self.PROBE_EVERY)
            ):
                # Below the last limit that queued, climb back at once; at it and past it,
                # one step every few quiet windows: a step past the knee is paid for by
                # users, in waits.
                self._change(min(float(self.ceiling), self._limit + 1), why)

    def _change(self, limit: float, why: str) -> None:
        before = self.limit
        limit = max(1.0, limit)
        if limit == self._limit:
            return
        if limit < self._limit:
            self.slow_start = False
            self._knee = self._limit
        elif self._knee is not None and limit > self._knee:
            self._knee = limit  # past the old knee: the new one is as far as it has been
        self._quiet = 0
        self._limit = limit
        # Whatever was sent under the old limit cannot judge the new one.
        self._epoch += 1
        self._sending = Window(self._epoch, self._window_size())
        if self.limit != before:
            self.changes += 1
            log.debug("Concurrency limit %d -> %d (%s)", before, self.limit, why)


def _overloaded(attempt: Attempt) -> bool:
    return attempt.http_status in OVERLOAD_STATUSES or attempt.failure is Failure.TIMEOUT


def make_limit(
    ceiling: int,
    adaptive: bool,
    expected: Mapping[Hashable, float] | None = None,
    learned: int | None = None,
):
    """Return the run's limit: adaptive under ``ceiling``, or fixed at it.

    An adaptive limit starts where the last run settled (``learned``), without the slow
    start: that run measured the backend's capacity two hours ago, and beginning at 4 would
    only earn 503s or waste the first minutes finding it again.
    """
    if adaptive and ceiling > 1:
        limit = AdaptiveLimit(ceiling, expected, initial=learned)
        if learned:
            limit.slow_start = False
        return limit
    return FixedLimit(ceiling)
