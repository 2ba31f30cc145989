"""A simulated day of refresh runs: traffic, a backend of C workers, and the runner's choices.

The clock is simulated, and nothing goes over HTTP. What the runner decides is its own
code: ``changes.decide`` splits each change-aware run into changed, due and unchanged jobs,
``ordering.schedule`` orders what runs, and ``ordering.JobQueue`` hands the jobs to the
slots. The backend is C workers, each job holding one for the service time; the run's
concurrency limit is C (known capacity, where the adaptive limit settles). A success
updates the key's ``KeyState`` at the job's end with the change key read when its run was
planned, as ``refresh_state`` records it. A run that is still going when the next one is
due makes that one exit 5 (the lock is held), so runs never overlap. A run plans (reads the
change keys and the clock) STARTUP_SECONDS after its tick, plus up to ``start_jitter``.

As the reference change query does, each key carries the UTC day its dashboard's window
ends on (``date_in_key``), so every key changes at midnight; with ``cache_ttl`` each
refreshed copy expires that long after its refresh ended (the API's ``expires_at``), and
change-aware runs refresh a copy expiring within ``lead`` seconds (``changes.decide``).
"""

from __future__ import annotations

import bisect
import heapq
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone

from analytics_refresh.changes import decide
from analytics_refresh.ordering import JobQueue, schedule
from analytics_refresh.plan import SOURCE_PLATFORMS, Job
from analytics_refresh.records import KeyState
from analytics_refresh.settings import PLATFORMS

DAY = 86400.0
# A Monday, midnight UTC: the first simulated instant. Phases are hashed against the epoch,
# so any fixed start gives the same spread.
START = datetime(2025, 3, 3, tzinfo=timezone.utc).timestamp()
# The process's own start-up before its first request (bench/README.md: about 0.3 s).
STARTUP_SECONDS = 0.3


@dataclass(frozen=True)
class Traffic:
    """Who gets new data when: a share of the clients each hour, at random moments."""

    clients: list[str]
    arrivals: list[tuple[float, str, str]]  # (time, client_id, platform), by time


def make_traffic(
    clients: int,
    hours: int,
    seed: int,
    *,
    day_share: float,
    night_share: float,
    day_hours: tuple[int, int] = (8, 20),
) -> Traffic:
    """Draw the clients and, for each hour from START, which of them get new data and when.

    Each hour a share of the clients (``day_share`` from 08:00 to 20:00, ``night_share``
    otherwise) gets new orders on one of its two platforms, at a uniform moment in the hour.
    """
    rng = random.Random(seed)
    ids = sorted(str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(clients))
    arrivals = []
    for hour in range(hours):
        share = day_share if day_hours[0] <= hour % 24 < day_hours[1] else night_share
        for client in rng.sample(ids, round(share * clients)):
            moment = START + hour * 3600 + rng.random() * 3600
            arrivals.append((moment, client, rng.choice(SOURCE_PLATFORMS)))
    arrivals.sort()
    return Traffic(ids, arrivals)


@dataclass
class RunLog:
    """What one policy did: each refresh, each run, each run that found the lock held."""

    name: str
    refreshes: dict[tuple[str, str], list[tuple[float, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )  # key -> [(start, end)], by start
    jobs: list[tuple[float, float]] = field(default_factory=list)  # every job's (start, end)
    runs: list[tuple[float, float, int]] = field(default_factory=list)  # (start, end, jobs)
    locked: list[float] = field(default_factory=list)  # runs that exited 5
    kinds: list[tuple[float, str]] = field(default_factory=list)  # (run start, kind) per job


class Simulation:
    """One policy played over the traffic: runs every ``interval`` seconds from START."""

    def __init__(
        self,
        traffic: Traffic,
        *,
        workers: int,
        service_seconds: float,
        name: str,
        initial_success: float,
        start_jitter: float = 0.0,
        seed: int = 0,
        cache_ttl: float | None = None,
        lead: float = 0.0,
        date_in_key: bool = True,
    ):
        self.traffic = traffic
        self.cache_ttl = cache_ttl
        self.lead = lead
        self.date_in_key = date_in_key
        self.start_jitter = start_jitter
        self.rng = random.Random(seed)
        self.workers = workers
        self.service = service_seconds
        self.jobs = [Job(c, p) for c in traffic.clients for p in PLATFORMS]
        self.connected = {c: SOURCE_PLATFORMS for c in traffic.clients}
        self.counts: dict[tuple[str, str], int] = defaultdict(int)  # arrivals seen per key
        self.seen = 0  # arrivals up to the last planning instant
        self.log = RunLog(name)
        when = datetime.fromtimestamp(initial_success, timezone.utc)
        keys = self.change_keys(initial_success)
        self.states = {
            (j.client_id, j.platform): KeyState(
                j.client_id,
                j.platform,
                last_attempt_at=when,
                last_status="succeeded",
                last_success_at=when,
                last_duration_ms=round(service_seconds * 1000),
                change_key=self.key_of(j, keys),
                changed_at=when,
                expires_at=self.expiry(initial_success),
            )
            for j in self.jobs
        }

    def expiry(self, end: float) -> datetime | None:
        if self.cache_ttl is None:
            return None
        return datetime.fromtimestamp(end + self.cache_ttl, timezone.utc)

    # -- the data's change keys, as REFRESH_CHANGE_SQL would return them ---------------------
    def change_keys(self, now: float) -> dict[tuple[str, str], str]:
        arrivals = self.traffic.arrivals
        while self.seen < len(arrivals) and arrivals[self.seen][0] <= now:
            _, client, platform = arrivals[self.seen]
            self.counts[(client, platform)] += 1
            self.seen += 1
        # Every client has order lines, so the query returns a row for each key.
        day = datetime.fromtimestamp(now, timezone.utc).date().isoformat()
        suffix = f"/{day}" if self.date_in_key else ""
        return {
            (c, p): f"v{self.counts[(c, p)]}{suffix}"
            for c in self.traffic.clients
            for p in SOURCE_PLATFORMS
        }

    @staticmethod
    def key_of(job: Job, keys) -> str:
        if job.platform != "all":
            return keys[(job.client_id, job.platform)]
        return ";".join(f"{p}={keys[(job.client_id, p)]}" for p in sorted(SOURCE_PLATFORMS))

    # -- runs ------------------------------------------------------------------------------
    def play(
        self,
        first_tick: float,
        interval: float,
        until: float,
        *,
        change_aware: bool,
        max_age_minutes: float,
    ) -> RunLog:
        busy_until = float("-inf")
        tick = first_tick
        while tick < until:
            if busy_until > tick:
                self.log.locked.append(tick)  # the previous run holds the lock: exit 5
            else:
                busy_until = self.run(tick, change_aware, max_age_minutes)
            tick += interval
        return self.log

    def run(self, tick: float, change_aware: bool, max_age_minutes: float) -> float:
        """Play one run from its cron tick; return when its last job ended."""
        start = tick + STARTUP_SECONDS + self.rng.random() * self.start_jitter
        now = datetime.fromtimestamp(start, timezone.utc)
        keys = self.change_keys(start)
        if change_aware:
            decision = decide(
                self.jobs,
                self.states,
                keys,
                connected=self.connected,
                now=now,
                max_age_minutes=max_age_minutes,
                lead_seconds=self.lead,
            )
            jobs, stored = decision.run, decision.keys
            self.log.kinds.extend((start, kind) for kind in decision.kinds.values())
        else:
            jobs, stored = self.jobs, {j: self.key_of(j, keys) for j in self.jobs}
        order = schedule(jobs, self.states).jobs
        end = self.dispatch(order, start, stored)
        self.log.runs.append((start, end, len(order)))
        return end

    def dispatch(self, order: list[Job], start: float, stored) -> float:
        """Hand the jobs to C slots as jobs.JobRunner does; return the last job's end."""
        queue = JobQueue(order)
        in_flight: list[tuple[float, int, bool]] = []  # (end, sequence, from the front)
        front, clock, sequence, last = 0, start, 0, start
        while queue or in_flight:
            while queue and len(in_flight) < self.workers:
                job, is_front = queue.take(front, self.workers)
                front += is_front
                end = clock + self.service
                self.finish(job, clock, end, stored.get(job), start)
                heapq.heappush(in_flight, (end, sequence, is_front))
                sequence += 1
            clock, _, was_front = heapq.heappop(in_flight)
            front -= was_front
            last = max(last, clock)
        return last

    def finish(self, job: Job, start: float, end: float, key: str | None, planned: float) -> None:
        when = datetime.fromtimestamp(end, timezone.utc)
        old = self.states[(job.client_id, job.platform)]
        self.states[(job.client_id, job.platform)] = KeyState(
            job.client_id,
            job.platform,
            last_attempt_at=when,
            last_status="succeeded",
            last_success_at=when,
            last_duration_ms=round(self.service * 1000),
            change_key=key,
            changed_at=when if key != old.change_key else old.changed_at,
            # As refresh_state and refresh_runs record it: when the run was planned.
            success_planned_at=datetime.fromtimestamp(planned, timezone.utc),
            expires_at=self.expiry(end),
        )
        self.log.refreshes[(job.client_id, job.platform)].append((start, end))
        self.log.jobs.append((start, end))


# -- figures over one measured day --------------------------------------------------------
def work_seconds(log: RunLog, begin: float, end: float) -> float:
    return sum(e - s for s, e in log.jobs if begin <= s < end)


def slot_load(log: RunLog, begin: float, end: float, slot: float = 600.0) -> list[float]:
    """Busy worker-seconds in each slot of the window."""
    slots = [0.0] * int((end - begin) // slot)
    for s, e in log.jobs:
        first, last = int((s - begin) // slot), int((e - begin) // slot)
        for i in range(max(first, 0), min(last, len(slots) - 1) + 1):
            low, high = begin + i * slot, begin + (i + 1) * slot
            slots[i] += max(0.0, min(e, high) - max(s, low))
    return slots


def staleness(log: RunLog, traffic: Traffic, begin: float, end: float):
    """Seconds from each new data to the end of the first refresh of each key it touched
    that started after it; also how many were never refreshed in the simulated span."""
    waits, never = [], 0
    starts = {k: [s for s, _ in v] for k, v in log.refreshes.items()}
    for moment, client, platform in traffic.arrivals:
        if not begin <= moment < end:
            continue
        for key in ((client, platform), (client, "all")):
            i = bisect.bisect_right(starts[key], moment)
            if i == len(starts[key]):
                never += 1
            else:
                waits.append(log.refreshes[key][i][1] - moment)
    return waits, never


def oldest_age(log: RunLog, begin: float, end: float) -> tuple[float, tuple[str, str], float]:
    """Return the largest now - last refresh end over every key and every instant of the
    window, the key, and the instant it was seen."""
    worst = (0.0, ("", ""), begin)
    for key, refreshes in log.refreshes.items():
        ends = sorted(e for _, e in refreshes)
        previous = None
        for e in ends:
            if e > end:
                break
            if previous is not None and e >= begin and e - previous > worst[0]:
                worst = (e - previous, key, e)
            previous = e
        if previous is not None and end - previous > worst[0]:
            worst = (end - previous, key, end)
    return worst


def expired_seconds(log: RunLog, ttl: float | None, begin: float, end: float) -> float:
    """Key-seconds of the window in which a key's copy had expired (a reader would wait)."""
    if ttl is None:
        return 0.0
    total = 0.0
    for refreshes in log.refreshes.values():
        ends = sorted(e for _, e in refreshes)
        for previous, following in zip(ends, [*ends[1:], end], strict=True):
            lapse_from, lapse_to = max(previous + ttl, begin), min(following, end)
            total += max(0.0, lapse_to - lapse_from)
    return total


def covering_new_day(log: RunLog, midnight: float) -> tuple[float, int, int]:
    """Return when the first run that started after ``midnight`` ended, and how many keys
    had by then been refreshed by a job that started after midnight, of how many."""
    first = min((r for r in log.runs if r[0] >= midnight), key=lambda r: r[0])
    covered = sum(
        1 for refreshes in log.refreshes.values()
        if any(midnight <= s and e <= first[1] for s, e in refreshes)
    )  # fmt: skip
    return first[1], covered, len(log.refreshes)
