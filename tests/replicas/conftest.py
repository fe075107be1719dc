"""Fixtures of the read-replica tests: two streaming replicas of the test PostgreSQL, started
natively by ``scripts/services/postgres.sh start-replicas`` for the session (the tests fail
loudly when they cannot start, never skip) and removed at the end, and an in-process API whose
``DATABASE_REPLICA_URLS`` name the test database on both replicas.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.conftest import Bank, make_settings, running_bank

REPO_ROOT = Path(__file__).resolve().parents[2]
POSTGRES_SCRIPT = REPO_ROOT / "scripts" / "services" / "postgres.sh"
SERVICES_DIR = Path(os.environ.get("BANKING_SERVICES_DIR", "/tmp/banking-services"))
PG_BIN = Path(os.environ.get("BANKING_PG_BIN", "/usr/lib/postgresql/15/bin"))
REPLICA_WAIT_SECONDS = 30.0


def _script(*args: str) -> str:
    result = subprocess.run(
        ["bash", str(POSTGRES_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"postgres.sh {' '.join(args)} failed (exit {result.returncode}):\n"
            f"{result.stderr[-3000:]}",
            pytrace=False,
        )
    return result.stdout


def start_replicas() -> list[str]:
    """Start (or start again) the two replicas; their URLs from the script's env lines."""
    stdout = _script("start-replicas", "2")
    found = re.search(r"^export BANKING_PG_REPLICA_URLS='(.*)'$", stdout, re.MULTILINE)
    if found is None:
        pytest.fail(f"start-replicas printed no BANKING_PG_REPLICA_URLS:\n{stdout}", pytrace=False)
    urls: list[str] = json.loads(found.group(1))
    return urls


def stop_replica_immediately(index: int) -> None:
    """``pg_ctl stop -m immediate`` on one replica (a crash, as far as clients can tell)."""
    command = [str(PG_BIN / "pg_ctl"), "-D", str(SERVICES_DIR / "postgres" / f"replica-{index}")]
    command += ["-m", "immediate", "-w", "stop"]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def replica_urls(pg_template: tuple[str, str]) -> Iterator[list[str]]:
    urls = start_replicas()
    yield urls
    _script("stop-replicas")


def _on_database(url: str, name: str) -> str:
    return f"{url.rpartition('/')[0]}/{name}"


def plain_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def wait_for_database(url: str) -> None:
    """The test database, created on the primary a moment ago, exists on the replica."""
    deadline = asyncio.get_running_loop().time() + REPLICA_WAIT_SECONDS
    while True:
        try:
            connection = await asyncpg.connect(plain_dsn(url), timeout=5)
        except (OSError, asyncpg.PostgresError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)
            continue
        await connection.close()
        return


class Replicas:
    """The test database's URL on each replica, and what the tests do to them."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls

    async def sql(self, index: int, statement: str) -> Any:
        connection = await asyncpg.connect(plain_dsn(self.urls[index - 1]), timeout=5)
        try:
            return await connection.fetchval(statement)
        finally:
            await connection.close()

    async def pause(self, index: int) -> None:
        await self.sql(index, "SELECT pg_wal_replay_pause()")

    async def resume(self, index: int) -> None:
        await self.sql(index, "SELECT pg_wal_replay_resume()")

    async def apply_delay(self, index: int, delay: str) -> None:
        """Replay each commit ``delay`` after it was made (``recovery_min_apply_delay``)."""
        await self.sql(index, f"ALTER SYSTEM SET recovery_min_apply_delay = '{delay}'")
        await self.sql(index, "SELECT pg_reload_conf()")

    async def no_apply_delay(self, index: int) -> None:
        await self.sql(index, "ALTER SYSTEM RESET recovery_min_apply_delay")
        await self.sql(index, "SELECT pg_reload_conf()")


@pytest.fixture
async def replicas(replica_urls: list[str], postgres_url: str) -> AsyncIterator[Replicas]:
    """The replicas, running, replaying, without delay, and holding the test database."""
    start_replicas()  # a test may have stopped one
    name = postgres_url.rpartition("/")[2]
    found = Replicas([_on_database(url, name) for url in replica_urls])
    for index, url in enumerate(found.urls, start=1):
        await wait_for_database(url)
        await found.resume(index)
        await found.no_apply_delay(index)
    yield found
    for index in (1, 2):
        try:
            await found.resume(index)
            await found.no_apply_delay(index)
        except (OSError, asyncpg.PostgresError):
            pass  # stopped by the test; the next test starts it again


def replica_settings(postgres_url: str, replicas: Replicas, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "database_replica_urls": replicas.urls,
        "replica_lag_max_seconds": 1.0,
        "replica_check_seconds": 0.1,
        "replica_sticky_seconds": 5.0,
        # Balance reads go through the replicas only without the cache (ledger/accounts.py).
        "balance_cache_enabled": False,
    }
    values.update(overrides)
    return make_settings(postgres_url, **values)


@pytest.fixture
async def replica_bank(postgres_url: str, replicas: Replicas) -> AsyncIterator[Bank]:
    async with running_bank(replica_settings(postgres_url, replicas)) as bank:
        yield bank
