"""SQL for users and for the outbox relay. Functions take an open connection; they never commit.

The ledger's SQL is ``banking.storage.ledger_store`` (the ``LedgerStore`` port)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Row, delete, func, insert, select, update
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


async def lock_users(connection: AsyncConnection, user_ids: set[UUID]) -> list[Row[Any]]:
    """The users' rows, locked for this transaction in user-id order (no deadlock)."""
    result = await connection.execute(
        select(users)
        .where(users.c.user_id.in_(sorted(user_ids)))
        .order_by(users.c.user_id)
        .with_for_update()
    )
    return list(result)


async def update_user(connection: AsyncConnection, user_id: UUID, values: dict[str, Any]) -> None:
    await connection.execute(update(users).where(users.c.user_id == user_id).values(**values))


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


async def delete_published_before(connection: AsyncConnection, cutoff: datetime, limit: int) -> int:
    """Delete at most ``limit`` outbox rows published before ``cutoff``, oldest first; how
    many. Unpublished rows are never touched, however old."""
    oldest = (
        select(outbox.c.outbox_id)
        .where(outbox.c.published_at.is_not(None), outbox.c.published_at < cutoff)
        .order_by(outbox.c.outbox_id)
        .limit(limit)
    )
    ids = list((await connection.execute(oldest)).scalars())
    if not ids:
        return 0
    await connection.execute(delete(outbox).where(outbox.c.outbox_id.in_(ids)))
    return len(ids)
