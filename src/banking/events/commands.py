"""Reading a command event (``banking.transactions.submitted``) back into a ``Command``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from banking.domain.errors import ValidationFailed
from banking.domain.money import parse_amount
from banking.domain.records import Command, DebitOrCredit, TransactionType, TransferRequest
from banking.domain.roles import Actor, Role

_KINDS = {
    "debit": TransactionType.DEBIT,
    "credit": TransactionType.CREDIT,
    "transfer": TransactionType.TRANSFER_OUT,
}


class MalformedCommand(ValueError):
    """The message is not a command this service can read: it goes to the permanent DLQ."""


def command_from_payload(payload: dict[str, Any], *, trace_id: str | None) -> Command:
    """Build a command; amounts are parsed from their decimal text. Raises MalformedCommand."""
    try:
        kind = _KINDS[payload["command"]]
        requested_by = payload["requested_by"]
        actor = Actor(
            user_id=UUID(requested_by["user_id"]),
            username=str(requested_by["username"]),
            role=Role(requested_by["role"]),
        )
        amount = parse_amount(str(payload["amount"]))
        description = payload.get("description")
        reference_id = payload.get("reference_id")
        metadata = _metadata(payload.get("metadata"))
        request: DebitOrCredit | TransferRequest
        if kind is TransactionType.TRANSFER_OUT:
            request = TransferRequest(
                UUID(payload["account_id"]),
                UUID(payload["destination_account_id"]),
                amount,
                str(payload["currency"]),
                description,
                reference_id,
                metadata,
            )
        else:
            request = DebitOrCredit(
                UUID(payload["account_id"]),
                amount,
                str(payload["currency"]),
                description,
                reference_id,
                metadata,
            )
        return Command(UUID(payload["transaction_id"]), kind, request, actor, trace_id)
    except (KeyError, TypeError, ValueError, AttributeError, ValidationFailed) as error:
        raise MalformedCommand(f"not a valid command: {error}") from error


def _metadata(value: object) -> dict[str, str]:
    """A command's metadata: JSON text in v3 (an object in a JSON payload is read too); none
    in v1 and v2. Its rules are the core's (``ledger.metadata``), checked when applied."""
    if value is None:
        return {}
    loaded = json.loads(value) if isinstance(value, str) else value
    if not isinstance(loaded, Mapping):
        raise ValueError("metadata must be a JSON object")
    return {str(key): item for key, item in loaded.items()}
