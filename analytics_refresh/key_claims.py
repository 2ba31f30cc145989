"""Claims on keys: one holder at a time per key, under a lease its holder renews.

A holder is a listener (``listen:<host>:<pid>:<n>``) or a run (``run:<run id>``). A claim
is taken with one statement per batch, each row locked on its own and any row another
holder is taking skipped (``FOR UPDATE SKIP LOCKED``), so two listeners never take the
same key; its lease (``claimed_until``) frees the key by itself once a killed holder stops
renewing it. Releasing a key after a success records the change versions read when it
was claimed, so a change that lands during the refresh leaves the key pending: exactly one
more refresh follows, however many changes came.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg2.extras

from .plan import Job

log = logging.getLogger(__name__)

ENSURE_ROWS = """
    INSERT INTO refresh_claims (client_id, platform)
    SELECT * FROM unnest(%(clients)s::uuid[], %(platforms)s::text[])
    ON CONFLICT DO NOTHING
"""
# A listener takes each free key that is still pending, skipping rows another holder has
# locked this instant, and reads the versions its refresh will cover.
CLAIM = """
    WITH free AS (
        SELECT c.client_id, c.platform
        FROM refresh_claims AS c
        JOIN unnest(%(clients)s::uuid[], %(platforms)s::text[]) AS w (client_id, platform)
          ON c.client_id = w.client_id AND c.platform = w.platform
        WHERE (c.claimed_until IS NULL OR c.claimed_until < now())
          AND EXISTS (SELECT 1 FROM refresh_requests AS r
                      WHERE r.client_id = c.client_id
                        AND (c.platform = 'all' OR r.platform = c.platform)
                        AND r.version > CASE r.platform WHEN 'shopify' THEN c.covered_shopify
                                                        ELSE c.covered_amazon END)
        FOR UPDATE OF c SKIP LOCKED
    )
    UPDATE refresh_claims AS c
    SET claimed_by = %(holder)s, claimed_until = now() + %(lease)s * interval '1 second'
    FROM free
    WHERE c.client_id = free.client_id AND c.platform = free.platform
    RETURNING c.client_id::text, c.platform, now(),
        (SELECT r.version FROM refresh_requests AS r
         WHERE r.client_id = c.client_id AND r.platform = 'shopify'),
        (SELECT r.version FROM refresh_requests AS r
         WHERE r.client_id = c.client_id AND r.platform = 'amazon')
"""
# A run takes one key unless a live holder has it (a failed key's pause does not stop a
# run, whose schedule says when it is due).
CLAIM_FOR_RUN = """
    INSERT INTO refresh_claims AS c (client_id, platform, claimed_by, claimed_until)
    VALUES (%(client_id)s, %(platform)s, %(holder)s, now() + %(lease)s * interval '1 second')
    ON CONFLICT (client_id, platform) DO UPDATE
        SET claimed_by = excluded.claimed_by, claimed_until = excluded.claimed_until
        WHERE c.claimed_by IS NULL OR c.claimed_until < now() OR c.claimed_by = %(holder)s
    RETURNING now(),
        (SELECT r.version FROM refresh_requests AS r
         WHERE r.client_id = %(client_id)s AND r.platform = 'shopify'),
        (SELECT r.version FROM refresh_requests AS r
         WHERE r.client_id = %(client_id)s AND r.platform = 'amazon')
"""
RENEW = """
    UPDATE refresh_claims SET claimed_until = now() + %(lease)s * interval '1 second'
    WHERE claimed_by = %(holder)s
"""
# How each claimed key ended: a success covers the versions read at its claim; a failure
# pauses the key (doubling, capped) so a failing backend is not called in a loop; a key
# never attempted (a stop) is only let go.
RELEASE = """
    WITH b (client_id, platform, outcome, shopify, amazon, read_at, holder, pause, pause_max)
        AS (VALUES %s)
    UPDATE refresh_claims AS c SET
        claimed_by = NULL,
        claimed_until = CASE WHEN b.outcome = 'failed'
            THEN now() + least(b.pause_max, b.pause * 2 ^ least(c.failures, 16))
                         * interval '1 second' END,
        failures = CASE b.outcome WHEN 'succeeded' THEN 0
                                  WHEN 'failed' THEN c.failures + 1 ELSE c.failures END,
        covered_shopify = CASE WHEN b.outcome = 'succeeded'
            THEN greatest(c.covered_shopify, coalesce(b.shopify, 0)) ELSE c.covered_shopify END,
        covered_amazon = CASE WHEN b.outcome = 'succeeded'
            THEN greatest(c.covered_amazon, coalesce(b.amazon, 0)) ELSE c.covered_amazon END,
        covered_at = CASE WHEN b.outcome = 'succeeded' THEN b.read_at ELSE c.covered_at END
    FROM b
    WHERE c.client_id = b.client_id::uuid AND c.platform = b.platform
      AND c.claimed_by = b.holder
"""
RELEASE_TEMPLATE = (
    "(%s, %s, %s, %s::bigint, %s::bigint, %s::timestamptz, %s, %s::float8, %s::float8)"
)
# A source row's first unreflected change is cleared once every key that follows it has
# covered its version, so the next burst is timed from its own first change.
CLEAR_PENDING = """
    UPDATE refresh_requests AS r SET pending_since = NULL
    WHERE r.client_id = ANY (%(clients)s::uuid[]) AND r.pending_since IS NOT NULL
      AND NOT EXISTS (
          SELECT 1
          FROM unnest(%(platforms)s::text[]) AS k (platform)
          LEFT JOIN refresh_claims AS c ON c.client_id = r.client_id AND c.platform = k.platform
          WHERE k.platform IN (r.platform, 'all')
            AND EXISTS (SELECT 1 FROM client_api_credentials AS a
                        WHERE a.client_id = r.client_id AND a.status = 'connected'
                          AND (k.platform = 'all' OR a.platform = k.platform))
            AND r.version > CASE r.platform WHEN 'shopify' THEN coalesce(c.covered_shopify, 0)
                                            ELSE coalesce(c.covered_amazon, 0) END)
"""
LET_GO = "UPDATE refresh_claims SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = %s"


# A live holder renews its claims every RENEW_SECONDS; a claim not renewed for LEASE_SECONDS
# belongs to a holder that is gone (six missed renewals: room for a database restart).
LEASE_SECONDS = 30.0
RENEW_SECONDS = 5.0
# A key whose refresh failed after its retries waits this long before anyone tries it
# again, doubling with each further failure up to PAUSE_MAX_SECONDS.
PAUSE_SECONDS = 15.0
PAUSE_MAX_SECONDS = 600.0


@dataclass(frozen=True)
class Claim:
    """A key this holder has taken, with the change versions its refresh will cover."""

    job: Job
    read_at: datetime
    shopify: int | None
    amazon: int | None


class Claims:
    """One holder's claims, on a connection the caller owns (autocommit)."""

    def __init__(self, holder: str, lease: float = LEASE_SECONDS):
        self.holder = holder
        self.lease = lease
        self.held: dict[Job, Claim] = {}
        self.renewed_at = time.monotonic()
        self.lost = False  # a renewal found fewer claims than held, or came too late
        self._mutex = threading.Lock()

    # -- a listener's batch ---------------------------------------------------------------
    def take(self, conn, jobs: Sequence[Job]) -> list[Claim]:
        """Claim each of ``jobs`` that is free and still pending; return those taken."""
        if not jobs:
            return []
        params = {
            "clients": [j.client_id for j in jobs],
            "platforms": [j.platform for j in jobs],
            "holder": self.holder,
            "lease": self.lease,
        }
        with conn.cursor() as cur:
            cur.execute(ENSURE_ROWS, params)
            cur.execute(CLAIM, params)
            rows = cur.fetchall()
        taken = [Claim(Job(c, p), at, s, a) for c, p, at, s, a in rows]
        with self._mutex:
            if not self.held:
                self.renewed_at, self.lost = time.monotonic(), False
            for claim in taken:
                self.held[claim.job] = claim
        return taken

    # -- a run's single key ---------------------------------------------------------------
    def take_one(self, conn, job: Job) -> Claim | None:
        """Claim ``job`` for a run unless a live holder has it; return the claim or None."""
        params = {
            "client_id": job.client_id,
            "platform": job.platform,
            "holder": self.holder,
            "lease": self.lease,
        }
        with conn.cursor() as cur:
            cur.execute(CLAIM_FOR_RUN, params)
            row = cur.fetchone()
        if row is None:
            return None
        claim = Claim(job, *row)
        with self._mutex:
            if not self.held:
                self.renewed_at, self.lost = time.monotonic(), False
            self.held[job] = claim
        return claim

    # -- while held -------------------------------------------------------------------------
    def renew(self, conn) -> None:
        """Push the lease of every claim held further out; note any claim lost meanwhile."""
        with self._mutex:
            count = len(self.held)
        if not count:
            self.renewed_at = time.monotonic()
            return
        started = time.monotonic()
        with conn.cursor() as cur:
            cur.execute(RENEW, {"holder": self.holder, "lease": self.lease})
            renewed = cur.rowcount
        with self._mutex:
            if renewed < min(count, len(self.held)) or started - self.renewed_at > self.lease:
                self.lost = True
            self.renewed_at = started

    def still_held(self, *, now: bool = False) -> bool:
        """Whether every claim still holds: renewed within its lease and none taken away
        (the keeper's lock check, so a round stops starting work once it is not)."""
        with self._mutex:
            late = time.monotonic() - self.renewed_at > self.lease - RENEW_SECONDS
            return not (self.lost or late)

    def release(self, conn, outcomes: Iterable[tuple[Job, str]], platforms: Sequence[str]):
        """Let go of claimed keys: ``succeeded`` covers the versions read at the claim,
        ``failed`` pauses the key, anything else only frees it."""
        rows = []
        with self._mutex:
            for job, outcome in outcomes:
                claim = self.held.pop(job, None)
                if claim is not None:
                    rows.append(
                        (
                            job.client_id,
                            job.platform,
                            outcome,
                            claim.shopify,
                            claim.amazon,
                            claim.read_at,
                            self.holder,
                            PAUSE_SECONDS,
                            PAUSE_MAX_SECONDS,
                        )
                    )
        if not rows:
            return
        with conn.cursor() as cur:
            psycopg2.extras.execute_values(cur, RELEASE, rows, template=RELEASE_TEMPLATE)
            covered = sorted({r[0] for r in rows if r[2] == "succeeded"})
            if covered:
                cur.execute(CLEAR_PENDING, {"clients": covered, "platforms": list(platforms)})

    def forget(self, jobs: Iterable[Job]) -> None:
        """Stop renewing ``jobs`` (a round that failed): their leases run out by themselves."""
        with self._mutex:
            for job in jobs:
                self.held.pop(job, None)

    def let_go(self, conn) -> None:
        """Free every key this holder still has (a clean stop)."""
        with conn.cursor() as cur:
            cur.execute(LET_GO, (self.holder,))
        with self._mutex:
            self.held.clear()
