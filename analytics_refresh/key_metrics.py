"""The record's metrics: every key's freshness as a few aggregates, and the worst keys by name.

A series per key would make the file grow with the clients (300,000 series at 100,000
clients); these families hold a fixed number per shard and platform, plus
``METRICS_WORST_KEYS`` series naming the stalest keys for the on-call engineer. Times are
timestamps, not ages, so an alert sees a key age even when no run comes to write the file.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from .key_freshness import Summary

PREFIX = "analytics_refresh_"
LAST_SUCCESS = PREFIX + "last_success_timestamp_seconds"
AGE = PREFIX + "key_age_seconds"
WORST = PREFIX + "worst_key_last_current_timestamp_seconds"
# (name, help, PlatformSummary field) of the per-platform counts.
COUNTS = (
    ("keys", "Keys (client x platform) a run plans.", "keys"),
    ("keys_never_refreshed", "Keys never known current (no refresh yet).", "never"),
    ("keys_outside_promise", "Keys whose copy is older than the promise.", "outside_promise"),
    ("keys_failing", "Keys whose last attempt failed.", "failing"),
    (
        "keys_failing_repeatedly",
        "Keys whose last 3 or more attempts in a row failed.",
        "failing_repeatedly",
    ),
)
# (name, help) of the per-platform times; 0 means a key was never current.
TIMES = (
    (
        "oldest_key_current_timestamp_seconds",
        "When the stalest key was last known current (0: a key never was).",
    ),
    (
        "newest_key_current_timestamp_seconds",
        "When the freshest key was last known current (0: none ever was).",
    ),
    (
        "promise_end_timestamp_seconds",
        "When the first key falls outside the promise unless refreshed (0: one already did).",
    ),
)
REQUEST_SUCCESS = PREFIX + "last_request_success_timestamp_seconds"
COPY_LIFETIME = PREFIX + "copy_lifetime_seconds"
# One aggregate an alert can hold: the share of the shard's keys within the promise.
WITHIN = PREFIX + "keys_within_promise_ratio"
FAMILIES = frozenset(
    [LAST_SUCCESS, AGE, WORST, REQUEST_SUCCESS, COPY_LIFETIME, WITHIN, PREFIX + "promise_seconds"]
    + [PREFIX + name for name, _, _ in COUNTS]
    + [PREFIX + name for name, _ in TIMES]
)


def _epoch(value: datetime | None) -> float:
    return 0.0 if value is None else value.timestamp()


class Known:
    """A collector of the record's families for one shard."""

    def __init__(self, families=()):
        self.families = list(families)

    def collect(self):
        yield from self.families


def from_summary(summary: Summary, last_success: float | None, shard: str, promise: float):
    """Return the record's families: counts, ages, times and the worst keys of ``shard``."""
    families = []
    run = GaugeMetricFamily(
        LAST_SUCCESS,
        "When the last run that refreshed every job ended (0: never).",
        labels=["shard"],
    )
    run.add_metric([shard], last_success or 0.0)
    families.append(run)
    bound = GaugeMetricFamily(
        PREFIX + "promise_seconds",
        "How long a copy may go without being known current.",
        labels=["shard"],
    )
    bound.add_metric([shard], promise)
    families.append(bound)
    keys = sum(p.keys for p in summary.platforms.values())
    outside = sum(p.outside_promise for p in summary.platforms.values())
    within = GaugeMetricFamily(
        WITHIN,
        "Share of the keys a run plans that are within the promise (1 with no key).",
        labels=["shard"],
    )
    within.add_metric([shard], 1 - outside / keys if keys else 1.0)
    families.append(within)
    platforms = list(summary.platforms.values())
    newest = [p.newest_success_at for p in platforms if p.newest_success_at is not None]
    request = GaugeMetricFamily(
        REQUEST_SUCCESS,
        "When a refresh request of any key last succeeded (0: never); keys skipped as "
        "unchanged do not move it.",
        labels=["shard"],
    )
    request.add_metric([shard], max(newest).timestamp() if newest else 0.0)
    families.append(request)
    lifetimes = [p.copy_lifetime for p in platforms if p.copy_lifetime is not None]
    lifetime = GaugeMetricFamily(
        COPY_LIFETIME,
        "How long a refreshed copy lives: the longest declared expiry of the kept copies, "
        "else the promise's maximum age.",
        labels=["shard"],
    )
    lifetime.add_metric([shard], max(lifetimes) if lifetimes else promise)
    families.append(lifetime)
    for name, doc, attr in COUNTS:
        family = GaugeMetricFamily(PREFIX + name, doc, labels=["shard", "platform"])
        for p in platforms:
            family.add_metric([shard, p.platform], getattr(p, attr))
        families.append(family)
    ages = HistogramMetricFamily(
        AGE,
        "Keys by time since last known current (never current: only in +Inf, not in the sum).",
        labels=["shard", "platform"],
    )
    for p in platforms:
        ages.add_metric([shard, p.platform], p.cumulative(), sum_value=p.age_sum)
    families.append(ages)
    times = {
        name: GaugeMetricFamily(PREFIX + name, doc, labels=["shard", "platform"])
        for name, doc in TIMES
    }
    for p in platforms:
        if not p.keys:  # no key: nothing can be stale, and no time to show
            continue
        labels = [shard, p.platform]
        oldest = 0.0 if p.never else _epoch(p.oldest_current_at)
        times["oldest_key_current_timestamp_seconds"].add_metric(labels, oldest)
        times["newest_key_current_timestamp_seconds"].add_metric(
            labels, _epoch(p.newest_current_at)
        )
        end = 0.0 if p.never else _epoch(p.first_promise_end)
        times["promise_end_timestamp_seconds"].add_metric(labels, end)
    families += times.values()
    worst = GaugeMetricFamily(
        WORST,
        "The stalest keys by name: when each was last known current (0: never).",
        labels=["shard", "platform", "client_id"],
    )
    for key in summary.worst:
        worst.add_metric([shard, key.platform, key.client_id], _epoch(key.current_at))
    families.append(worst)
    return Known(families)


def from_previous_text(text: str) -> Known:
    """Return the record's families as a previous file holds them; empty when unreadable."""
    try:
        families = [f for f in text_string_to_metric_families(text) if f.name in FAMILIES]
    except (ValueError, KeyError):
        return Known()
    return Known(families)
