"""The TLS-secured servers of the transport-security tests, started by the project's scripts.

Each is a private instance (scripts/services/postgres-tls.sh, redis-tls.sh, kafka-secure.sh)
under its own state dir and ports, never the shared servers of postgres.sh / redis.sh /
kafka.sh. A server a session fixture started is stopped when the session ends; one that was
already running is left running. A server that cannot start fails the tests loudly.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from banking.storage.migrate import upgrade
from banking.storage.tls import asyncpg_tls

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICES_DIR = os.environ.get("BANKING_TLS_SERVICES_DIR", "/tmp/banking-services-tls")
START_TIMEOUT_SECONDS = 240


def service_script(name: str, action: str) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/services/NAME.sh ACTION`` with the private state dir."""
    return subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "services" / f"{name}.sh"), action],
        env={**os.environ, "BANKING_SERVICES_DIR": SERVICES_DIR},
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_SECONDS,
        check=False,
    )


def exports_of(output: str) -> dict[str, str]:
    """The ``export NAME=VALUE`` lines a service script prints, as a dict."""
    values: dict[str, str] = {}
    for line in output.splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            values[name] = shlex.split(value)[0] if value else ""
    return values


def started(name: str) -> Iterator[dict[str, str]]:
    was_running = service_script(name, "status").returncode == 0
    result = service_script(name, "start")
    if result.returncode != 0:
        pytest.fail(
            f"scripts/services/{name}.sh start failed (exit {result.returncode}):\n"
            f"{result.stderr[-3000:]}",
            pytrace=False,
        )
    try:
        yield exports_of(result.stdout)
    finally:
        if not was_running:
            service_script(name, "stop")


@pytest.fixture(scope="session")
def certs() -> dict[str, str]:
    result = service_script("tls-certs", "make")
    if result.returncode != 0:
        pytest.fail(f"tls-certs.sh make failed:\n{result.stderr[-3000:]}", pytrace=False)
    directory = exports_of(result.stdout)["BANKING_TLS_CERTS_DIR"]
    return {
        "ca": f"{directory}/ca.crt",
        "other_ca": f"{directory}/other-ca.crt",
    }


@pytest.fixture(scope="session")
def pg_tls(certs: dict[str, str]) -> Iterator[dict[str, str]]:
    yield from started("postgres-tls")


@pytest.fixture(scope="session")
def redis_tls(certs: dict[str, str]) -> Iterator[dict[str, str]]:
    yield from started("redis-tls")


@pytest.fixture(scope="session")
def kafka_secure(certs: dict[str, str]) -> Iterator[dict[str, str]]:
    yield from started("kafka-secure")


@pytest.fixture
def prefix(kafka_secure: dict[str, str]) -> str:
    """Topics of this test only, under the prefix the broker's ACLs grant."""
    return f"{kafka_secure['BANKING_KAFKA_SECURE_TOPIC_PREFIX']}{uuid.uuid4().hex[:10]}."


@pytest.fixture
async def tls_database(pg_tls: dict[str, str]) -> AsyncIterator[str]:
    """A fresh migrated database on the TLS-only cluster; its verify-full URL."""
    verify_full = pg_tls["BANKING_PG_TLS_URL"]
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin_url, connect_args = asyncpg_tls(
        verify_full.replace("postgresql+asyncpg://", "postgresql://").replace(
            "/banking_test?", "/postgres?"
        )
    )
    admin = await asyncpg.connect(admin_url, **connect_args)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        base, _, query = verify_full.partition("?")
        url = f"{base.rsplit('/', 1)[0]}/{name}?{query}"
        # Alembic builds its own engine: the migration runs encrypted (asyncpg's ssl=require).
        await asyncio.to_thread(upgrade, f"{base.rsplit('/', 1)[0]}/{name}?ssl=require")
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
