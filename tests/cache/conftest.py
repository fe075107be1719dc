"""Fixtures for the Redis tests: the real ``redis-server`` named by ``BANKING_REDIS_URL``
(started by ``scripts/services/redis.sh``; the tests fail loudly without it, never skip), a
private one for the tests that kill and restart Redis, and in-process APIs built on settings
the test chooses (two of them can share one database and one Redis, like two API instances).
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from banking.bootstrap import build_container, create_rest_app
from tests.conftest import Bank, make_settings
from tests.support.processes import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
REDIS_SCRIPT = REPO_ROOT / "scripts" / "services" / "redis.sh"

BankFactory = Callable[..., AbstractAsyncContextManager[Bank]]


def redis_url_from_env() -> str:
    url = os.environ.get("BANKING_REDIS_URL")
    if not url:
        pytest.fail(
            "Redis tests need BANKING_REDIS_URL: run `make test` (or "
            '`eval "$(scripts/services/redis.sh start)"`). They use the real redis-server.',
            pytrace=False,
        )
    return url


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """The shared test Redis, emptied before each test (tests run one at a time)."""
    url = redis_url_from_env()
    client = aioredis.Redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
    yield url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client for looking at what the API stored."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


class PrivateRedis:
    """A redis-server of this test only, started and stopped by the project's script."""

    def __init__(self, services_dir: Path) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            "BANKING_SERVICES_DIR": str(services_dir),
            "BANKING_REDIS_PORT": str(self.port),
        }
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def _script(self, command: str) -> str:
        result = subprocess.run(
            ["bash", str(REDIS_SCRIPT), command],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"redis.sh {command}: {result.stderr}"
        return result.stdout

    def start(self) -> None:
        printed = self._script("start")
        assert re.search(rf"BANKING_REDIS_URL=redis://127.0.0.1:{self.port}/0", printed)

    def stop(self) -> None:
        self._script("stop")


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    redis_url_from_env()  # same rule as every Redis test: the real server must be there
    server = PrivateRedis(tmp_path / "services")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def bank_factory() -> BankFactory:
    """``async with bank_factory(database_url, REDIS_URL=..., ...) as bank``: an API instance
    (container + app + client) on the given settings; several may share a database/Redis."""

    @asynccontextmanager
    async def build(database_url: str, **overrides: Any) -> AsyncIterator[Bank]:
        settings = make_settings(database_url, **{k.lower(): v for k, v in overrides.items()})
        container = build_container(settings)
        app = create_rest_app(container)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            try:
                yield Bank(container, client)
            finally:
                await container.close()

    return build


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
