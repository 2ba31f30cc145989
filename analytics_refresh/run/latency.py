"""What the adaptive limit judges latency by: windows of requests and their no-load level."""

from __future__ import annotations

import collections
import statistics

# The standard error of a median of n normal values is this times their MAD / sqrt(n):
# sqrt(pi / 2) for the median, 1.4826 from the MAD to the standard deviation.
MEDIAN_ERROR = 1.2533 * 1.4826


class Window:
    """Requests sent one after another under one limit, judged once all have answered.

    Judging by the time of sending, not of answering, matters: the first answers after a
    change are the fast ones, and a window closed on them would never see the queue.
    """

    def __init__(self, epoch: int, size: int):
        self.epoch = epoch
        self.size = size
        self.sent = 0
        self.answered = 0
        self.judged: dict[bool, list[float]] = {False: [], True: []}  # keyed by "cold"
        self.latency_sum = self.expected_sum = 0.0  # judged answers with history
        self.in_flight_sum = 0
        self.peak = 0
        self.blocked = False  # a job waited for a slot while this window was sent

    def send(self, in_flight: int) -> None:
        self.sent += 1
        self.in_flight_sum += in_flight
        self.peak = max(self.peak, in_flight)

    @property
    def full(self) -> bool:
        return self.sent >= self.size

    @property
    def complete(self) -> bool:
        return self.full and self.answered >= self.sent

    @property
    def mean_in_flight(self) -> float:
        return self.in_flight_sum / max(1, self.sent)


class Baseline:
    """The no-load level of a window statistic.

    The lower of a prior and the median of the last ``HISTORY`` window medians. For judged
    answers the prior is 0 (ln 1): history says a job takes what it took last time. Recent
    windows can only lower the level (when history was slower than the backend is now),
    since a limit hovering at the knee sees a little queue in most windows and would
    otherwise ratchet its own yardstick up. Only a window run one request at a time, which
    cannot queue behind itself, may raise it. Cold answers have no prior: their level is
    the lower quartile of the recent windows' medians.
    """

    HISTORY = 20

    def __init__(self, prior: float | None = None):
        self.prior = prior
        self.recent: collections.deque[float] = collections.deque(maxlen=self.HISTORY)
        # The spread (median absolute deviation) of recent windows: how noisy answers are.
        self.spreads: collections.deque[float] = collections.deque(maxlen=self.HISTORY)

    def add(self, median: float) -> None:
        self.recent.append(median)

    def reset(self, median: float) -> None:
        if self.prior is not None:
            self.prior = median
        self.recent.clear()
        self.recent.append(median)

    @property
    def level(self) -> float:
        if not self.recent:
            return self.prior or 0.0
        if self.prior is not None:
            return min(self.prior, statistics.median(self.recent))
        if len(self.recent) == 1:
            return self.recent[0]
        # No prior to cap it: a low quantile, so a limit hovering over the knee does not
        # carry its yardstick up with it.
        return statistics.quantiles(self.recent, n=4)[0]
