"""One event to its recipients: a ``Notification`` per user (published on
``banking.notifications`` through the outbox) and a delivery row per matching webhook, with
the body each webhook will receive. Customers get their own accounts' events only, and never a
fraud score, its reasons or the model: their held and fraud events say "under review"."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final
from uuid import UUID, uuid4

from banking.domain.records import Notification
from banking.domain.roles import Role
from banking.events.outbox import notification_event
from banking.notifications.model import STAFF_ROLES, DeliveryStatus, EventType
from banking.notifications.store import Subscriber

# What a customer may see of a held command or a fraud alert (no score, reasons or model).
_CUSTOMER_FIELDS: Final = (
    "transaction_id",
    "account_id",
    "transaction_type",
    "command",
    "amount",
    "currency",
    "timestamp",
)
_UNDER_REVIEW: Final = {EventType.TRANSACTION_HELD.value, EventType.FRAUD_ALERT.value}


@dataclass(frozen=True, slots=True)
class Event:
    """An event to notify about: ``data`` is what staff see of it."""

    event_id: UUID
    event_type: str
    created_at: datetime
    data: Mapping[str, Any]
    account_id: UUID | None
    account_owner_id: UUID | None
    trace_id: str | None


@dataclass(frozen=True, slots=True)
class Fanout:
    notifications: tuple[Notification, ...]
    outbox_rows: tuple[dict[str, Any], ...]
    delivery_rows: tuple[dict[str, Any], ...]


def data_for(event: Event, role: Role) -> dict[str, Any]:
    """What a user of ``role`` may see of the event."""
    if role in STAFF_ROLES or event.event_type not in _UNDER_REVIEW:
        return dict(event.data)
    shown = {name: event.data[name] for name in _CUSTOMER_FIELDS if name in event.data}
    shown["status"] = "under_review"
    shown["message"] = "This movement is being reviewed by the bank before it goes through."
    return shown


def body_of(event: Event, data: Mapping[str, Any]) -> str:
    """The exact JSON body a webhook receives (and its signature covers)."""
    return json.dumps(
        {
            "id": str(event.event_id),
            "type": event.event_type,
            "created_at": event.created_at.isoformat(),
            "data": dict(data),
        },
        separators=(",", ":"),
    )


def message_for(event: Event, role: Role) -> str:
    """The human sentence of the notification."""
    data = event.data
    amount = f"{data.get('amount')} {data.get('currency')}".strip()
    kind = str(data.get("transaction_type") or data.get("command") or "movement").replace("_", " ")
    if event.event_type == EventType.TRANSACTION_COMPLETED:
        return f"A {kind} of {amount} was completed."
    if event.event_type == EventType.TRANSACTION_FAILED:
        return f"A {kind} of {amount} was declined ({data.get('failure_code') or 'failed'})."
    if event.event_type == EventType.WEBHOOK_DISABLED:
        return f"Your webhook {data.get('webhook_id')} was disabled: {data.get('reason')}."
    if role not in STAFF_ROLES:
        return f"A {kind} of {amount} is under review by the bank."
    return (
        f"{event.event_type}: {kind} of {amount} on account {data.get('account_id')} "
        f"(score {data.get('score')}, reasons {data.get('reasons') or 'none'})."
    )


def _amount(data: Mapping[str, Any]) -> Decimal | None:
    value = data.get("amount")
    return Decimal(str(value)) if value is not None else None


def _uuid(value: Any) -> UUID | None:
    try:
        return UUID(str(value)) if value else None
    except ValueError:
        return None


def fan_out(
    event: Event,
    subscribers: Sequence[Subscriber],
    *,
    owner_role: Role | None,
    now: datetime,
) -> Fanout:
    """The notifications and deliveries of ``event`` for these subscribers (already limited
    to those who may see it): one notification for the account owner (``owner_role`` is
    theirs) and for each other subscribed user, one delivery per webhook of the event's type."""
    matching = [s for s in subscribers if event.event_type in s.event_types]
    recipients: dict[UUID, Role] = {}
    if event.account_owner_id is not None and owner_role is not None:
        recipients[event.account_owner_id] = owner_role
    for subscriber in matching:
        recipients.setdefault(subscriber.owner_id, subscriber.owner_role)
    notifications = tuple(
        Notification(
            notification_id=uuid4(),
            user_id=user_id,
            source_event_id=event.event_id,
            source_event_type=event.event_type,
            account_id=event.account_id,
            transaction_id=_uuid(event.data.get("transaction_id")),
            amount=_amount(event.data),
            currency=event.data.get("currency"),
            message=message_for(event, role),
            created_at=now,
        )
        for user_id, role in recipients.items()
    )
    deliveries = tuple(
        {
            "delivery_id": uuid4(),
            "webhook_id": subscriber.webhook_id,
            "event_id": event.event_id,
            "event_type": event.event_type,
            "payload": body_of(event, data_for(event, subscriber.owner_role)),
            "status": DeliveryStatus.PENDING.value,
            "attempts": 0,
            "next_attempt_at": now,
            "last_status_code": None,
            "last_error": None,
            "created_at": now,
            "delivered_at": None,
        }
        for subscriber in matching
    )
    rows = tuple(notification_event(n, trace_id=event.trace_id) for n in notifications)
    return Fanout(notifications, rows, deliveries)
