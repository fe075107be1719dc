"""Builds the balance cache, the rate limiter and the account locks for one process: in memory
when ``REDIS_URL`` is unset, on one shared Redis pool (one circuit breaker) when it is set.

The memory balance cache is exact only while its process sees every commit: several API
processes without Redis each keep their own and miss the others' invalidations, so a client
could read its own write stale from another process. ``banking serve --workers N`` therefore
turns it off when there is no Redis (``memory_cache_goes_stale``); the cache is only an
optimisation of balance reads, money decisions never read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from banking.cache.balances import MemoryBalanceCache, RedisBalanceCache
from banking.cache.locks import AccountLocks, MemoryAccountLocks, RedisAccountLocks
from banking.cache.ratelimit import (
    SCOPE_DEFAULT,
    SCOPE_TOKEN,
    RateLimiter,
    memory_storage,
    parse_limit,
    redis_storage,
)
from banking.cache.redis_connection import RedisConnection
from banking.config import Settings
from banking.observability.metrics import Metrics

READY_OK = "ok"
READY_DEGRADED = "degraded"


@dataclass
class CacheServices:
    balances: MemoryBalanceCache | RedisBalanceCache | None  # None: BALANCE_CACHE_ENABLED=false
    rate_limiter: RateLimiter | None  # None: RATE_LIMIT_ENABLED=false
    account_locks: AccountLocks | None  # None: ACCOUNT_LOCKS=none
    redis: RedisConnection | None  # None: embedded (no REDIS_URL)

    async def readiness(self) -> str | None:
        """``ok`` or ``degraded`` for ``/ready`` (None when Redis is not configured). Degraded
        means the cache is bypassed and limits fail open: money still moves."""
        if self.redis is None:
            return None
        return READY_OK if await self.redis.probe() else READY_DEGRADED

    async def close(self) -> None:
        if self.balances is not None:
            await self.balances.close()
        if self.redis is not None:
            await self.redis.close()


def memory_cache_goes_stale(settings: Settings, *, processes: int) -> bool:
    """True when ``processes`` API processes would each keep a memory balance cache (no
    ``REDIS_URL``, cache enabled): a commit in one would leave the others' entries stale."""
    return processes > 1 and settings.balance_cache_enabled and not settings.redis_url


def build_cache_services(settings: Settings, metrics: Metrics) -> CacheServices:
    redis = None
    if settings.redis_url:
        redis = RedisConnection(
            settings.redis_url,
            metrics=metrics,
            socket_timeout_seconds=settings.redis_socket_timeout_seconds,
            retry_seconds=settings.redis_retry_seconds,
        )
    ttl_seconds = settings.balance_cache_ttl_seconds
    balances: MemoryBalanceCache | RedisBalanceCache | None = None
    if settings.balance_cache_enabled and redis is None:
        balances = MemoryBalanceCache(ttl_seconds=ttl_seconds, metrics=metrics)
    elif settings.balance_cache_enabled and redis is not None:
        balances = RedisBalanceCache(redis, ttl_seconds=ttl_seconds, metrics=metrics)

    rate_limiter = None
    if settings.rate_limit_enabled:
        rate_limiter = RateLimiter(
            storage=memory_storage() if redis is None else redis_storage(redis),
            limits_by_scope={
                SCOPE_DEFAULT: parse_limit(settings.rate_limit_default),
                SCOPE_TOKEN: parse_limit(settings.rate_limit_token),
            },
            metrics=metrics,
            redis=redis,
        )

    account_locks: AccountLocks | None = None
    if settings.account_locks == "redis":
        if redis is None:
            raise ValueError("ACCOUNT_LOCKS=redis needs REDIS_URL")
        account_locks = RedisAccountLocks(
            redis,
            timeout_seconds=settings.account_lock_timeout_seconds,
            wait_seconds=settings.account_lock_wait_seconds,
            metrics=metrics,
        )
    elif settings.account_locks == "memory":
        account_locks = MemoryAccountLocks(
            wait_seconds=settings.account_lock_wait_seconds, metrics=metrics
        )
    return CacheServices(balances, rate_limiter, account_locks, redis)
