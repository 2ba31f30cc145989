"""Load shedding: at most N analytics computations at once, counted in the database.

The slots are transaction-level advisory locks, so the limit holds across gunicorn's
worker processes and across hosts sharing the database, and a slot is freed the moment
its transaction ends, even when the process holding it dies.
"""

from __future__ import annotations

from .errors import Overloaded

# First key of the slot locks (distinct from the cache's lock class).
SLOT_CLASS = 0x0DA5_5107
# Tries slot 1, 2, ... and stops at the first it gets: LIMIT stops the scan there, so no
# other slot is taken.
TAKE_SLOT = """
    SELECT slot FROM generate_series(1, %s) AS slot
    WHERE pg_try_advisory_xact_lock(%s, slot)
    LIMIT 1
"""


def take_compute_slot(conn, slots: int) -> int:
    """Hold one of ``slots`` computation slots until the transaction ends, or raise Overloaded."""
    with conn.cursor() as cur:
        cur.execute(TAKE_SLOT, (slots, SLOT_CLASS))
        row = cur.fetchone()
    if row is None:
        raise Overloaded()
    return row[0]
