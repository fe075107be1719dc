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
    statement = _insert_statement(connection)
    result = await connection.execute(statement.values(**row).returning(audit_records.c.audit_id))
    return result.scalar_one_or_none() is not None


def _insert_statement(connection: AsyncConnection) -> Any:
    dialect = connection.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(audit_records).on_conflict_do_nothing(index_elements=_KEY)
    if dialect == "sqlite":
        return sqlite.insert(audit_records).on_conflict_do_nothing(index_elements=_KEY)
    raise NotImplementedError(f"the audit store does not support {dialect}")


def key_of(row: dict[str, Any]) -> tuple[Any, ...]:
    """The unique key (event_id, topic, delivery) of an audit row."""
    return tuple(row[name] for name in _KEY)


async def insert_records(connection: AsyncConnection, rows: Sequence[dict[str, Any]]) -> list[bool]:
    """Insert audit rows (all with the same columns) in bulk; per row, whether it was new
    (False: its key was there already, or earlier in ``rows``)."""
    inserted: set[tuple[Any, ...]] = set()
    firsts: list[dict[str, Any]] = []
    seen: set[tuple[Any, ...]] = set()
    for row in rows:
        key = key_of(row)
        if key not in seen:
            seen.add(key)
            firsts.append(row)
    if firsts:
        # One statement compiled once and sent in pages (SQLAlchemy's "insertmanyvalues"), not
        # one VALUES list of every row (compiling that costs more than the insert).
        c = audit_records.c
        statement = _insert_statement(connection).returning(c.event_id, c.topic, c.delivery)
        result = await connection.execute(statement, firsts)
        inserted.update(tuple(found) for found in result)
    outcomes = []
    for row in rows:
        key = key_of(row)
        outcomes.append(key in inserted)
        inserted.discard(key)  # a second row with the same key is a duplicate
    return outcomes


async def actor_of_movement(
    connection: AsyncConnection, payload: dict[str, Any] | None
) -> Actor | None:
    """Who made the movement an event is about, as the ledger says (the leg's ``created_by``):
    by its transaction id, or for a balance event by the leg that produced that version."""
    (actor,) = await actors_of_movements(connection, [payload])
    return actor


def _movement_condition(payload: dict[str, Any] | None) -> tuple[str, Any] | None:
    """How ``actor_of_movement`` finds a payload's leg: ("transaction", id), ("version",
    (account id, version)) or None (no movement named)."""
    if payload is None:
        return None
    if payload.get("transaction_id"):
        try:
            return "transaction", UUID(str(payload["transaction_id"]))
        except ValueError:
            return None
    if payload.get("account_id") and isinstance(payload.get("version"), int):
        try:
            return "version", (UUID(str(payload["account_id"])), payload["version"])
        except ValueError:
            return None
    return None


async def actors_of_movements(
    connection: AsyncConnection, payloads: Sequence[dict[str, Any] | None]
) -> list[Actor | None]:
    """``actor_of_movement`` of each payload, in three set-based reads (legs by id, legs by
    balance version, users) whatever the number of payloads."""
    conditions = [_movement_condition(payload) for payload in payloads]
    by_transaction = {value for kind, value in filter(None, conditions) if kind == "transaction"}
    by_version: set[tuple[UUID, int]] = {
        value for kind, value in filter(None, conditions) if kind == "version"
    }
    creators: dict[tuple[str, Any], UUID | None] = {}
    t = transactions.c
    if by_transaction:
        statement = select(t.transaction_id, t.created_by).where(
            t.transaction_id.in_(sorted(by_transaction))
        )
        for transaction_id, created_by in await connection.execute(statement):
            creators[("transaction", transaction_id)] = created_by
    if by_version:
        # Should several legs carry one version, the first found names the actor, as the
        # ``limit(1)`` of ``actor_of_movement`` does.
        wanted = or_(
            *(
                and_(t.account_id == account_id, t.balance_version_after == version)
                for account_id, version in sorted(by_version, key=str)
            )
        )
        statement = select(t.account_id, t.balance_version_after, t.created_by).where(wanted)
        for row in await connection.execute(statement):
            leg_version = (row.account_id, row.balance_version_after)
            creators.setdefault(("version", leg_version), row.created_by)
    user_ids = {user_id for user_id in creators.values() if user_id is not None}
    names: dict[UUID, str] = {}
    if user_ids:
        statement = select(users.c.user_id, users.c.username).where(
            users.c.user_id.in_(sorted(user_ids))
        )
        names = {user_id: username for user_id, username in await connection.execute(statement)}
    actors: list[Actor | None] = []
    for condition in conditions:
        created_by = creators.get(condition) if condition is not None else None
        username = names.get(created_by) if created_by is not None else None
        actors.append(Actor(str(created_by), username) if username is not None else None)
    return actors


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
