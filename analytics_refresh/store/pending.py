"""Finished jobs' records on their way to the database: each is written, kept for the next
try, or counted as not recorded (the run then fails, exit 4); none is ever dropped.

Jobs end on worker threads and only queue their record here; the claim's thread writes
what is queued every fraction of a second, in batches, so the writes cost little per job.
"""

from __future__ import annotations

import logging
import threading

from analytics_refresh.errors import first_line
from analytics_refresh.model.outcome import JobRecord
from analytics_refresh.store.writes import RunWriter, unreachable

log = logging.getLogger(__name__)


class PendingRecords:
    """The queue of records not yet written, and the count of those that never will be."""

    def __init__(self) -> None:
        self.unrecorded = 0  # records that could not be written
        self._queue: list[JobRecord] = []
        self._writing: list[JobRecord] = []  # the batch a write holds now
        self._given_up = False
        self._mutex = threading.Lock()

    @property
    def in_flight(self) -> int:
        """Records queued or being written: not yet known to be in the database."""
        with self._mutex:
            return len(self._queue) + len(self._writing)

    def queue(self, record: JobRecord) -> None:
        """Queue how a job ended; the next ``write`` (a fraction of a second) writes it."""
        with self._mutex:
            if self._given_up:
                self.unrecorded += 1
                log.error("❌ Could not record %s: the run's writer has given up", record.job)
                return
            self._queue.append(record)

    def write(self, writer: RunWriter, *, final: bool = False) -> int:
        """Write every queued record; return how many were counted as not recorded.

        A batch the database refuses, or that fails in any other way, is written row by
        row, so one bad row costs only itself. A batch that cannot reach the database goes
        back to the queue for the next write; only the ``final`` one counts it lost.
        """
        with self._mutex:
            if self._given_up or not self._queue:
                return 0
            batch, self._queue = self._queue, []
            # One row per key: a job recorded twice would make the statement refuse it.
            batch = list({(r.job.client_id, r.job.platform): r for r in batch}.values())
            self._writing = batch
        settled = False
        try:
            try:
                writer.write_jobs(batch)
                settled = True
                return 0
            except Exception as exc:
                if unreachable(exc) and not final:
                    with self._mutex:
                        self._queue[:0] = batch
                    settled = True
                    return 0
                if unreachable(exc):
                    settled = True
                    return self._count(batch, first_line(exc))
                log.debug("A batch of %d records was refused (%s); row by row", len(batch), exc)
            lost: list[JobRecord] = []
            for i, record in enumerate(batch):
                written = self._write_one(writer, record, final)
                if written is None:  # the connection went meanwhile: the rest waits
                    with self._mutex:
                        self._queue[:0] = batch[i:]
                    break
                if not written:
                    lost.append(record)
            settled = True
            return self._count(lost, None)
        finally:
            with self._mutex:
                self._writing = []
            if not settled:  # a signal or an exit inside the write: the batch is not known
                self._count(batch, "the write was interrupted")

    def _write_one(self, writer: RunWriter, record: JobRecord, final: bool) -> bool | None:
        """Write one record: True, False (counted), or None (no connection: try later)."""
        try:
            writer.write_jobs([record])
        except Exception as exc:  # a value the driver cannot send, a bug: this row only
            if unreachable(exc) and not final:
                return None
            log.error("❌ Could not record %s in refresh_jobs: %s", record.job, first_line(exc))
            return False
        return True

    def give_up(self, why: str) -> int:
        """Count every record still queued or being written as not recorded; return them."""
        with self._mutex:
            if self._given_up:
                return 0
            self._given_up = True
            lost = self._queue + self._writing
            self._queue, self._writing = [], []
        return self._count(lost, why, giving_up=True)

    def _count(self, records: list[JobRecord], why: str | None, *, giving_up=False) -> int:
        if not records:
            return 0
        with self._mutex:
            if self._given_up and not giving_up:
                return 0  # a write that outlived give_up(): its batch is counted already
            self.unrecorded += len(records)
        if why is not None:
            log.error("❌ Could not record %d finished jobs in refresh_jobs: %s", len(records), why)
        return len(records)
