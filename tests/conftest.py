"""Shared fixtures: a fresh, migrated database per test on SQLite and on the real PostgreSQL.

PostgreSQL tests need the server started by ``scripts/services/postgres.sh`` (``make test``
starts it). When ``BANKING_PG_URL`` is not set they fail loudly instead of skipping.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select

from banking.bootstrap import build_container, create_rest_app
from banking.config import Settings
from banking.container import Container
from banking.domain.roles import Role
from banking.storage.migrate import upgrade
from banking.storage.tables import balances, outbox, transaction_logs, transactions

# One template per test session: two sessions at once (a helper's and a full run) never drop
# each other's template while it is being cloned.
TEMPLATE_DATABASE = f"banking_template_{uuid.uuid4().hex[:12]}"


def _pg_env() -> tuple[str, str]:
    url = os.environ.get("BANKING_PG_URL")
    admin = os.environ.get("BANKING_PG_ADMIN_DSN")
    if not url or not admin:
        pytest.fail(
            "PostgreSQL tests need BANKING_PG_URL and BANKING_PG_ADMIN_DSN: run `make test` "
            "(or `eval \"$(scripts/services/postgres.sh start)\"`). Use -m 'not postgres' to "
            "run only the embedded-mode tests.",
            pytrace=False,
        )
    return url, admin


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


async def _admin_execute(admin_dsn: str, *statements: str) -> None:
    connection = await asyncpg.connect(admin_dsn)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[tuple[str, str]]:
    """A migrated template database, cloned for every PostgreSQL test."""
    url, admin = _pg_env()
    asyncio.run(
        _admin_execute(
            admin,
            f'DROP DATABASE IF EXISTS "{TEMPLATE_DATABASE}" WITH (FORCE)',
            f'CREATE DATABASE "{TEMPLATE_DATABASE}"',
        )
    )
    upgrade(_with_database(url, TEMPLATE_DATABASE))
    yield url, admin
    asyncio.run(
        _admin_execute(admin, f'DROP DATABASE IF EXISTS "{TEMPLATE_DATABASE}" WITH (FORCE)')
    )


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for every SQLite test."""
    path = tmp_path_factory.mktemp("template") / "banking.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh migrated database: a SQLite file, or a clone of the PostgreSQL template."""
    if request.param == "sqlite":
        database = tmp_path / "banking.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), database)
        yield f"sqlite+aiosqlite:///{database}"
        return
    url, admin = request.getfixturevalue("pg_template")
    name = f"t_{uuid.uuid4().hex[:16]}"
    asyncio.run(_admin_execute(admin, f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DATABASE}"'))
    yield _with_database(url, name)
    asyncio.run(_admin_execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def postgres_url(pg_template: tuple[str, str]) -> Iterator[str]:
    """A fresh PostgreSQL database only (for tests that are about PostgreSQL concurrency)."""
    url, admin = pg_template
    name = f"t_{uuid.uuid4().hex[:16]}"
    asyncio.run(_admin_execute(admin, f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DATABASE}"'))
    yield _with_database(url, name)
    asyncio.run(_admin_execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# Tests of other features run the fraud detector in shadow mode (it scores and alerts, it does
# not hold): a burst of asynchronous test transfers is rightly suspicious. The fraud tests
# (tests/fraud_review) opt in to holds. Server and worker processes the tests start inherit it.
os.environ.setdefault("FRAUD_MODE", "alert")


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "fraud_mode": "alert",
        "database_url": database_url,
        "jwt_secret": "test-secret-that-is-long-enough-0123456789",
        "log_json": True,
        "database_pool_size": 30,
        "database_pool_overflow": 30,
        # argon2id at its cheapest: tests create hundreds of users; production keeps the default.
        "password_hash_time_cost": 1,
        "password_hash_memory_kib": 8192,
        # Load-shaped tests send hundreds of requests as one user; tests/cache tests the limits.
        "rate_limit_default": "100000/second",
        "rate_limit_token": "10000/minute",
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Bank:
    """A running API (in-process ASGI) with helpers to make users, tokens and accounts."""

    container: Container
    client: httpx.AsyncClient

    def token(self, user_id: uuid.UUID, username: str, role: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.container.tokens.issue(user_id, username, role)}"}

    async def user(self, role: Role, name: str | None = None) -> tuple[uuid.UUID, dict[str, str]]:
        username = name or f"{role.value}-{uuid.uuid4().hex[:8]}"
        user = await self.container.users.create(
            None,
            username=username,
            email=f"{username}@example.com",
            password="correct-horse-battery",
            role=role,
        )
        return user.user_id, self.token(user.user_id, username, role)

    async def account(
        self,
        owner_id: uuid.UUID,
        staff: dict[str, str],
        *,
        currency: str = "USD",
        funded: str | None = None,
    ) -> str:
        response = await self.client.post(
            "/api/v1/accounts",
            json={"account_type": "checking", "currency": currency, "customer_id": str(owner_id)},
            headers=staff,
        )
        assert response.status_code == 201, response.text
        account_id: str = response.json()["account_id"]
        if funded is not None:
            credited = await self.client.post(
                "/api/v1/transactions/credit",
                json={"account_id": account_id, "amount": funded, "currency": currency},
                headers=staff,
            )
            assert credited.status_code == 200, credited.text
        return account_id

    async def balance(self, account_id: str, headers: dict[str, str]) -> Decimal:
        response = await self.client.get(f"/api/v1/accounts/{account_id}/balance", headers=headers)
        assert response.status_code == 200, response.text
        return Decimal(response.json()["available_balance"])

    async def snapshot(self) -> dict[str, Any]:
        """Everything a failed request must leave untouched."""
        async with self.container.database.read() as connection:
            balance_rows = (
                await connection.execute(
                    select(
                        balances.c.account_id,
                        balances.c.current_balance,
                        balances.c.version,
                        balances.c.overdraft_limit,
                    )
                )
            ).all()
            counts = {}
            for table in (transactions, transaction_logs, outbox):
                counts[table.name] = (
                    await connection.execute(select(func.count()).select_from(table))
                ).scalar_one()
        return {"balances": sorted(map(tuple, balance_rows)), **counts}


@asynccontextmanager
async def running_bank(settings: Settings) -> AsyncIterator[Bank]:
    """A container and the REST app around it, called in-process over ASGI."""
    container = build_container(settings)
    transport = httpx.ASGITransport(app=create_rest_app(container))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Bank(container, client)
    finally:
        await container.close()


@pytest.fixture
async def bank(database_url: str) -> AsyncIterator[Bank]:
    async with running_bank(make_settings(database_url)) as running:
        yield running


@pytest.fixture
async def pg_bank(postgres_url: str) -> AsyncIterator[Bank]:
    async with running_bank(make_settings(postgres_url)) as running:
        yield running


@pytest.fixture
async def staff(bank: Bank) -> dict[str, str]:
    """Headers of a teller (opens accounts and credits them)."""
    _, headers = await bank.user(Role.TELLER)
    return headers
