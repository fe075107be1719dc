"""One Redis client per process, behind a circuit breaker.

Redis never decides money (DESIGN.md section 8), so a slow or dead Redis must cost a request at
most one short socket timeout. The first error opens the circuit: for ``retry_seconds`` every
caller skips Redis at once (cache bypassed, limits fail open, locks skipped); the first call
after that tries again and closes the circuit when it succeeds, so recovery needs no restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from banking.observability.logging import get_logger
from banking.observability.metrics import Metrics

T = TypeVar("T")
log = get_logger(__name__)

POOL_CONNECTIONS_MAX = 100
POOL_WAIT_SECONDS_MAX = 1.0
# Errors that mean "Redis is not usable now". OSError covers refused and reset connections that
# surface before redis-py wraps them; TimeoutError is raised by asyncio.timeout.
REDIS_FAILURES: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)


class RedisUnavailable(Exception):
    """Redis was skipped (open circuit) or just failed; the caller falls back."""


class RedisConnection:
    """The shared client plus the circuit breaker every Redis-backed component goes through."""

    def __init__(
        self,
        url: str,
        *,
        metrics: Metrics,
        socket_timeout_seconds: float,
        retry_seconds: float,
    ) -> None:
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=POOL_CONNECTIONS_MAX,
            timeout=POOL_WAIT_SECONDS_MAX,
            socket_timeout=socket_timeout_seconds,
            socket_connect_timeout=socket_timeout_seconds,
            # No client-side retries: the circuit decides when to try again.
            retry=Retry(NoBackoff(), 0),
        )
        self.client: aioredis.Redis = aioredis.Redis(connection_pool=pool)
        self.url = url
        self._metrics = metrics
        self._timeout_seconds = socket_timeout_seconds
        self._retry_seconds = retry_seconds
        self._open_until = 0.0  # monotonic time; 0 means closed
        self._recovery_actions: list[Callable[[], Awaitable[None]]] = []
        self._metrics.redis_up.set(1)

    @property
    def is_open(self) -> bool:
        """True while Redis is being skipped after a failure."""
        return self._open_until > time.monotonic()

    def on_recovery(self, action: Callable[[], Awaitable[None]]) -> None:
        """Run ``action`` (best effort) when the circuit closes again after a failure."""
        self._recovery_actions.append(action)

    async def call(self, operation: str, command: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """Run ``command`` on the client; ``RedisUnavailable`` when the circuit is open or the
        command fails (the failure is counted by ``operation`` and opens the circuit)."""
        if self.is_open:
            raise RedisUnavailable(operation)
        try:
            async with asyncio.timeout(self._timeout_seconds * 2):
                result = await command(self.client)
        except REDIS_FAILURES as error:
            self._failed(operation, error)
            raise RedisUnavailable(operation) from error
        await self._succeeded()
        return result

    async def probe(self) -> bool:
        """PING Redis even when the circuit is open (``/ready``); True when it answers."""
        try:
            async with asyncio.timeout(self._timeout_seconds * 2):
                await self.client.ping()
        except REDIS_FAILURES as error:
            self._failed("ping", error)
            return False
        await self._succeeded()
        return True

    def _failed(self, operation: str, error: BaseException) -> None:
        self._metrics.redis_errors.labels(operation).inc()
        was_open = self._open_until != 0.0
        self._open_until = time.monotonic() + self._retry_seconds
        self._metrics.redis_up.set(0)
        if not was_open:
            log.warning(
                "redis_unavailable",
                operation=operation,
                error_type=type(error).__name__,
                retry_seconds=self._retry_seconds,
            )

    async def _succeeded(self) -> None:
        if self._open_until == 0.0:
            return
        self._open_until = 0.0
        self._metrics.redis_up.set(1)
        log.info("redis_recovered")
        for action in self._recovery_actions:
            try:
                await action()
            except RedisUnavailable:
                return  # failed again: the circuit is open, the next recovery retries

    async def close(self) -> None:
        await self.client.aclose()
        await self.client.connection_pool.disconnect()
