"""SQL for users and for the outbox relay. Functions take an open connection; they never commit.

The ledger's SQL is ``banking.storage.ledger_store`` (the ``LedgerStore`` port)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Row, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from banking.domain.errors import InvariantViolated
from banking.ledger.creation_keys import CreationKey
from banking.storage.database import is_unique_violation
from banking.storage.tables import idempotency_keys, outbox, users

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


# --- idempotency keys of creation (banking.ledger.creation_keys) ----------------------------


async def claim_creation_key(
    connection: AsyncConnection, claim: CreationKey, *, expired_before: datetime
) -> CreationKey | None:
    """Claim ``claim``'s key for this transaction: None when it is ours now, else the live
    claim that holds it. The caller's keys created before ``expired_before`` are deleted first
    (lazy purge), so an expired key can be claimed again. On PostgreSQL a concurrent claim of
    the same key waits here until the other transaction ends, then sees its row."""
    await connection.execute(
        delete(idempotency_keys).where(
            idempotency_keys.c.caller_id == claim.caller_id,
            idempotency_keys.c.created_at < expired_before,
        )
    )
    try:
        async with connection.begin_nested():
            await connection.execute(
                insert(idempotency_keys).values(
                    scope=claim.scope,
                    caller_id=claim.caller_id,
                    idempotency_key=claim.key,
                    fingerprint=claim.fingerprint,
                    parameters=dict(claim.parameters),
                    resource_id=claim.resource_id,
                    created_at=claim.created_at,
                )
            )
    except IntegrityError as error:
        if not is_unique_violation(error):
            raise
        stored = await get_creation_key(connection, claim.scope, claim.caller_id, claim.key)
        if stored is None:
            raise InvariantViolated("the idempotency key is taken but no row holds it") from error
        return stored
    return None


async def get_creation_key(
    connection: AsyncConnection, scope: str, caller_id: UUID, key: str
) -> CreationKey | None:
    result = await connection.execute(
        select(idempotency_keys).where(
            idempotency_keys.c.scope == scope,
            idempotency_keys.c.caller_id == caller_id,
            idempotency_keys.c.idempotency_key == key,
        )
    )
    row = result.first()
    if row is None:
        return None
    return CreationKey(
        row.scope,
        row.caller_id,
        row.idempotency_key,
        dict(row.parameters),
        row.resource_id,
        row.created_at,
    )
