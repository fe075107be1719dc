"""The balance cache: read-through, for showing a balance (``GET /accounts/{id}/balance`` and
gRPC GetBalance), never for deciding money.

Entries are JSON with amounts as decimal strings, kept ``ttl_seconds`` at most, and invalidated
after every local commit that changes a balance (and by the balance events, through
``invalidate``). The race that plain delete-on-commit leaves open is closed with a generation
token per account:

    reader: miss, remembers generation g ... reads the database (old balance) ...
    writer:                   commits, invalidates: new generation g', entry deleted
    reader: stores its (old) balance only if the generation is still g  -> refused

A versioned set ("only if the cached version is older") would not be enough: after the delete
there is no cached version to compare with, so the old value would be stored. The generation is
a random token (not a counter) so an expired and recreated one can never match by accident, and
it outlives any read by far (``GENERATION_TTL_SECONDS``). A failed invalidation (Redis down) is
retried when Redis answers again; until then the short TTL bounds any staleness, and this
process bypasses the cache while its circuit is open.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import redis.asyncio as aioredis

from banking.cache.redis_connection import RedisConnection, RedisUnavailable
from banking.domain.records import Account, Balance
from banking.observability.logging import get_logger
from banking.observability.metrics import Metrics

log = get_logger(__name__)

CACHE_NAME = "balance"
ENTRIES_MAX = 100_000  # memory variant: entries kept at most (oldest evicted first)
PENDING_INVALIDATIONS_MAX = 10_000  # failed invalidations remembered for retry
GENERATION_TTL_SECONDS = 300
KEY_PREFIX = "banking:balance:"
GENERATION_PREFIX = "banking:balance-gen:"

Loader = Callable[[], Awaitable[tuple[Account, Balance]]]

# KEYS[1] entry, KEYS[2] generation; ARGV[1] generation seen at the miss ("" for none),
# ARGV[2] entry JSON, ARGV[3] TTL in milliseconds. Stores only if no invalidation happened since.
_SET_IF_GENERATION = """
local current = redis.call('GET', KEYS[2])
if (current or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""
# KEYS[1] entry, KEYS[2] generation; ARGV[1] new generation, ARGV[2] its TTL in milliseconds.
_INVALIDATE = """
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[1])
return 1
"""


def entry_key(account_id: UUID) -> str:
    # The braces are a Redis Cluster hash tag: an account's entry and generation share a slot.
    return f"{KEY_PREFIX}{{{account_id}}}"


def generation_key(account_id: UUID) -> str:
    return f"{GENERATION_PREFIX}{{{account_id}}}"


def encode(account: Account, balance: Balance) -> str:
    """JSON for one entry; amounts as decimal strings, never floats."""
    return json.dumps(
        {
            "account": {
                "account_id": str(account.account_id),
                "account_number": account.account_number,
                "customer_id": str(account.customer_id),
                "account_type": account.account_type,
                "currency": account.currency,
                "is_active": account.is_active,
                "created_at": account.created_at.isoformat(),
                "updated_at": account.updated_at.isoformat(),
                "metadata": dict(account.metadata),
            },
            "balance": {
                "account_id": str(balance.account_id),
                "currency": balance.currency,
                "current_balance": str(balance.current_balance),
                "available_balance": str(balance.available_balance),
                "version": balance.version,
                "last_updated": balance.last_updated.isoformat(),
                "overdraft_limit": str(balance.overdraft_limit),
            },
        },
        separators=(",", ":"),
    )


def decode(payload: str | bytes) -> tuple[Account, Balance]:
    data: dict[str, Any] = json.loads(payload)
    a, b = data["account"], data["balance"]
    account = Account(
        account_id=UUID(a["account_id"]),
        account_number=a["account_number"],
        customer_id=UUID(a["customer_id"]),
        account_type=a["account_type"],
        currency=a["currency"],
        is_active=bool(a["is_active"]),
        created_at=datetime.fromisoformat(a["created_at"]),
        updated_at=datetime.fromisoformat(a["updated_at"]),
        # Entries cached before accounts had labels had none.
        metadata=dict(a.get("metadata", {})),
    )
    balance = Balance(
        account_id=UUID(b["account_id"]),
        currency=b["currency"],
        current_balance=Decimal(b["current_balance"]),
        available_balance=Decimal(b["available_balance"]),
        version=int(b["version"]),
        last_updated=datetime.fromisoformat(b["last_updated"]),
        # Entries cached before overdraft limits existed had none.
        overdraft_limit=Decimal(b.get("overdraft_limit", "0.00")),
    )
    return account, balance


class MemoryBalanceCache:
    """The embedded default: one process, so invalidation is local and exact.

    The generation check is the same as Redis's: a sequence number taken at the miss, compared
    with the sequence of the account's last invalidation."""

    def __init__(self, *, ttl_seconds: float, metrics: Metrics) -> None:
        self._ttl_seconds = ttl_seconds
        self._metrics = metrics
        self._entries: dict[UUID, tuple[float, Account, Balance]] = {}
        self._sequence = itertools.count(1)
        self._invalidated_at: dict[UUID, int] = {}
        self._forgotten_below = 0  # invalidations older than this were pruned

    async def read_through(self, account_id: UUID, load: Loader) -> tuple[Account, Balance]:
        found = self._entries.get(account_id)
        if found is not None and found[0] > time.monotonic():
            self._count("hit")
            return found[1], found[2]
        self._count("miss")
        started = next(self._sequence)
        account, balance = await load()
        last_invalidated = self._invalidated_at.get(account_id, 0)
        if started > last_invalidated and started > self._forgotten_below:
            self._store(account_id, account, balance)
        return account, balance

    async def invalidate(self, account_id: UUID) -> None:
        """Drop one account's entry (the ``balance-cache`` consumer calls this per event)."""
        await self.invalidate_many([account_id])

    async def invalidate_many(self, account_ids: Iterable[UUID]) -> None:
        for account_id in account_ids:
            self._entries.pop(account_id, None)
            self._invalidated_at[account_id] = next(self._sequence)
        if len(self._invalidated_at) > ENTRIES_MAX:
            # Forget the older half; reads that began before them will simply not store.
            ordered = sorted(self._invalidated_at.items(), key=lambda item: item[1])
            cut = ordered[len(ordered) // 2][1]
            self._invalidated_at = {k: v for k, v in ordered if v >= cut}
            self._forgotten_below = cut

    def _store(self, account_id: UUID, account: Account, balance: Balance) -> None:
        if account_id not in self._entries and len(self._entries) >= ENTRIES_MAX:
            self._entries.pop(next(iter(self._entries)))
        self._entries[account_id] = (time.monotonic() + self._ttl_seconds, account, balance)

    def _count(self, result: str) -> None:
        self._metrics.cache_requests.labels(CACHE_NAME, result).inc()

    async def close(self) -> None:
        self._entries.clear()


class RedisBalanceCache:
    """Shared by every API instance: an invalidation on one is seen by all."""

    def __init__(self, redis: RedisConnection, *, ttl_seconds: float, metrics: Metrics) -> None:
        self._redis = redis
        self._ttl_ms = max(1, int(ttl_seconds * 1000))
        self._metrics = metrics
        self._set_if_generation = redis.client.register_script(_SET_IF_GENERATION)
        self._invalidate_script = redis.client.register_script(_INVALIDATE)
        self._pending: set[UUID] = set()
        self._flush_all_on_recovery = False
        redis.on_recovery(self._retry_pending)

    async def read_through(self, account_id: UUID, load: Loader) -> tuple[Account, Balance]:
        keys = [entry_key(account_id), generation_key(account_id)]
        try:
            payload, generation = await self._redis.call(
                "cache_get", lambda client: client.mget(keys)
            )
        except RedisUnavailable:
            self._count("error")
            return await load()
        if payload is not None:
            try:
                found = decode(payload)
            except (ValueError, KeyError, TypeError):
                log.warning("balance_cache_entry_unreadable", account_id=str(account_id))
            else:
                self._count("hit")
                return found
        self._count("miss")
        account, balance = await load()
        seen = generation.decode() if isinstance(generation, bytes) else (generation or "")
        value = encode(account, balance)

        async def store(client: aioredis.Redis) -> Any:
            return await self._set_if_generation(
                keys=keys, args=[seen, value, self._ttl_ms], client=client
            )

        try:
            await self._redis.call("cache_set", store)
        except RedisUnavailable:
            self._count("error")
        return account, balance

    async def invalidate(self, account_id: UUID) -> None:
        """Drop one account's entry (the ``balance-cache`` consumer calls this per event)."""
        await self.invalidate_many([account_id])

    async def invalidate_many(self, account_ids: Iterable[UUID]) -> None:
        """Drop the entries and start a new generation (all in one round trip). When Redis is
        down the ids are kept and invalidated as soon as it answers again."""
        ids = list(dict.fromkeys(account_ids))
        if not ids:
            return
        token = secrets.token_hex(8)
        generation_ttl_ms = GENERATION_TTL_SECONDS * 1000

        async def run(client: aioredis.Redis) -> Any:
            async with client.pipeline(transaction=False) as pipe:
                for account_id in ids:
                    await self._invalidate_script(
                        keys=[entry_key(account_id), generation_key(account_id)],
                        args=[token, generation_ttl_ms],
                        client=pipe,
                    )
                return await pipe.execute()

        try:
            await self._redis.call("cache_invalidate", run)
        except RedisUnavailable:
            self._remember(ids)

    def _remember(self, ids: list[UUID]) -> None:
        if len(self._pending) + len(ids) > PENDING_INVALIDATIONS_MAX:
            self._flush_all_on_recovery = True
            self._pending.clear()
            return
        self._pending.update(ids)

    async def _retry_pending(self) -> None:
        if self._flush_all_on_recovery:
            await self.clear()
            self._flush_all_on_recovery = False
            log.info("balance_cache_flushed_after_outage")
        pending, self._pending = list(self._pending), set()
        if pending:
            await self.invalidate_many(pending)
            log.info("balance_cache_invalidations_retried", accounts=len(pending))

    async def clear(self) -> None:
        """Drop every balance entry (after an outage that lost track of invalidations)."""

        async def run(client: aioredis.Redis) -> None:
            async for key in client.scan_iter(match=f"{KEY_PREFIX}*", count=1000):
                await client.unlink(key)

        await self._redis.call("cache_clear", run)

    def _count(self, result: str) -> None:
        self._metrics.cache_requests.labels(CACHE_NAME, result).inc()

    async def close(self) -> None:
        return None
