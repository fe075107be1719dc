"""Rate limits shared by every API instance, on the ``limits`` library (moving window).

Scopes: ``default`` (every ``/api`` request, keyed by the caller: the token's subject, or the
client address before login) and ``token`` (``POST /auth/token``, keyed by client address and
username, much stricter, against password guessing). The storage is ``limits``' Redis storage
on the process's Redis pool, or its memory storage in the embedded shape.

When Redis is unavailable the limiter fails open (the request goes on, counted in
``banking_rate_limit_fail_open_total`` and logged): limits protect the service, they never
decide money, and a bank keeps taking payments while its cache is down.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from banking.cache.redis_connection import RedisConnection, RedisUnavailable
from banking.observability.logging import get_logger
from banking.observability.metrics import Metrics

log = get_logger(__name__)

SCOPE_DEFAULT = "default"
SCOPE_TOKEN = "token"  # noqa: S105 - a scope name, not a secret
KEY_PREFIX = "banking:ratelimit"
FAIL_OPEN_LOG_INTERVAL_SECONDS = 10.0
RETRY_AFTER_SECONDS_MIN = 1


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The outcome of one check, with what the RateLimit headers report."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    # False when the limit could not be checked (Redis unavailable) and the request went on.
    enforced: bool = True

    @property
    def retry_after_seconds(self) -> int:
        return max(RETRY_AFTER_SECONDS_MIN, self.reset_seconds)


def parse_limit(text: str) -> RateLimitItem:
    """``"100/second"``, ``"5/minute"``, ``"1000 per hour"``; ValueError when not valid."""
    return parse(text)


class RateLimiter:
    """Checks and counts one request against a scope's limit."""

    def __init__(
        self,
        *,
        storage: Storage,
        limits_by_scope: Mapping[str, RateLimitItem],
        metrics: Metrics,
        redis: RedisConnection | None = None,
    ) -> None:
        self._strategy = MovingWindowRateLimiter(storage)
        self._limits = dict(limits_by_scope)
        self._metrics = metrics
        self._redis = redis
        self._fail_open_logged_at = -math.inf

    @property
    def scopes(self) -> frozenset[str]:
        return frozenset(self._limits)

    async def check(self, key: str, scope: str = SCOPE_DEFAULT) -> RateDecision:
        """Count one request for ``key`` in ``scope``; ``allowed`` is False past the limit."""
        item = self._limits[scope]
        try:
            allowed, stats = await self._hit(item, scope, key)
        except RedisUnavailable:
            return self._fail_open(scope, item)
        reset_seconds = max(0, math.ceil(stats.reset_time - time.time()))
        if not allowed:
            self._metrics.rate_limit_rejections.labels(scope).inc()
        return RateDecision(allowed, item.amount, max(0, stats.remaining), reset_seconds)

    async def _hit(self, item: RateLimitItem, scope: str, key: str) -> tuple[bool, Any]:
        async def run(_client: Any = None) -> tuple[bool, Any]:
            allowed = await self._strategy.hit(item, scope, key)
            return allowed, await self._strategy.get_window_stats(item, scope, key)

        if self._redis is None:
            return await run()
        return await self._redis.call("rate_limit", run)

    def _fail_open(self, scope: str, item: RateLimitItem) -> RateDecision:
        self._metrics.rate_limit_fail_open.labels(scope).inc()
        now = time.monotonic()
        if now - self._fail_open_logged_at >= FAIL_OPEN_LOG_INTERVAL_SECONDS:
            self._fail_open_logged_at = now
            log.warning("rate_limit_fail_open", scope=scope, reason="redis unavailable")
        return RateDecision(True, item.amount, item.amount, 0, enforced=False)

    async def reset(self) -> None:
        """Forget every counter (tests and operators)."""
        await self._strategy.storage.reset()


def memory_storage() -> Storage:
    return MemoryStorage()


def redis_storage(redis: RedisConnection) -> Storage:
    """``limits``' Redis storage on the process's own pool (same timeouts, no retries)."""
    # ``limits`` types its pass-through options as scalars; a pool is what redis-py expects.
    options: dict[str, Any] = {"connection_pool": redis.client.connection_pool}
    return RedisStorage(
        "async+" + redis.url, implementation="redispy", key_prefix=KEY_PREFIX, **options
    )
