"""What the end of a run says: the Results line's extras and the one-line diagnosis when
every job failed the same way."""

from __future__ import annotations

import logging
from collections import Counter

from .outcome import Failure, JobRecord
from .settings import Settings
from .urls import display_url

log = logging.getLogger(__name__)


def extras(counts: Counter, unchanged: int, retries: int) -> str:
    fresh = counts["skipped"]  # unchanged keys have no record: only counted
    parts = [
        f"{n} {label}"
        for n, label in (
            (unchanged, "skipped as unchanged"),
            (fresh, "skipped as fresh"),
            (counts["not_attempted"], "not attempted"),
        )
        if n
    ]
    if retries:
        parts.append(f"{retries} {'retry' if retries == 1 else 'retries'}")
    return f" ({', '.join(parts)})" if parts else ""


def summarise_failures(job_records: list[JobRecord], settings: Settings) -> None:
    """When every attempted job failed the same way, say once what it likely means."""
    failed = [r for r in job_records if r.status == "failed"]
    attempted = [r for r in job_records if r.status in ("failed", "succeeded")]
    if len(failed) < 2 or len(failed) != len(attempted):
        return
    # The same kind of failure, and for an HTTP error the same status.
    ways = {(r.failure, r.http_status if r.failure is Failure.HTTP else None) for r in failed}
    if len(ways) != 1:
        return
    failure, status = ways.pop()
    if failure in (Failure.CONNECTION, Failure.TIMEOUT):
        fix = (
            "start the dashboard API or correct ANALYTICS_API_URL; `analytics-refresh check` "
            "probes it"
        )
    elif status in (401, 403):
        fix = "the runner and the API must share API_SECRET_KEY; `analytics-refresh check`"
    elif status == 404:
        fix = f"check ANALYTICS_ENDPOINT (now {settings.endpoint})"
    else:
        fix = "see the API's log; `analytics-refresh check` probes it"
    log.error(
        "❌ Every job failed the same way (%s) calling %s: %s",
        (failed[0].error or "").split(";")[0],
        display_url(settings.endpoint_url),
        fix,
    )
