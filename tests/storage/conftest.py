"""The core on each real store, for the contract test: the same scenarios on the in-memory
fake, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from banking.domain.clock import utc_now
from banking.domain.records import Owner
from banking.events.outbox import outbox_rows
from banking.storage.database import Database, create_engine
from banking.storage.ledger_store import SqlUnitOfWork
from banking.storage.tables import outbox, users
from tests.conftest import make_settings
from tests.ledger.conftest import memory_core
from tests.support.ledger import Core, OutboxRow
from tests.support.memory_store import MemoryUnitOfWork


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """None for the in-memory store, else the URL of a fresh migrated database."""
    if request.param == "memory":
        return None
    if request.param == "sqlite":
        database = tmp_path / "banking.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), database)
        return f"sqlite+aiosqlite:///{database}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def any_core(store_url: str | None) -> AsyncIterator[Core]:
    """The ledger's services on the in-memory store, or on a real database."""
    if store_url is None:
        yield memory_core(MemoryUnitOfWork())
        return
    url = store_url
    database = Database(create_engine(make_settings(url)))

    async def add_owner(owner: Owner, username: str) -> None:
        async with database.unit_of_work() as connection:
            await connection.execute(
                insert(users).values(
                    user_id=owner.user_id,
                    username=username,
                    password_hash="!",
                    email=f"{username}@example.test",
                    role=owner.role.value,
                    is_active=owner.is_active,
                    created_at=utc_now(),
                )
            )

    async def read_outbox() -> list[OutboxRow]:
        async with database.read() as connection:
            rows = await connection.execute(select(outbox).order_by(outbox.c.outbox_id))
            return [
                (row.topic, row.event_key, row.event_type, json.loads(row.payload)) for row in rows
            ]

    try:
        yield Core(SqlUnitOfWork(database, outbox_rows), add_owner, read_outbox)
    finally:
        await database.dispose()
