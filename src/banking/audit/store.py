"""The audit store on SQLAlchemy (SQLite and PostgreSQL): the idempotent insert, the ledger
lookups that name a movement's actor, the filtered pages, and the outbox comparison."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Select, and_, exists, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from banking.audit.records import Actor
from banking.storage.tables import audit_records, outbox, transactions, users

_KEY = ("event_id", "topic", "delivery")


async def insert_record(connection: AsyncConnection, row: dict[str, Any]) -> bool:
    """Insert one audit row; False when it was there already (ON CONFLICT DO NOTHING on the
    unique key (event_id, topic, delivery))."""
    dialect = connection.dialect.name
    statement: Any
    if dialect == "postgresql":
        statement = postgresql.insert(audit_records).on_conflict_do_nothing(index_elements=_KEY)
    elif dialect == "sqlite":
        statement = sqlite.insert(audit_records).on_conflict_do_nothing(index_elements=_KEY)
    else:
        raise NotImplementedError(f"the audit store does not support {dialect}")
    result = await connection.execute(statement.values(**row).returning(audit_records.c.audit_id))
    return result.scalar_one_or_none() is not None


async def _user_actor(connection: AsyncConnection, user_id: UUID | None) -> Actor | None:
    if user_id is None:
        return None
    username = (
        await connection.execute(select(users.c.username).where(users.c.user_id == user_id))
    ).scalar_one_or_none()
    return Actor(str(user_id), username) if username is not None else None


async def actor_of_movement(
    connection: AsyncConnection, payload: dict[str, Any] | None
) -> Actor | None:
    """Who made the movement an event is about, as the ledger says (the leg's ``created_by``):
    by its transaction id, or for a balance event by the leg that produced that version."""
    if payload is None:
        return None
    condition = None
    if payload.get("transaction_id"):
        try:
            condition = transactions.c.transaction_id == UUID(str(payload["transaction_id"]))
        except ValueError:
            return None
    elif payload.get("account_id") and isinstance(payload.get("version"), int):
        try:
            account_id = UUID(str(payload["account_id"]))
        except ValueError:
            return None
        condition = and_(
            transactions.c.account_id == account_id,
            transactions.c.balance_version_after == payload["version"],
        )
    if condition is None:
        return None
    created_by = (
        await connection.execute(select(transactions.c.created_by).where(condition).limit(1))
    ).scalar_one_or_none()
    return await _user_actor(connection, created_by)


@dataclass(frozen=True, slots=True)
class AuditQuery:
    account_id: UUID | None = None
    actor: str | None = None  # a username or a user id
    time_from: datetime | None = None
    time_to: datetime | None = None
    event_type: str | None = None
    before_audit_id: int | None = None


async def list_records(
    connection: AsyncConnection, query: AuditQuery, *, limit: int
) -> Sequence[Row[Any]]:
    """Audit rows matching ``query``, newest first (by ``audit_id``)."""
    statement: Select[Any] = select(audit_records)
    c = audit_records.c
    if query.account_id is not None:
        statement = statement.where(c.account_id == query.account_id)
    if query.actor is not None:
        statement = statement.where(or_(c.actor_name == query.actor, c.actor_id == query.actor))
    if query.time_from is not None:
        statement = statement.where(c.event_time >= query.time_from)
    if query.time_to is not None:
        statement = statement.where(c.event_time < query.time_to)
    if query.event_type is not None:
        statement = statement.where(c.event_type == query.event_type)
    if query.before_audit_id is not None:
        statement = statement.where(c.audit_id < query.before_audit_id)
    statement = statement.order_by(c.audit_id.desc()).limit(limit)
    rows: Sequence[Row[Any]] = (await connection.execute(statement)).all()
    return rows


async def unaudited_outbox_rows(
    connection: AsyncConnection,
    *,
    topics: Sequence[str],
    published_before: datetime,
    limit: int,
) -> Sequence[Any]:
    """Published outbox rows on ``topics`` with no audit record of the same event id on the
    same topic, oldest first."""
    recorded = exists().where(
        and_(
            audit_records.c.event_id == outbox.c.event_id,
            audit_records.c.topic == outbox.c.topic,
        )
    )
    statement = (
        select(
            outbox.c.outbox_id,
            outbox.c.event_id,
            outbox.c.topic,
            outbox.c.event_type,
            outbox.c.created_at,
            outbox.c.published_at,
        )
        .where(
            outbox.c.published_at.is_not(None),
            outbox.c.published_at < published_before,
            outbox.c.topic.in_(topics),
            ~recorded,
        )
        .order_by(outbox.c.outbox_id)
        .limit(limit)
    )
    return (await connection.execute(statement)).all()


async def last_staff_actions(
    connection: AsyncConnection, event_type: str, *, limit: int
) -> list[str]:
    """The payloads (JSON text) of the newest ``event_type`` actions: first those still in
    the outbox (not yet recorded, or recorded and kept), then the audit trail's."""
    from_outbox = (
        await connection.execute(
            select(outbox.c.payload)
            .where(outbox.c.event_type == event_type)
            .order_by(outbox.c.outbox_id.desc())
            .limit(limit)
        )
    ).scalars()
    from_audit = (
        await connection.execute(
            select(audit_records.c.payload)
            .where(audit_records.c.event_type == event_type, audit_records.c.payload.is_not(None))
            .order_by(audit_records.c.audit_id.desc())
            .limit(limit)
        )
    ).scalars()
    return [*from_outbox, *from_audit]
