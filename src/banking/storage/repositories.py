"""SQL for users and for the outbox relay. Functions take an open connection; they never commit.

The ledger's SQL is ``banking.storage.ledger_store`` (the ``LedgerStore`` port)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Row, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from banking.storage.tables import outbox, users

# --- users -----------------------------------------------------------------------------------


async def insert_user(connection: AsyncConnection, values: dict[str, Any]) -> None:
    await connection.execute(insert(users).values(**values))


async def get_user_by_username(connection: AsyncConnection, username: str) -> Row[Any] | None:
    result = await connection.execute(select(users).where(users.c.username == username))
    return result.first()


async def get_user(connection: AsyncConnection, user_id: UUID) -> Row[Any] | None:
    result = await connection.execute(select(users).where(users.c.user_id == user_id))
    return result.first()


async def count_users(connection: AsyncConnection) -> int:
    return int((await connection.execute(select(func.count()).select_from(users))).scalar_one())


async def set_last_login(connection: AsyncConnection, user_id: UUID, at: datetime) -> None:
    await connection.execute(update(users).where(users.c.user_id == user_id).values(last_login=at))


# --- outbox relay ----------------------------------------------------------------------------


async def fetch_unpublished(connection: AsyncConnection, limit: int) -> list[Row[Any]]:
    """The oldest unpublished outbox rows, in insertion order."""
    result = await connection.execute(
        select(outbox)
        .where(outbox.c.published_at.is_(None))
        .order_by(outbox.c.outbox_id)
        .limit(limit)
    )
    return list(result)


async def mark_published(
    connection: AsyncConnection, outbox_ids: Sequence[int], at: datetime
) -> None:
    await connection.execute(
        update(outbox).where(outbox.c.outbox_id.in_(list(outbox_ids))).values(published_at=at)
    )


async def outbox_backlog(connection: AsyncConnection) -> tuple[int, datetime | None]:
    """How many rows wait to be published, and when the oldest of them was written."""
    result = await connection.execute(
        select(func.count(), func.min(outbox.c.created_at)).where(outbox.c.published_at.is_(None))
    )
    count, oldest = result.one()
    return int(count), oldest
