"""Who wrote recently: the sticky window of read replicas (docs/replicas.md).

After a user's write commits, their reads stay on the primary for ``REPLICA_STICKY_SECONDS``
(longer than the replicas' lag bound), so nobody reads their own write stale from a replica.
The marks live in Redis when ``REDIS_URL`` is set (every API process and worker sees them) and
in this process otherwise: several processes with replicas need Redis
(``replicas_need_shared_marks``). When Redis cannot answer, a read counts as "wrote recently"
and goes to the primary: not knowing never sends a read to a replica.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Final
from uuid import UUID

import redis.asyncio as aioredis

from banking.cache.redis_connection import RedisConnection, RedisUnavailable
from banking.config import Settings
from banking.domain.records import (
    BatchItem,
    Command,
    CommandOutcome,
    DebitOrCredit,
    FraudScore,
    MovementResult,
    ReversalRequest,
    ReviewDecision,
    TransactionType,
    TransferRequest,
)
from banking.domain.roles import Actor
from banking.ledger.groups import ItemResult
from banking.ledger.ports import Movements, MovementsDecorator, RecentWriters
from banking.observability.logging import get_logger

log = get_logger(__name__)

KEY_PREFIX: Final = "banking:wrote:"
MARKS_MAX: Final = 100_000  # memory variant: marks kept at most (oldest dropped first)


def mark_key(user_id: UUID) -> str:
    return f"{KEY_PREFIX}{user_id}"


def replicas_need_shared_marks(settings: Settings, *, processes: int) -> bool:
    """True when ``processes`` API processes would each keep their own marks (read replicas,
    no ``REDIS_URL``): a write in one would not keep the writer's reads in another on the
    primary. ``banking serve --workers N`` refuses to start then."""
    return processes > 1 and bool(settings.database_replica_urls) and not settings.redis_url


class MemoryRecentWriters:
    """One process: a deadline per user on the monotonic clock."""

    def __init__(self, *, sticky_seconds: float) -> None:
        self._sticky_seconds = sticky_seconds
        self._until: dict[UUID, float] = {}

    async def record(self, user_id: UUID) -> None:
        self._until.pop(user_id, None)  # re-inserted last: the dict stays oldest first
        self._until[user_id] = time.monotonic() + self._sticky_seconds
        if len(self._until) > MARKS_MAX:
            now = time.monotonic()
            self._until = {k: v for k, v in self._until.items() if v > now}
            while len(self._until) > MARKS_MAX:
                self._until.pop(next(iter(self._until)))

    async def wrote_recently(self, user_id: UUID) -> bool:
        until = self._until.get(user_id)
        return until is not None and until > time.monotonic()


class RedisRecentWriters:
    """Shared by every process: one key per user, expiring after the sticky window (Redis's
    clock counts the window, so the processes' clocks do not matter)."""

    def __init__(self, redis: RedisConnection, *, sticky_seconds: float) -> None:
        self._redis = redis
        self._sticky_ms = max(1, int(sticky_seconds * 1000))
        # Marks this process could not store (Redis down): its own reads still honour them.
        self._local = MemoryRecentWriters(sticky_seconds=sticky_seconds)

    async def record(self, user_id: UUID) -> None:
        await self._local.record(user_id)

        async def store(client: aioredis.Redis) -> Any:
            return await client.set(mark_key(user_id), b"1", px=self._sticky_ms)

        try:
            await self._redis.call("sticky_record", store)
        except RedisUnavailable:
            log.warning("sticky_write_not_shared", user_id=str(user_id))

    async def wrote_recently(self, user_id: UUID) -> bool:
        if await self._local.wrote_recently(user_id):
            return True

        async def exists(client: aioredis.Redis) -> Any:
            return await client.exists(mark_key(user_id))

        try:
            return bool(await self._redis.call("sticky_check", exists))
        except RedisUnavailable:
            return True  # cannot tell: the primary


class RecordingWriters(MovementsDecorator):
    """``Movements`` that mark the acting user as a recent writer after every call that may
    write (also after a decline or an error: a declined movement is stored as a failed leg)."""

    def __init__(self, inner: Movements, writers: RecentWriters) -> None:
        super().__init__(inner)
        self._writers = writers

    async def debit(
        self, actor: Actor, request: DebitOrCredit, *, trace_id: str | None = None
    ) -> MovementResult:
        try:
            return await self._inner.debit(actor, request, trace_id=trace_id)
        finally:
            await self._writers.record(actor.user_id)

    async def credit(
        self, actor: Actor, request: DebitOrCredit, *, trace_id: str | None = None
    ) -> MovementResult:
        try:
            return await self._inner.credit(actor, request, trace_id=trace_id)
        finally:
            await self._writers.record(actor.user_id)

    async def transfer(
        self, actor: Actor, request: TransferRequest, *, trace_id: str | None = None
    ) -> MovementResult:
        try:
            return await self._inner.transfer(actor, request, trace_id=trace_id)
        finally:
            await self._writers.record(actor.user_id)

    async def submit(
        self,
        actor: Actor,
        kind: TransactionType,
        request: DebitOrCredit | TransferRequest,
        *,
        trace_id: str | None = None,
    ) -> MovementResult:
        try:
            return await self._inner.submit(actor, kind, request, trace_id=trace_id)
        finally:
            await self._writers.record(actor.user_id)

    async def batch(
        self,
        actor: Actor,
        items: Sequence[BatchItem],
        *,
        atomic: bool,
        trace_id: str | None = None,
    ) -> list[ItemResult]:
        try:
            return await self._inner.batch(actor, items, atomic=atomic, trace_id=trace_id)
        finally:
            await self._writers.record(actor.user_id)

    async def apply_command(self, command: Command) -> CommandOutcome:
        try:
            return await self._inner.apply_command(command)
        finally:
            await self._writers.record(command.actor.user_id)

    async def hold_command(self, command: Command, score: FraudScore) -> CommandOutcome:
        try:
            return await self._inner.hold_command(command, score)
        finally:
            await self._writers.record(command.actor.user_id)

    async def review(
        self,
        actor: Actor,
        transaction_id: UUID,
        decision: ReviewDecision,
        *,
        trace_id: str | None = None,
    ) -> MovementResult:
        try:
            return await self._inner.review(actor, transaction_id, decision, trace_id=trace_id)
        finally:
            await self._writers.record(actor.user_id)

    async def reverse(
        self, actor: Actor, request: ReversalRequest, *, trace_id: str | None = None
    ) -> MovementResult:
        try:
            return await self._inner.reverse(actor, request, trace_id=trace_id)
        finally:
            await self._writers.record(actor.user_id)


def build_recent_writers(settings: Settings, redis: RedisConnection | None) -> RecentWriters:
    if redis is None:
        return MemoryRecentWriters(sticky_seconds=settings.replica_sticky_seconds)
    return RedisRecentWriters(redis, sticky_seconds=settings.replica_sticky_seconds)
