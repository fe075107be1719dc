"""Reading a command event (``banking.transactions.submitted``) back into a ``Command``."""

from __future__ import annotations

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
        request: DebitOrCredit | TransferRequest
        if kind is TransactionType.TRANSFER_OUT:
            request = TransferRequest(
                UUID(payload["account_id"]),
                UUID(payload["destination_account_id"]),
                amount,
                str(payload["currency"]),
                description,
                reference_id,
            )
        else:
            request = DebitOrCredit(
                UUID(payload["account_id"]),
                amount,
                str(payload["currency"]),
                description,
                reference_id,
            )
        return Command(UUID(payload["transaction_id"]), kind, request, actor, trace_id)
    except (KeyError, TypeError, ValueError, AttributeError, ValidationFailed) as error:
        raise MalformedCommand(f"not a valid command: {error}") from error
