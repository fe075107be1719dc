"""Outbox rows: the events of a money movement, written in the same database transaction.

Payloads are JSON text with amounts as decimal strings; the relay (a later component) turns
them into the Arrow or JSON wire format. Event types and schema versions are fixed here.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID, uuid4

from banking.domain.errors import InvariantViolated
from banking.domain.money import format_amount
from banking.domain.records import (
    Command,
    Transaction,
    TransactionStatus,
    TransactionType,
    TransferRequest,
)
from banking.domain.roles import Actor
from banking.events import topics

TRANSACTION_SCHEMA_VERSION: Final = 1
BALANCE_SCHEMA_VERSION: Final = 1
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


def transaction_event(leg: Transaction, *, trace_id: str | None) -> dict[str, Any]:
    """The completed/failed event of one leg, keyed by its account."""
    completed = leg.status is TransactionStatus.COMPLETED
    payload = {
        "transaction_id": str(leg.transaction_id),
        "account_id": str(leg.account_id),
        "transaction_type": leg.transaction_type.value,
        "amount": format_amount(leg.amount),
        "currency": leg.currency,
        "description": leg.description,
        "reference_id": leg.reference_id,
        "timestamp": leg.created_at.isoformat(),
        "status": leg.status.value,
        "related_transaction_id": (
            str(leg.related_transaction_id) if leg.related_transaction_id else None
        ),
        "failure_code": leg.failure_code,
    }
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
    """The balance after a completed leg. No holds exist yet, so current equals available."""
    if leg.available_balance_after is None or leg.balance_version_after is None:
        raise InvariantViolated("a balance event needs the balance after the leg")
    payload = {
        "account_id": str(leg.account_id),
        "current_balance": format_amount(leg.available_balance_after),
        "available_balance": format_amount(leg.available_balance_after),
        "currency": leg.currency,
        "version": leg.balance_version_after,
        "timestamp": leg.created_at.isoformat(),
    }
    return _row(
        topic=topics.ACCOUNT_BALANCES,
        key=leg.account_id,
        event_type=EVENT_BALANCE_UPDATED,
        version=BALANCE_SCHEMA_VERSION,
        payload=payload,
        trace_id=trace_id,
        at=leg.created_at,
    )


def events_for_legs(legs: list[Transaction], *, trace_id: str | None) -> list[dict[str, Any]]:
    """Every event of a movement, in order: per leg its transaction event, then its balance."""
    rows: list[dict[str, Any]] = []
    for leg in legs:
        rows.append(transaction_event(leg, trace_id=trace_id))
        if leg.status is TransactionStatus.COMPLETED:
            rows.append(balance_event(leg, trace_id=trace_id))
    return rows


EVENT_TRANSACTION_SUBMITTED: Final = "transaction.submitted"
EVENT_TRANSACTION_REJECTED: Final = "transaction.rejected"
COMMAND_SCHEMA_VERSION: Final = 1
COMMAND_NAMES: Final = {
    TransactionType.DEBIT: "debit",
    TransactionType.CREDIT: "credit",
    TransactionType.TRANSFER_OUT: "transfer",
}


def command_event(leg: Transaction, actor: Actor, *, trace_id: str | None) -> dict[str, Any]:
    """The command of an asynchronous movement, for the transaction processor."""
    payload = {
        "transaction_id": str(leg.transaction_id),
        "command": COMMAND_NAMES[leg.transaction_type],
        "account_id": str(leg.account_id),
        "destination_account_id": (
            str(leg.counterparty_account_id) if leg.counterparty_account_id else None
        ),
        "amount": format_amount(leg.amount),
        "currency": leg.currency,
        "description": leg.description,
        "reference_id": leg.reference_id,
        "requested_by": {
            "user_id": str(actor.user_id),
            "username": actor.username,
            "role": actor.role.value,
        },
        "timestamp": leg.created_at.isoformat(),
    }
    return _row(
        topic=topics.TRANSACTIONS_SUBMITTED,
        key=leg.account_id,
        event_type=EVENT_TRANSACTION_SUBMITTED,
        version=COMMAND_SCHEMA_VERSION,
        payload=payload,
        trace_id=trace_id,
        at=leg.created_at,
    )


def rejection_event(command: Command, code: str, message: str) -> dict[str, Any]:
    """A command with no pending leg that can never succeed (unknown account, bad input...)."""
    request = command.request
    now = datetime.now(UTC)
    payload = {
        "transaction_id": str(command.transaction_id),
        "account_id": str(_account_of(command)),
        "transaction_type": command.kind.value,
        "amount": format_amount(request.amount),
        "currency": request.currency,
        "description": request.description,
        "reference_id": request.reference_id,
        "timestamp": now.isoformat(),
        "status": "failed",
        "related_transaction_id": None,
        "failure_code": code,
        "failure_reason": message,
    }
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
