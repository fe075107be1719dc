"""The SQL of notifications (SQLite and PostgreSQL): webhooks, deliveries, attempts, the
consumer's dedupe table and the outbox rows of notifications. Nothing here commits: callers
run these inside one ``Database`` unit of work."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from banking.domain.roles import Role
from banking.notifications.model import (
    Attempt,
    Delivery,
    DeliveryStatus,
    Webhook,
    WebhookStatus,
)
from banking.storage.tables import (
    accounts,
    consumed_events,
    outbox,
    users,
    webhook_attempts,
    webhook_deliveries,
    webhooks,
)

_WEBHOOK_COLUMNS = [column for column in webhooks.c if column.name != "secret"]


def _webhook(row: Any) -> Webhook:
    return Webhook(
        webhook_id=row.webhook_id,
        owner_id=row.owner_id,
        url=row.url,
        event_types=tuple(row.event_types),
        status=WebhookStatus(row.status),
        consecutive_failures=row.consecutive_failures,
        created_at=row.created_at,
        disabled_at=row.disabled_at,
        disabled_reason=row.disabled_reason,
    )


# --- webhooks ---------------------------------------------------------------------------------


async def count_webhooks(connection: AsyncConnection, owner_id: UUID) -> int:
    query = select(func.count()).select_from(webhooks).where(webhooks.c.owner_id == owner_id)
    return int((await connection.execute(query)).scalar_one())


async def lock_owner(connection: AsyncConnection, owner_id: UUID) -> None:
    """Serialize webhook creation per owner (the per-user bound holds under concurrency). On
    SQLite the write transaction is already the only one."""
    if connection.dialect.name == "postgresql":
        await connection.execute(
            select(users.c.user_id).where(users.c.user_id == owner_id).with_for_update()
        )


async def insert_webhook(connection: AsyncConnection, row: dict[str, Any]) -> None:
    await connection.execute(insert(webhooks), [row])


async def get_webhook(connection: AsyncConnection, webhook_id: UUID) -> Webhook | None:
    query = select(*_WEBHOOK_COLUMNS).where(webhooks.c.webhook_id == webhook_id)
    row = (await connection.execute(query)).first()
    return _webhook(row) if row is not None else None


async def list_webhooks(connection: AsyncConnection, owner_id: UUID | None) -> list[Webhook]:
    query = select(*_WEBHOOK_COLUMNS).order_by(webhooks.c.created_at, webhooks.c.webhook_id)
    if owner_id is not None:
        query = query.where(webhooks.c.owner_id == owner_id)
    return [_webhook(row) for row in await connection.execute(query)]


async def delete_webhook(connection: AsyncConnection, webhook_id: UUID) -> None:
    """The webhook with its deliveries and their attempts."""
    of_webhook = select(webhook_deliveries.c.delivery_id).where(
        webhook_deliveries.c.webhook_id == webhook_id
    )
    await connection.execute(
        delete(webhook_attempts).where(webhook_attempts.c.delivery_id.in_(of_webhook))
    )
    await connection.execute(
        delete(webhook_deliveries).where(webhook_deliveries.c.webhook_id == webhook_id)
    )
    await connection.execute(delete(webhooks).where(webhooks.c.webhook_id == webhook_id))


@dataclass(frozen=True, slots=True)
class Subscriber:
    webhook_id: UUID
    owner_id: UUID
    owner_role: Role
    event_types: tuple[str, ...]


async def subscribers(
    connection: AsyncConnection, *, account_owner_id: UUID | None, owner_id: UUID | None = None
) -> list[Subscriber]:
    """Active webhooks of active users that may see events of the account owner's accounts:
    the owner's own and every staff member's (``owner_id``: only that user's)."""
    query = (
        select(webhooks.c.webhook_id, webhooks.c.owner_id, webhooks.c.event_types, users.c.role)
        .join(users, users.c.user_id == webhooks.c.owner_id)
        .where(webhooks.c.status == WebhookStatus.ACTIVE.value, users.c.is_active.is_(True))
        .order_by(webhooks.c.created_at, webhooks.c.webhook_id)
    )
    if owner_id is not None:
        query = query.where(webhooks.c.owner_id == owner_id)
    else:
        visible = users.c.role != Role.CUSTOMER.value
        if account_owner_id is not None:
            visible = or_(visible, webhooks.c.owner_id == account_owner_id)
        query = query.where(visible)
    return [
        Subscriber(row.webhook_id, row.owner_id, Role(row.role), tuple(row.event_types))
        for row in await connection.execute(query)
    ]


def visible_to(subscriber: Subscriber, account_owner_id: UUID | None) -> bool:
    """Whether ``subscriber`` (from ``subscribers``) sees events of the owner's accounts."""
    return subscriber.owner_role is not Role.CUSTOMER or subscriber.owner_id == account_owner_id


async def subscribers_of_owners(
    connection: AsyncConnection, account_owner_ids: Collection[UUID]
) -> list[Subscriber]:
    """``subscribers`` of several account owners in one read: every staff webhook and the
    owners' own, in the same order; ``visible_to`` picks each owner's."""
    query = (
        select(webhooks.c.webhook_id, webhooks.c.owner_id, webhooks.c.event_types, users.c.role)
        .join(users, users.c.user_id == webhooks.c.owner_id)
        .where(webhooks.c.status == WebhookStatus.ACTIVE.value, users.c.is_active.is_(True))
        .order_by(webhooks.c.created_at, webhooks.c.webhook_id)
    )
    visible = users.c.role != Role.CUSTOMER.value
    if account_owner_ids:
        visible = or_(visible, webhooks.c.owner_id.in_(sorted(account_owner_ids)))
    return [
        Subscriber(row.webhook_id, row.owner_id, Role(row.role), tuple(row.event_types))
        for row in await connection.execute(query.where(visible))
    ]


async def account_owners(
    connection: AsyncConnection, account_ids: Collection[UUID]
) -> dict[UUID, UUID]:
    """The owner (``customer_id``) of each of the accounts that exist."""
    if not account_ids:
        return {}
    query = select(accounts.c.account_id, accounts.c.customer_id).where(
        accounts.c.account_id.in_(sorted(account_ids))
    )
    return {account_id: owner for account_id, owner in await connection.execute(query)}


async def roles_of(connection: AsyncConnection, user_ids: Collection[UUID]) -> dict[UUID, Role]:
    """The role of each of the users that exist."""
    if not user_ids:
        return {}
    query = select(users.c.user_id, users.c.role).where(users.c.user_id.in_(sorted(user_ids)))
    return {user_id: Role(role) for user_id, role in await connection.execute(query)}


async def account_owner(connection: AsyncConnection, account_id: UUID) -> UUID | None:
    query = select(accounts.c.customer_id).where(accounts.c.account_id == account_id)
    owner: UUID | None = (await connection.execute(query)).scalar_one_or_none()
    return owner


# --- the consumer's dedupe and the outbox -----------------------------------------------------


async def mark_consumed(
    connection: AsyncConnection, consumer: str, event_id: UUID, at: datetime
) -> bool:
    """Record that ``consumer`` handled ``event_id``; False when it already had."""
    values = {"consumer": consumer, "event_id": event_id, "consumed_at": at}
    if connection.dialect.name == "postgresql":
        statement: Any = pg_insert(consumed_events).values(values).on_conflict_do_nothing()
    else:
        statement = sqlite_insert(consumed_events).values(values).on_conflict_do_nothing()
    result = await connection.execute(statement)
    return bool(result.rowcount == 1)


async def mark_consumed_many(
    connection: AsyncConnection, consumer: str, event_ids: Sequence[UUID], at: datetime
) -> set[UUID]:
    """``mark_consumed`` of several events in one statement; the ids that were new."""
    if not event_ids:
        return set()
    values = [
        {"consumer": consumer, "event_id": event_id, "consumed_at": at}
        for event_id in dict.fromkeys(event_ids)
    ]
    if connection.dialect.name == "postgresql":
        statement: Any = pg_insert(consumed_events).on_conflict_do_nothing()
    else:
        statement = sqlite_insert(consumed_events).on_conflict_do_nothing()
    # Compiled once, sent in pages ("insertmanyvalues"); only the new rows come back.
    result = await connection.execute(statement.returning(consumed_events.c.event_id), values)
    return set(result.scalars())


async def add_outbox_rows(connection: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await connection.execute(insert(outbox), list(rows))


# --- deliveries -------------------------------------------------------------------------------


async def add_deliveries(connection: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await connection.execute(insert(webhook_deliveries), list(rows))


def _attempt(row: Any) -> Attempt:
    return Attempt(
        attempt=row.attempt,
        started_at=row.started_at,
        duration_ms=row.duration_ms,
        status_code=row.status_code,
        error=row.error,
        succeeded=row.succeeded,
    )


async def list_deliveries(
    connection: AsyncConnection,
    webhook_id: UUID,
    *,
    limit: int,
    before: tuple[datetime, UUID] | None,
) -> list[Delivery]:
    """Deliveries of a webhook, newest first, each with its attempts (oldest first)."""
    query = select(webhook_deliveries).where(webhook_deliveries.c.webhook_id == webhook_id)
    if before is not None:
        created_at, delivery_id = before
        query = query.where(
            or_(
                webhook_deliveries.c.created_at < created_at,
                and_(
                    webhook_deliveries.c.created_at == created_at,
                    webhook_deliveries.c.delivery_id < delivery_id,
                ),
            )
        )
    query = query.order_by(
        webhook_deliveries.c.created_at.desc(), webhook_deliveries.c.delivery_id.desc()
    ).limit(limit)
    rows = (await connection.execute(query)).all()
    attempts: dict[UUID, list[Attempt]] = {row.delivery_id: [] for row in rows}
    if rows:
        attempt_rows = await connection.execute(
            select(webhook_attempts)
            .where(webhook_attempts.c.delivery_id.in_(list(attempts)))
            .order_by(webhook_attempts.c.attempt)
        )
        for attempt_row in attempt_rows:
            attempts[attempt_row.delivery_id].append(_attempt(attempt_row))
    return [
        Delivery(
            delivery_id=row.delivery_id,
            webhook_id=row.webhook_id,
            event_id=row.event_id,
            event_type=row.event_type,
            status=DeliveryStatus(row.status),
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at,
            last_status_code=row.last_status_code,
            last_error=row.last_error,
            created_at=row.created_at,
            delivered_at=row.delivered_at,
            attempt_history=tuple(attempts[row.delivery_id]),
        )
        for row in rows
    ]


@dataclass(frozen=True, slots=True)
class Due:
    """A delivery claimed for one attempt, with what sending it needs."""

    delivery_id: UUID
    webhook_id: UUID
    owner_id: UUID
    event_id: UUID
    event_type: str
    payload: str
    attempts: int
    url: str
    secret: str
    webhook_status: WebhookStatus


async def claim_due(
    connection: AsyncConnection, *, now: datetime, lease_until: datetime, limit: int
) -> list[Due]:
    """Pending deliveries due by ``now``, leased until ``lease_until`` (no other worker picks
    them up meanwhile; on PostgreSQL rows another worker is claiming are skipped)."""
    query = (
        select(
            webhook_deliveries.c.delivery_id,
            webhook_deliveries.c.webhook_id,
            webhook_deliveries.c.event_id,
            webhook_deliveries.c.event_type,
            webhook_deliveries.c.payload,
            webhook_deliveries.c.attempts,
            webhooks.c.owner_id,
            webhooks.c.url,
            webhooks.c.secret,
            webhooks.c.status.label("webhook_status"),
        )
        .join(webhooks, webhooks.c.webhook_id == webhook_deliveries.c.webhook_id)
        .where(
            webhook_deliveries.c.status == DeliveryStatus.PENDING.value,
            webhook_deliveries.c.next_attempt_at <= now,
        )
        .order_by(webhook_deliveries.c.next_attempt_at)
        .limit(limit)
    )
    if connection.dialect.name == "postgresql":
        query = query.with_for_update(of=webhook_deliveries, skip_locked=True)
    rows = (await connection.execute(query)).all()
    if rows:
        await connection.execute(
            update(webhook_deliveries)
            .where(webhook_deliveries.c.delivery_id.in_([row.delivery_id for row in rows]))
            .values(next_attempt_at=lease_until)
        )
    return [
        Due(
            delivery_id=row.delivery_id,
            webhook_id=row.webhook_id,
            owner_id=row.owner_id,
            event_id=row.event_id,
            event_type=row.event_type,
            payload=row.payload,
            attempts=row.attempts,
            url=row.url,
            secret=row.secret,
            webhook_status=WebhookStatus(row.webhook_status),
        )
        for row in rows
    ]


async def add_attempt(connection: AsyncConnection, row: dict[str, Any]) -> None:
    await connection.execute(insert(webhook_attempts), [row])


async def update_delivery(
    connection: AsyncConnection, delivery_id: UUID, values: dict[str, Any]
) -> bool:
    """Change a delivery that is still pending; False when it is gone (webhook deleted)."""
    result = await connection.execute(
        update(webhook_deliveries)
        .where(
            webhook_deliveries.c.delivery_id == delivery_id,
            webhook_deliveries.c.status == DeliveryStatus.PENDING.value,
        )
        .values(**values)
    )
    return bool(result.rowcount == 1)


async def reset_failures(connection: AsyncConnection, webhook_id: UUID) -> None:
    await connection.execute(
        update(webhooks).where(webhooks.c.webhook_id == webhook_id).values(consecutive_failures=0)
    )


async def count_failure(connection: AsyncConnection, webhook_id: UUID) -> int:
    """One more given-up delivery in a row; the new count."""
    result = await connection.execute(
        update(webhooks)
        .where(webhooks.c.webhook_id == webhook_id)
        .values(consecutive_failures=webhooks.c.consecutive_failures + 1)
        .returning(webhooks.c.consecutive_failures)
    )
    count: int | None = result.scalar_one_or_none()
    return count or 0


async def disable_webhook(
    connection: AsyncConnection, webhook_id: UUID, *, at: datetime, reason: str
) -> bool:
    """Disable an active webhook; False when it was not active."""
    result = await connection.execute(
        update(webhooks)
        .where(
            webhooks.c.webhook_id == webhook_id,
            webhooks.c.status == WebhookStatus.ACTIVE.value,
        )
        .values(status=WebhookStatus.DISABLED.value, disabled_at=at, disabled_reason=reason)
    )
    return bool(result.rowcount == 1)


async def pending_retries(connection: AsyncConnection) -> int:
    """Pending deliveries that already failed at least once (the retry backlog)."""
    query = (
        select(func.count())
        .select_from(webhook_deliveries)
        .where(
            webhook_deliveries.c.status == DeliveryStatus.PENDING.value,
            webhook_deliveries.c.attempts > 0,
        )
    )
    return int((await connection.execute(query)).scalar_one())
