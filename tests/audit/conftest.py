"""Shared helpers of the audit trail tests: the embedded event log around a bank, waiting
until every published event is recorded, and reading both sides (outbox, audit store)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from banking.storage.tables import audit_records, outbox
from banking.workers.runtime import EmbeddedEvents
from tests.conftest import Bank, make_settings, running_bank

SETTLE_TIMEOUT_SECONDS = 60


async def wait_for(
    condition: Callable[[], Awaitable[bool]], *, timeout_seconds: float, what: str
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_seconds
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def outbox_rows(bank: Bank) -> list[Any]:
    async with bank.container.database.read() as connection:
        return list((await connection.execute(select(outbox).order_by(outbox.c.outbox_id))).all())


async def audit_rows(bank: Bank) -> list[Any]:
    async with bank.container.database.read() as connection:
        statement = select(audit_records).order_by(audit_records.c.audit_id)
        return list((await connection.execute(statement)).all())


async def audit_count(bank: Bank) -> int:
    async with bank.container.database.read() as connection:
        count = select(func.count()).select_from(audit_records)
        return int((await connection.execute(count)).scalar_one())


async def every_outbox_event_audited(bank: Bank) -> bool:
    """True once every outbox row is published and has its audit record."""
    rows = await outbox_rows(bank)
    if any(row.published_at is None for row in rows):
        return False
    recorded = {(row.event_id, row.topic) for row in await audit_rows(bank)}
    return all((row.event_id, row.topic) in recorded for row in rows)


async def settle(bank: Bank) -> None:
    async def done() -> bool:
        return await every_outbox_event_audited(bank)

    await wait_for(done, timeout_seconds=SETTLE_TIMEOUT_SECONDS, what="the audit trail")


@pytest.fixture
async def events(bank: Bank) -> AsyncIterator[EmbeddedEvents]:
    """The embedded event log (relay and consumers, the audit consumer among them)."""
    embedded = EmbeddedEvents(bank.container)
    await embedded.start()
    yield embedded
    await embedded.stop()


@pytest.fixture
async def sqlite_bank(sqlite_template: Path, tmp_path: Path) -> AsyncIterator[Bank]:
    """The embedded shape exactly: a SQLite file (and, with ``EmbeddedEvents``, the bus)."""
    database = tmp_path / "banking.db"
    shutil.copyfile(sqlite_template, database)
    async with running_bank(make_settings(f"sqlite+aiosqlite:///{database}")) as bank:
        yield bank
