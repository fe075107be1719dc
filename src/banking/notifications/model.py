"""The records of the notification service: webhooks, their deliveries and attempts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final
from uuid import UUID

from banking.domain.roles import Role


class EventType(StrEnum):
    """What a webhook may subscribe to."""

    TRANSACTION_COMPLETED = "transaction.completed"
    TRANSACTION_FAILED = "transaction.failed"
    TRANSACTION_HELD = "transaction.held"
    FRAUD_ALERT = "fraud.alert"
    WEBHOOK_DISABLED = "webhook.disabled"


EVENT_TYPES: Final = tuple(event_type.value for event_type in EventType)
# Who receives every event of their types, whoever owns the account (customers: their own).
STAFF_ROLES: Final = frozenset({Role.TELLER, Role.AUDITOR, Role.ADMIN})


class WebhookStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Webhook:
    """A subscription, as every response shows it (its secret is never part of it)."""

    webhook_id: UUID
    owner_id: UUID
    url: str
    event_types: tuple[str, ...]
    status: WebhookStatus
    consecutive_failures: int
    created_at: datetime
    disabled_at: datetime | None
    disabled_reason: str | None


@dataclass(frozen=True, slots=True)
class CreatedWebhook:
    """A webhook just created, with its signing secret: the one time the secret is shown."""

    webhook: Webhook
    secret: str


@dataclass(frozen=True, slots=True)
class Attempt:
    attempt: int
    started_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    succeeded: bool


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event for one webhook, with every attempt made to deliver it."""

    delivery_id: UUID
    webhook_id: UUID
    event_id: UUID
    event_type: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    attempt_history: tuple[Attempt, ...]


@dataclass(frozen=True, slots=True)
class DeliveryPage:
    deliveries: tuple[Delivery, ...]
    next_cursor: str | None
