"""The router's choice from fake measurements (no database): the lag rule, the bound as it
ages, round robin, a failed replica, the sticky marks."""

from __future__ import annotations

import math
import uuid

import pytest

from banking.cache.sticky import MemoryRecentWriters
from banking.storage.database import Database
from banking.storage.replicas import Replica, ReplicaRouter, lag_of, replica_name


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def router(clock: Clock, *lags: float) -> ReplicaRouter:
    # Database objects are never used: the choice only reads the measurements.
    replicas = [
        Replica(f"r{i}", Database.__new__(Database), lag_seconds=lag, measured_at=clock.now)
        for i, lag in enumerate(lags, start=1)
    ]
    return ReplicaRouter(
        Database.__new__(Database), replicas, lag_max_seconds=1.0, check_seconds=0.5, clock=clock
    )


def test_the_lag_of_one_measurement() -> None:
    assert lag_of(caught_up=True, paused=True, replay_age_seconds=90.0) == 0.0
    assert lag_of(caught_up=False, paused=False, replay_age_seconds=0.25) == 0.25
    assert lag_of(caught_up=False, paused=True, replay_age_seconds=0.25) == math.inf
    assert lag_of(caught_up=False, paused=False, replay_age_seconds=None) == math.inf


def test_reads_go_round_robin_to_replicas_within_the_bound() -> None:
    clock = Clock()
    chosen = router(clock, 0.0, 0.2, 1.5)
    picks = [chosen.pick() for _ in range(4)]
    assert [replica.name for replica in picks if replica] == ["r1", "r2", "r1", "r2"]


def test_a_measurement_ages_out_of_the_bound() -> None:
    clock = Clock()
    chosen = router(clock, 0.6)
    assert chosen.pick() is not None
    clock.now += 0.5  # 0.6 measured + 0.5 since: it may be 1.1 s behind now
    assert chosen.pick() is None


def test_a_replica_that_failed_a_read_gets_none_until_checked_again() -> None:
    clock = Clock()
    chosen = router(clock, 0.0, 0.0)
    chosen.mark_down(chosen.replicas[0], ConnectionError("gone"))
    assert {chosen.pick().name for _ in range(4)} == {"r2"}  # type: ignore[union-attr]
    chosen.mark_down(chosen.replicas[1], ConnectionError("gone"))
    assert chosen.pick() is None


def test_the_metric_label_never_carries_the_password() -> None:
    assert replica_name("postgresql+asyncpg://banking:secret@10.0.0.5:6432/db") == "10.0.0.5:6432"


@pytest.mark.parametrize("sticky_seconds", [0.05])
async def test_a_writer_is_sticky_for_the_window_only(sticky_seconds: float) -> None:
    import asyncio

    writers = MemoryRecentWriters(sticky_seconds=sticky_seconds)
    user, other = uuid.uuid4(), uuid.uuid4()
    await writers.record(user)
    assert await writers.wrote_recently(user)
    assert not await writers.wrote_recently(other)
    await asyncio.sleep(sticky_seconds * 2)
    assert not await writers.wrote_recently(user)
