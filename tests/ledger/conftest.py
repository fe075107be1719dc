"""The core on the in-memory store: no database, no door."""

from __future__ import annotations

import json

import pytest

from banking.domain.records import Owner
from banking.events.outbox import outbox_rows
from tests.ledger.world import World, make_world
from tests.support.ledger import Core, OutboxRow
from tests.support.memory_store import MemoryUnitOfWork


@pytest.fixture
def memory() -> MemoryUnitOfWork:
    return MemoryUnitOfWork()


def memory_core(memory: MemoryUnitOfWork) -> Core:
    async def add_owner(owner: Owner, _username: str) -> None:
        memory.books.owners[owner.user_id] = owner

    async def outbox() -> list[OutboxRow]:
        # The real encoder: what the SQL stores would have written for the same events.
        return [
            (row["topic"], row["event_key"], row["event_type"], json.loads(row["payload"]))
            for event in memory.books.events
            for row in outbox_rows(event)
        ]

    async def count_journal() -> int:
        return len(memory.books.journal)

    return Core(memory, add_owner, outbox, count_journal)


@pytest.fixture
def core(memory: MemoryUnitOfWork) -> Core:
    return memory_core(memory)


@pytest.fixture
async def world(core: Core) -> World:
    return await make_world(core)
