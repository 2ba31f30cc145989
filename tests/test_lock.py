"""The run lock: shards run side by side, never beside an unsharded run or another layout."""

from __future__ import annotations

import pytest

from analytics_refresh.config.settings import Shard
from analytics_refresh.run.lock import RunLock


@pytest.fixture
def locks(db_url):
    held: list[RunLock] = []

    def take(shard: str | None) -> bool:
        lock = RunLock(db_url, Shard.parse(shard) if shard else None)
        got = lock.acquire()
        if got:
            held.append(lock)
        return got

    yield take
    for lock in held:
        lock.release()


def test_unsharded_runs_exclude_each_other(locks):
    assert locks(None)
    assert not locks(None)


def test_shards_of_one_layout_run_side_by_side_but_each_once(locks):
    assert locks("0/2")
    assert locks("1/2")
    assert not locks("0/2")


def test_sharded_and_unsharded_runs_exclude_each_other(locks, db_url):
    assert locks("0/2")
    assert not locks(None)
    other = RunLock(db_url)
    assert not other.acquire()


def test_an_unsharded_run_keeps_shards_out(locks):
    assert locks(None)
    assert not locks("0/2")


def test_two_layouts_never_run_at_once(locks):
    assert locks("0/2")
    assert not locks("1/4")
    assert not locks("0/4")


def test_release_frees_every_lock(db_url):
    first = RunLock(db_url, Shard.parse("0/2"))
    assert first.acquire()
    first.release()
    second = RunLock(db_url)
    assert second.acquire()
    second.release()
