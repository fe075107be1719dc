"""The webhook subscriptions: create, list, delete and read deliveries, with authorization.

Anyone signed in may subscribe their own webhooks. Customers see and delete only their own
(another user's webhook is "not found", so ids cannot be probed); auditors and admins read
every webhook and its deliveries; admins may also delete any. Which events a webhook
receives is decided when an event is routed (``routing``): a customer's webhooks get their
own accounts' events, staff webhooks every event of their types.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final
from uuid import UUID, uuid4

from sqlalchemy.ext.asyncio import AsyncConnection

from banking.config import Settings
from banking.domain.clock import utc_now
from banking.domain.errors import BankingError, ValidationFailed
from banking.domain.records import StaffAction, StaffActionType
from banking.domain.roles import Actor, Role
from banking.events.outbox import staff_action_event
from banking.ledger.history import page_size_within
from banking.notifications import store
from banking.notifications.model import (
    EVENT_TYPES,
    CreatedWebhook,
    DeliveryPage,
    Webhook,
    WebhookStatus,
)
from banking.notifications.signing import new_secret
from banking.notifications.ssrf import (
    Resolver,
    check_target,
    parse_networks,
    system_resolver,
)
from banking.observability import context
from banking.observability.logging import get_logger
from banking.storage.database import Database

log = get_logger(__name__)

DELIVERY_PAGE_SIZE_DEFAULT: Final = 20
CURSOR_LENGTH_MAX: Final = 200


class WebhookNotFound(BankingError):
    code = "NOT_FOUND"


def _reads_every_webhook(actor: Actor) -> bool:
    return actor.role in (Role.AUDITOR, Role.ADMIN)


def _deletes_every_webhook(actor: Actor) -> bool:
    return actor.role is Role.ADMIN


def checked_event_types(event_types: Sequence[str]) -> tuple[str, ...]:
    """The distinct event types, in the order given; ValidationFailed for none or unknown."""
    if not event_types:
        raise ValidationFailed("event_types must name at least one event type", field="event_types")
    unknown = [name for name in event_types if name not in EVENT_TYPES]
    if unknown:
        raise ValidationFailed(
            f"unknown event type {unknown[0]!r}; choose from {', '.join(EVENT_TYPES)}",
            field="event_types",
        )
    return tuple(dict.fromkeys(event_types))


def encode_cursor(created_at: datetime, delivery_id: UUID) -> str:
    text = f"{created_at.isoformat()}|{delivery_id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        if len(cursor) > CURSOR_LENGTH_MAX:
            raise ValueError("too long")
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_text, _, delivery_text = text.partition("|")
        created_at = datetime.fromisoformat(created_text)
        if created_at.tzinfo is None:
            raise ValueError("naive")
        return created_at, UUID(delivery_text)
    except (ValueError, binascii.Error, UnicodeDecodeError) as error:
        raise ValidationFailed("cursor is not valid", field="cursor") from error


def _audited(
    action: StaffActionType, actor: Actor, webhook_id: UUID, details: dict[str, Any]
) -> dict[str, Any]:
    """The outbox row of a webhook change on the audit trail (no secret in ``details``)."""
    return staff_action_event(
        StaffAction(
            action_id=uuid4(),
            action=action,
            actor=actor,
            created_at=utc_now(),
            trace_id=context.current("trace_id"),
            webhook_id=webhook_id,
            details=details,
        )
    )


class WebhookService:
    def __init__(
        self, database: Database, settings: Settings, *, resolver: Resolver = system_resolver
    ) -> None:
        self._database = database
        self._per_user_max = settings.webhooks_per_user_max
        # Bounded like every page (PAGE_SIZE_MAX); a delivery has at most WEBHOOK_ATTEMPTS_MAX
        # attempts.
        self._page_size_max = settings.page_size_max
        self._allowed_networks = parse_networks(settings.webhook_allowed_networks)
        self._resolver = resolver

    async def create(self, actor: Actor, *, url: str, event_types: Sequence[str]) -> CreatedWebhook:
        """A new active webhook of the actor's, with its signing secret (shown this once)."""
        types = checked_event_types(event_types)
        await check_target(url, allowed_networks=self._allowed_networks, resolver=self._resolver)
        now = utc_now()
        secret = new_secret()
        webhook = Webhook(
            webhook_id=uuid4(),
            owner_id=actor.user_id,
            url=url,
            event_types=types,
            status=WebhookStatus.ACTIVE,
            consecutive_failures=0,
            created_at=now,
            disabled_at=None,
            disabled_reason=None,
        )

        async def work(connection: AsyncConnection) -> None:
            await store.lock_owner(connection, actor.user_id)
            if await store.count_webhooks(connection, actor.user_id) >= self._per_user_max:
                raise ValidationFailed(
                    f"a user may have at most {self._per_user_max} webhooks; delete one first"
                )
            await store.insert_webhook(
                connection,
                {
                    "webhook_id": webhook.webhook_id,
                    "owner_id": webhook.owner_id,
                    "url": webhook.url,
                    "event_types": list(webhook.event_types),
                    "secret": secret,
                    "status": webhook.status.value,
                    "consecutive_failures": 0,
                    "created_at": now,
                    "disabled_at": None,
                    "disabled_reason": None,
                },
            )
            # Audited with the URL and event types; never the secret.
            await store.add_outbox_rows(
                connection,
                [
                    _audited(
                        StaffActionType.WEBHOOK_CREATED,
                        actor,
                        webhook.webhook_id,
                        {"url": url, "event_types": list(types), "owner_id": str(actor.user_id)},
                    )
                ],
            )

        await self._database.run_in_transaction(work)
        log.info(
            "webhook_created",
            webhook_id=str(webhook.webhook_id),
            owner_id=str(actor.user_id),
            event_types=list(types),
        )
        return CreatedWebhook(webhook, secret)

    async def list(self, actor: Actor) -> list[Webhook]:
        """The actor's webhooks (every webhook for auditors and admins), oldest first."""
        owner = None if _reads_every_webhook(actor) else actor.user_id
        async with self._database.read() as connection:
            return await store.list_webhooks(connection, owner)

    async def get(self, actor: Actor, webhook_id: UUID) -> Webhook:
        async with self._database.read() as connection:
            return await self._visible(connection, actor, webhook_id)

    async def delete(self, actor: Actor, webhook_id: UUID) -> None:
        """Remove a webhook with its delivery history; pending deliveries are not sent."""

        async def work(connection: AsyncConnection) -> None:
            webhook = await store.get_webhook(connection, webhook_id)
            if webhook is None or (
                webhook.owner_id != actor.user_id and not _deletes_every_webhook(actor)
            ):
                raise WebhookNotFound("webhook not found")
            await store.delete_webhook(connection, webhook_id)
            details = {"url": webhook.url, "owner_id": str(webhook.owner_id)}
            await store.add_outbox_rows(
                connection,
                [_audited(StaffActionType.WEBHOOK_DELETED, actor, webhook_id, details)],
            )

        await self._database.run_in_transaction(work)
        log.info("webhook_deleted", webhook_id=str(webhook_id), by_user_id=str(actor.user_id))

    async def deliveries(
        self,
        actor: Actor,
        webhook_id: UUID,
        *,
        cursor: str | None = None,
        page_size: int | None = None,
    ) -> DeliveryPage:
        """A webhook's deliveries, newest first, each with every attempt."""
        size = page_size_within(
            page_size or None, default=DELIVERY_PAGE_SIZE_DEFAULT, maximum=self._page_size_max
        )
        before = decode_cursor(cursor) if cursor is not None else None
        async with self._database.read() as connection:
            await self._visible(connection, actor, webhook_id)
            rows = await store.list_deliveries(
                connection, webhook_id, limit=size + 1, before=before
            )
        page = tuple(rows[:size])
        next_cursor = (
            encode_cursor(page[-1].created_at, page[-1].delivery_id) if len(rows) > size else None
        )
        return DeliveryPage(page, next_cursor)

    async def _visible(
        self, connection: AsyncConnection, actor: Actor, webhook_id: UUID
    ) -> Webhook:
        webhook = await store.get_webhook(connection, webhook_id)
        if webhook is None or (
            webhook.owner_id != actor.user_id and not _reads_every_webhook(actor)
        ):
            raise WebhookNotFound("webhook not found")
        return webhook
