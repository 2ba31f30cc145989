"""When to try a job again, and how long to wait first."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# Answers worth another attempt: the backend is down, overloaded or briefly broken.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """Full-jitter exponential backoff, with the server's ``Retry-After`` honoured.

    The wait before attempt ``n + 1`` (after ``n`` failures) is
    ``uniform(0, min(max_delay, base_delay * 2 ** (n - 1)))``; when the server sent
    ``Retry-After: s``, it is ``max(that, min(s, retry_after_cap))``. Full jitter spreads
    the retries of many jobs that failed together, so they do not return in a herd.
    """

    max_attempts: int = 3
    base_delay: float = 1.0
    max_delay: float = 30.0
    retry_after_cap: float = 120.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def should_retry(self, attempt: int) -> bool:
        """Return whether another attempt may follow attempt number ``attempt`` (1-based)."""
        return attempt < self.max_attempts

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Return the seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        wait = self.rng.uniform(0, ceiling)
        if retry_after is not None:
            wait = max(wait, min(max(retry_after, 0.0), self.retry_after_cap))
        return wait
