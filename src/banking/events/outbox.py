"""Outbox rows: the events of a money movement, written in the same database transaction.

Payloads are JSON text with amounts as decimal strings; the relay turns them into the Arrow or
JSON wire format (``events.serialization``). Event types and schema versions are fixed here:
v2 has the columns of v1 and frames Arrow values as a record batch alone, the schema
published once (``events.registry``); the transaction event v3 adds a leg's metadata and its
reversal and hold links (older versions stay readable).

Each record has one payload mapping: ``transaction_payload`` (a leg) and ``balance_payload``
follow the columns of ``events.schemas`` (the same ones the Arrow encoding uses), and
``command_payload`` is the inverse of ``events.commands.command_from_payload``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final
from uuid import UUID, uuid4

from banking.domain.errors import InvariantViolated
from banking.domain.money import format_amount
from banking.domain.records import (
    Balance,
    Command,
    CommandHeld,
    CommandSubmitted,
    FraudAlert,
    HoldChange,
    HoldChanged,
    LedgerEvent,
    LegsRecorded,
    Notification,
    StaffAction,
    StaffActionType,
    Transaction,
    TransactionStatus,
    TransactionType,
    TransferRequest,
    request_of,
)
from banking.domain.roles import SYSTEM_ACTOR_NAME, Actor
from banking.events import topics
from banking.events.schemas import BALANCE_V1, HOLD_V1, TRANSACTION_V3, labels_text

TRANSACTION_SCHEMA_VERSION: Final = 3
BALANCE_SCHEMA_VERSION: Final = 2
EVENT_TRANSACTION_COMPLETED: Final = "transaction.completed"
EVENT_TRANSACTION_FAILED: Final = "transaction.failed"
EVENT_BALANCE_UPDATED: Final = "balance.updated"


def _row(
    *,
    topic: str,
    key: UUID,
    event_type: str,
    version: int,
    payload: dict[str, Any],
    trace_id: str | None,
    at: datetime,
) -> dict[str, Any]:
    return {
        "event_id": uuid4(),
        "topic": topic,
        "event_key": str(key),
        "event_type": event_type,
        "schema_version": version,
        "payload": json.dumps(payload, separators=(",", ":"), sort_keys=True),
        "trace_id": trace_id,
        "created_at": at,
        "published_at": None,
    }


def transaction_payload(leg: Transaction) -> dict[str, Any]:
    """The payload of a leg's transaction event (the columns of schema v3)."""
    return TRANSACTION_V3.text_row(leg)


def balance_payload(balance: Balance) -> dict[str, Any]:
    """The payload of a balance event (the columns of schema v1, also v2's)."""
    return BALANCE_V1.text_row(balance)


def transaction_event(leg: Transaction, *, trace_id: str | None) -> dict[str, Any]:
    """The completed/failed event of one leg, keyed by its account."""
    completed = leg.status is TransactionStatus.COMPLETED
    payload = transaction_payload(leg)
    return _row(
        topic=topics.TRANSACTIONS_COMPLETED if completed else topics.TRANSACTIONS_FAILED,
        key=leg.account_id,
        event_type=EVENT_TRANSACTION_COMPLETED if completed else EVENT_TRANSACTION_FAILED,
        version=TRANSACTION_SCHEMA_VERSION,
        payload=payload,
        trace_id=trace_id,
        at=leg.created_at,
    )


def balance_event(leg: Transaction, *, trace_id: str | None) -> dict[str, Any]:
    """The balance after a completed leg, read from the leg: its available balance (current
    is taken to equal it; a movement that knows better gives its balances, see
    ``events_for_legs``)."""
    if leg.available_balance_after is None or leg.balance_version_after is None:
        raise InvariantViolated("a balance event needs the balance after the leg")
    balance = Balance(
        account_id=leg.account_id,
        currency=leg.currency,
        current_balance=leg.available_balance_after,
        available_balance=leg.available_balance_after,
        version=leg.balance_version_after,
        last_updated=leg.created_at,
    )
    return balance_row(balance, trace_id=trace_id)


def balance_row(balance: Balance, *, trace_id: str | None) -> dict[str, Any]:
    """The balance event of a balance as it is (both balances, its version)."""
    return _row(
        topic=topics.ACCOUNT_BALANCES,
        key=balance.account_id,
        event_type=EVENT_BALANCE_UPDATED,
        version=BALANCE_SCHEMA_VERSION,
        payload=balance_payload(balance),
        trace_id=trace_id,
        at=balance.last_updated,
    )


def events_for_legs(
    legs: list[Transaction], *, trace_id: str | None, balances: tuple[Balance, ...] = ()
) -> list[dict[str, Any]]:
    """Every event of a movement, in order: per leg its transaction event, then its balance
    (its account's of ``balances`` when given, else read from the leg)."""
    by_account = {balance.account_id: balance for balance in balances}
    rows: list[dict[str, Any]] = []
    for leg in legs:
        rows.append(transaction_event(leg, trace_id=trace_id))
        if leg.status is TransactionStatus.COMPLETED:
            balance = by_account.get(leg.account_id)
            if balance is None:
                rows.append(balance_event(leg, trace_id=trace_id))
            else:
                rows.append(balance_row(balance, trace_id=trace_id))
    return rows


HOLD_SCHEMA_VERSION: Final = 1
HOLD_EVENT_PREFIX: Final = "hold."
# Every hold event's type: ``hold.authorized``, ``hold.captured``, ``hold.voided``, ...
HOLD_EVENT_TYPES: Final = tuple(HOLD_EVENT_PREFIX + change.value for change in HoldChange)


def hold_payload(changed: HoldChanged) -> dict[str, Any]:
    """The payload of a hold event (``events.schemas.HOLD_SCHEMA_V1``): the hold after it."""
    return HOLD_V1.text_row(changed.hold)


def hold_events(changed: HoldChanged) -> list[dict[str, Any]]:
    """A hold's change on ``banking.holds`` (keyed by its account), then the balance events
    of the balances it changed."""
    hold = changed.hold
    row = _row(
        topic=topics.HOLDS,
        key=hold.account_id,
        event_type=HOLD_EVENT_PREFIX + changed.change.value,
        version=HOLD_SCHEMA_VERSION,
        payload=hold_payload(changed),
        trace_id=changed.trace_id,
        at=hold.updated_at,
    )
    return [row, *(balance_row(b, trace_id=changed.trace_id) for b in changed.balances)]


EVENT_TRANSACTION_SUBMITTED: Final = "transaction.submitted"
EVENT_TRANSACTION_REJECTED: Final = "transaction.rejected"
# v3 adds the movement's metadata (JSON text); v1 and v2 stay readable (no metadata).
COMMAND_SCHEMA_VERSION: Final = 3
COMMAND_NAMES: Final = {
    TransactionType.DEBIT: "debit",
    TransactionType.CREDIT: "credit",
    TransactionType.TRANSFER_OUT: "transfer",
}


def command_payload(command: Command, *, at: datetime) -> dict[str, Any]:
    """The payload of a command event (the columns of v3), submitted at ``at``. The
    command's ``trace_id`` is not in it: it travels as the outbox row's ``trace_id`` (the
    ``traceparent`` Kafka header)."""
    request = command.request
    destination = request.destination_account_id if isinstance(request, TransferRequest) else None
    return {
        "transaction_id": str(command.transaction_id),
        "command": COMMAND_NAMES[command.kind],
        "account_id": str(_account_of(command)),
        "destination_account_id": str(destination) if destination else None,
        "amount": format_amount(request.amount),
        "currency": request.currency,
        "description": request.description,
        "reference_id": request.reference_id,
        "requested_by": {
            "user_id": str(command.actor.user_id),
            "username": command.actor.username,
            "role": command.actor.role.value,
        },
        "timestamp": at.isoformat(),
        "metadata": labels_text(request.metadata),
    }


def command_event(leg: Transaction, actor: Actor, *, trace_id: str | None) -> dict[str, Any]:
    """The command of an asynchronous movement (its pending leg), for the processor."""
    request = request_of(leg)
    command = Command(leg.transaction_id, leg.transaction_type, request, actor, trace_id)
    return _row(
        topic=topics.TRANSACTIONS_SUBMITTED,
        key=leg.account_id,
        event_type=EVENT_TRANSACTION_SUBMITTED,
        version=COMMAND_SCHEMA_VERSION,
        payload=command_payload(command, at=leg.created_at),
        trace_id=command.trace_id,
        at=leg.created_at,
    )


def rejection_event(command: Command, code: str, message: str) -> dict[str, Any]:
    """A command with no pending leg that can never succeed (unknown account, bad input...)."""
    request = command.request
    now = datetime.now(UTC)
    # The failed leg it would have been (it is never stored), by the leg's field names. Unlike
    # a stored leg's event, the JSON payload carries ``failure_reason`` (the Arrow schema has
    # no column for it and drops it).
    leg = {
        "transaction_id": command.transaction_id,
        "account_id": _account_of(command),
        "transaction_type": command.kind,
        "amount": request.amount,
        "currency": request.currency,
        "description": request.description,
        "reference_id": request.reference_id,
        "created_at": now,
        "status": TransactionStatus.FAILED,
        "related_transaction_id": None,
        "failure_code": code,
        "metadata": request.metadata,
        "reverses_transaction_id": None,
        "hold_id": None,
    }
    payload = {**TRANSACTION_V3.text_row(leg), "failure_reason": message}
    return _row(
        topic=topics.TRANSACTIONS_FAILED,
        key=_account_of(command),
        event_type=EVENT_TRANSACTION_REJECTED,
        version=TRANSACTION_SCHEMA_VERSION,
        payload=payload,
        trace_id=command.trace_id,
        at=now,
    )


def _account_of(command: Command) -> UUID:
    request = command.request
    return request.source_account_id if isinstance(request, TransferRequest) else request.account_id


EVENT_TRANSACTION_HELD: Final = "transaction.held"
EVENT_FRAUD_ALERT: Final = "fraud.alert"
EVENT_NOTIFICATION: Final = "notification.created"
HELD_SCHEMA_VERSION: Final = 1
FRAUD_SCHEMA_VERSION: Final = 1
NOTIFICATION_SCHEMA_VERSION: Final = 1


def _score_text(score: Decimal) -> str:
    return format(score.quantize(Decimal("0.0001")), "f")


def held_payload(held: CommandHeld) -> dict[str, Any]:
    """The payload of a held command (``events.schemas.HELD_SCHEMA_V1``)."""
    leg = held.leg
    return {
        "transaction_id": str(leg.transaction_id),
        "command": COMMAND_NAMES[leg.transaction_type],
        "account_id": str(leg.account_id),
        "destination_account_id": (
            str(leg.counterparty_account_id)
            if leg.transaction_type is TransactionType.TRANSFER_OUT and leg.counterparty_account_id
            else None
        ),
        "amount": format_amount(leg.amount),
        "currency": leg.currency,
        "description": leg.description,
        "reference_id": leg.reference_id,
        "hold_reason": leg.hold_reason,
        "score": _score_text(held.score),
        "reasons": ",".join(held.reasons),
        "model_version": held.model_version,
        "timestamp": leg.created_at.isoformat(),
    }


def held_event(held: CommandHeld) -> dict[str, Any]:
    """A held command on ``banking.transactions.held``, keyed by its account."""
    return _row(
        topic=topics.TRANSACTIONS_HELD,
        key=held.leg.account_id,
        event_type=EVENT_TRANSACTION_HELD,
        version=HELD_SCHEMA_VERSION,
        payload=held_payload(held),
        trace_id=held.trace_id,
        at=held.leg.created_at,
    )


def fraud_alert_payload(alert: FraudAlert) -> dict[str, Any]:
    """The payload of a fraud alert (``events.schemas.FRAUD_ALERT_SCHEMA_V1``)."""
    leg = alert.leg
    return {
        "alert_id": str(alert.alert_id),
        "transaction_id": str(leg.transaction_id),
        "account_id": str(leg.account_id),
        "transaction_type": leg.transaction_type.value,
        "status": leg.status.value,
        "amount": format_amount(leg.amount),
        "currency": leg.currency,
        "counterparty_account_id": (
            str(leg.counterparty_account_id) if leg.counterparty_account_id else None
        ),
        "score": _score_text(alert.score),
        "reasons": ",".join(alert.reasons),
        "model_version": alert.model_version,
        "decision": alert.decision,
        "timestamp": alert.created_at.isoformat(),
    }


def fraud_alert_event(alert: FraudAlert) -> dict[str, Any]:
    """A fraud alert on ``banking.fraud.alerts``, keyed by the account."""
    return _row(
        topic=topics.FRAUD_ALERTS,
        key=alert.leg.account_id,
        event_type=EVENT_FRAUD_ALERT,
        version=FRAUD_SCHEMA_VERSION,
        payload=fraud_alert_payload(alert),
        trace_id=alert.trace_id,
        at=alert.created_at,
    )


def notification_payload(notification: Notification) -> dict[str, Any]:
    """The payload of a notification (``events.schemas.NOTIFICATION_SCHEMA_V1``)."""
    n = notification
    return {
        "notification_id": str(n.notification_id),
        "user_id": str(n.user_id),
        "source_event_id": str(n.source_event_id),
        "source_event_type": n.source_event_type,
        "account_id": str(n.account_id) if n.account_id else None,
        "transaction_id": str(n.transaction_id) if n.transaction_id else None,
        "amount": format_amount(n.amount) if n.amount is not None else None,
        "currency": n.currency,
        "message": n.message,
        "timestamp": n.created_at.isoformat(),
    }


def notification_event(notification: Notification, *, trace_id: str | None) -> dict[str, Any]:
    """A notification on ``banking.notifications``, keyed by its user."""
    return _row(
        topic=topics.NOTIFICATIONS,
        key=notification.user_id,
        event_type=EVENT_NOTIFICATION,
        version=NOTIFICATION_SCHEMA_VERSION,
        payload=notification_payload(notification),
        trace_id=trace_id,
        at=notification.created_at,
    )


STAFF_ACTION_SCHEMA_VERSION: Final = 1
STAFF_EVENT_PREFIX: Final = "staff."
# Every staff action's event type: ``staff.user_created``, ``staff.account_frozen``, ...
STAFF_EVENT_TYPES: Final = tuple(STAFF_EVENT_PREFIX + action.value for action in StaffActionType)


def staff_event_type(action: StaffActionType) -> str:
    return STAFF_EVENT_PREFIX + action.value


def staff_action_payload(action: StaffAction) -> dict[str, Any]:
    """The payload of a staff action (``events.schemas.STAFF_ACTION_SCHEMA_V1``)."""
    actor = action.actor

    def text(value: UUID | None) -> str | None:
        return str(value) if value is not None else None

    return {
        "action_id": str(action.action_id),
        "action": action.action.value,
        "actor_user_id": text(actor.user_id) if actor else None,
        "actor_username": actor.username if actor else SYSTEM_ACTOR_NAME,
        "actor_role": actor.role.value if actor else None,
        "account_id": text(action.account_id),
        "user_id": text(action.user_id),
        "transaction_id": text(action.transaction_id),
        "webhook_id": text(action.webhook_id),
        "details": json.dumps(action.details or {}, separators=(",", ":"), sort_keys=True),
        "timestamp": action.created_at.isoformat(),
    }


def staff_action_event(action: StaffAction) -> dict[str, Any]:
    """A staff action on ``banking.audit.actions``, keyed by what it acted on (the account,
    else the user, the webhook or the held transaction; the action itself when none)."""
    key = (
        action.account_id
        or action.user_id
        or action.webhook_id
        or action.transaction_id
        or action.action_id
    )
    return _row(
        topic=topics.AUDIT_ACTIONS,
        key=key,
        event_type=staff_event_type(action.action),
        version=STAFF_ACTION_SCHEMA_VERSION,
        payload=staff_action_payload(action),
        trace_id=action.trace_id,
        at=action.created_at,
    )


def outbox_rows(event: LedgerEvent) -> list[dict[str, Any]]:
    """The outbox rows of one ledger event (the store writes them in the movement's unit of
    work): the one place that turns what the ledger decided into what the relay publishes."""
    if isinstance(event, LegsRecorded):
        return events_for_legs(list(event.legs), trace_id=event.trace_id, balances=event.balances)
    if isinstance(event, HoldChanged):
        return hold_events(event)
    if isinstance(event, CommandSubmitted):
        return [command_event(event.leg, event.actor, trace_id=event.trace_id)]
    if isinstance(event, CommandHeld):
        return [held_event(event)]
    if isinstance(event, FraudAlert):
        return [fraud_alert_event(event)]
    if isinstance(event, StaffAction):
        return [staff_action_event(event)]
    return [rejection_event(event.command, event.code, event.message)]
