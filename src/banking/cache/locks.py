"""The sketch's per-account lock, kept as an optional contention guard (``ACCOUNT_LOCKS``).

Correctness never depends on it: the database's conditional updates and row locks decide every
debit, credit and transfer (DESIGN.md section 4). What the guard adds is queueing in front of a
hot account instead of inside the database: a request waits for the account's lock at most
``wait_seconds`` and is then answered 409 ``ACCOUNT_BUSY`` with ``Retry-After`` (nothing was
done, so retrying with the same idempotency key is safe).

Locks of a transfer are taken in account-id order (the database's order), so two transfers in
opposite directions cannot wait for each other forever. A Redis lock expires after
``timeout_seconds`` on its own, so a crashed holder blocks its account that long at most. It is
always released, also when the request fails. When Redis is unavailable the guard is skipped.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol
from uuid import UUID

from redis.asyncio.lock import Lock
from redis.exceptions import LockError

from banking.cache.redis_connection import RedisConnection, RedisUnavailable
from banking.domain.errors import AccountBusy
from banking.domain.records import BatchItem, DebitOrCredit, MovementResult, TransferRequest
from banking.domain.roles import Actor
from banking.ledger.groups import ItemResult
from banking.ledger.ports import Movements, MovementsDecorator
from banking.observability.logging import get_logger
from banking.observability.metrics import Metrics

log = get_logger(__name__)

KEY_PREFIX = "banking:lock:account:"
POLL_SECONDS_MIN = 0.002
POLL_SECONDS_MAX = 0.025
RETRY_AFTER_SECONDS = 1


def lock_key(account_id: UUID) -> str:
    return f"{KEY_PREFIX}{account_id}"


class AccountLocks(Protocol):
    def hold(self, account_ids: Iterable[UUID]) -> AbstractAsyncContextManager[None]:
        """Hold every account's lock for the block; ``AccountBusy`` past the wait bound."""
        ...


def _busy(wait_seconds: float) -> AccountBusy:
    return AccountBusy(
        f"the account is busy with other requests; waited {wait_seconds:g}s, retry later",
        retry_after_seconds=RETRY_AFTER_SECONDS,
    )


class RedisAccountLocks:
    """``redis.asyncio.lock.Lock`` per account, shared by every API instance."""

    def __init__(
        self,
        redis: RedisConnection,
        *,
        timeout_seconds: float,
        wait_seconds: float,
        metrics: Metrics,
    ) -> None:
        self._redis = redis
        self._timeout_seconds = timeout_seconds
        self._wait_seconds = wait_seconds
        self._metrics = metrics

    @asynccontextmanager
    async def hold(self, account_ids: Iterable[UUID]) -> AsyncIterator[None]:
        held: list[Lock] = []
        started = time.monotonic()
        try:
            for account_id in sorted(set(account_ids)):
                lock = Lock(
                    self._redis.client,
                    lock_key(account_id),
                    timeout=self._timeout_seconds,
                    blocking=False,
                    thread_local=False,
                )
                try:
                    acquired = await self._acquire(lock, started + self._wait_seconds)
                except RedisUnavailable:
                    break  # Redis is down: go on unguarded (the database still decides)
                if not acquired:
                    self._metrics.account_lock_wait.observe(time.monotonic() - started)
                    raise _busy(self._wait_seconds)
                held.append(lock)
            self._metrics.account_lock_wait.observe(time.monotonic() - started)
            yield
        finally:
            for lock in reversed(held):
                await self._release(lock)

    async def _acquire(self, lock: Lock, deadline: float) -> bool:
        """Try without blocking, then poll with jittered backoff until ``deadline`` (each try
        is one short Redis call, so a slow Redis costs one socket timeout, not the wait)."""
        pause = POLL_SECONDS_MIN
        while True:
            if await self._redis.call("lock_acquire", lambda _client: lock.acquire()):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(remaining, random.uniform(pause / 2, pause)))  # noqa: S311
            pause = min(POLL_SECONDS_MAX, pause * 2)

    async def _release(self, lock: Lock) -> None:
        try:
            await self._redis.call("lock_release", lambda _client: lock.release())
        except RedisUnavailable:
            pass  # it expires by itself after timeout_seconds
        except LockError:
            # Held longer than timeout_seconds: it expired (and may be someone else's now).
            log.warning("account_lock_expired_before_release", lock=str(lock.name))


class MemoryAccountLocks:
    """One process: an ``asyncio.Lock`` per account, dropped when nobody holds or waits."""

    def __init__(self, *, wait_seconds: float, metrics: Metrics) -> None:
        self._wait_seconds = wait_seconds
        self._metrics = metrics
        self._locks: dict[UUID, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, account_ids: Iterable[UUID]) -> AsyncIterator[None]:
        ordered = sorted(set(account_ids))
        held: list[UUID] = []
        started = time.monotonic()
        try:
            for account_id in ordered:
                lock = self._enter(account_id)
                try:
                    remaining = max(0.0, started + self._wait_seconds - time.monotonic())
                    async with asyncio.timeout(remaining):
                        await lock.acquire()
                except BaseException as error:  # also cancelled: never leave a waiter counted
                    self._leave(account_id)
                    if not isinstance(error, TimeoutError):
                        raise
                    self._metrics.account_lock_wait.observe(time.monotonic() - started)
                    raise _busy(self._wait_seconds) from None
                held.append(account_id)
            self._metrics.account_lock_wait.observe(time.monotonic() - started)
            yield
        finally:
            for account_id in reversed(held):
                self._locks[account_id][0].release()
                self._leave(account_id)

    def _enter(self, account_id: UUID) -> asyncio.Lock:
        lock, users = self._locks.get(account_id, (asyncio.Lock(), 0))
        self._locks[account_id] = (lock, users + 1)
        return lock

    def _leave(self, account_id: UUID) -> None:
        lock, users = self._locks[account_id]
        if users <= 1:
            del self._locks[account_id]
        else:
            self._locks[account_id] = (lock, users - 1)


class LockedMovements(MovementsDecorator):
    """``Movements`` with each synchronous debit, credit and transfer run under its accounts'
    locks, and a batch under the locks of all its accounts (taken in account-id order, like
    the database's, so a batch and a transfer never wait for each other in a cycle; a busy one
    answers the whole batch ``ACCOUNT_BUSY`` before anything is done). Asynchronous commands
    are not guarded: a busy lock must never turn into a final rejection of a command."""

    def __init__(self, inner: Movements, locks: AccountLocks) -> None:
        super().__init__(inner)
        self._locks = locks

    async def debit(
        self, actor: Actor, request: DebitOrCredit, *, trace_id: str | None = None
    ) -> MovementResult:
        async with self._locks.hold([request.account_id]):
            return await self._inner.debit(actor, request, trace_id=trace_id)

    async def credit(
        self, actor: Actor, request: DebitOrCredit, *, trace_id: str | None = None
    ) -> MovementResult:
        async with self._locks.hold([request.account_id]):
            return await self._inner.credit(actor, request, trace_id=trace_id)

    async def transfer(
        self, actor: Actor, request: TransferRequest, *, trace_id: str | None = None
    ) -> MovementResult:
        accounts = [request.source_account_id, request.destination_account_id]
        async with self._locks.hold(accounts):
            return await self._inner.transfer(actor, request, trace_id=trace_id)

    async def batch(
        self,
        actor: Actor,
        items: Sequence[BatchItem],
        *,
        atomic: bool,
        trace_id: str | None = None,
    ) -> list[ItemResult]:
        async with self._locks.hold(_batch_accounts(items)):
            return await self._inner.batch(actor, items, atomic=atomic, trace_id=trace_id)


def _batch_accounts(items: Sequence[BatchItem]) -> set[UUID]:
    accounts: set[UUID] = set()
    for item in items:
        request = item.request
        if isinstance(request, TransferRequest):
            accounts.update((request.source_account_id, request.destination_account_id))
        else:
            accounts.add(request.account_id)
    return accounts
