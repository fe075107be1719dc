"""The checks every movement passes before it touches the books, and its fingerprint.

Pure: no store, no I/O. A request that fails here changes nothing anywhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from uuid import UUID, uuid4

from banking.domain.errors import InvariantViolated, ValidationFailed
from banking.domain.money import (
    check_amount_for_currency,
    format_amount,
    normalize_currency,
    parse_amount,
)
from banking.domain.records import DebitOrCredit, TransactionType, TransferRequest
from banking.domain.roles import Actor
from banking.ledger.access import require_can_credit, require_moves_money
from banking.ledger.metadata import canonical_metadata, check_metadata

REFERENCE_ID_LENGTH_MAX = 255
DESCRIPTION_LENGTH_MAX = 500


@dataclass(frozen=True, slots=True)
class CheckedMovement:
    """A request after validation: what the fingerprint and the legs are made from."""

    kind: TransactionType
    account_id: UUID
    counterparty_id: UUID | None
    amount: Decimal
    currency: str
    description: str | None
    reference_id: str
    # What the idempotency key is compared on: same key, other fingerprint is a conflict.
    fingerprint: str
    # Set for a command applied asynchronously: the id of its pending leg.
    transaction_id: UUID | None = None
    # The caller's labels, validated and sorted by key (empty: none); on every leg.
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)
    # Set for a reversal: the initiating leg it reverses (``ledger.reversals``).
    reverses_transaction_id: UUID | None = None


def check_movement(
    kind: TransactionType, request: DebitOrCredit | TransferRequest
) -> CheckedMovement:
    """Validate a debit, credit (``DebitOrCredit``) or transfer (``TransferRequest``)."""
    if kind is TransactionType.TRANSFER_OUT:
        if not isinstance(request, TransferRequest):
            raise InvariantViolated("a transfer needs a TransferRequest")
        if request.source_account_id == request.destination_account_id:
            raise ValidationFailed(
                "source and destination accounts must be different",
                field="destination_account_id",
            )
        return _checked(kind, request.source_account_id, request.destination_account_id, request)
    if not isinstance(request, DebitOrCredit) or kind not in (
        TransactionType.DEBIT,
        TransactionType.CREDIT,
    ):
        raise InvariantViolated(f"no movement {kind.value} for {type(request).__name__}")
    return _checked(kind, request.account_id, None, request)


def require_may_move(actor: Actor, kind: TransactionType) -> None:
    """The role check that comes before anything else: credits need staff, and auditors
    move nothing."""
    if kind is TransactionType.CREDIT:
        require_can_credit(actor)
    else:
        require_moves_money(actor)


def _checked(
    kind: TransactionType,
    account_id: UUID,
    counterparty_id: UUID | None,
    request: DebitOrCredit | TransferRequest,
) -> CheckedMovement:
    currency = normalize_currency(request.currency)
    # Parsed again here, not only at the doors: the core refuses what no door would send.
    amount = check_amount_for_currency(parse_amount(request.amount), currency)
    description = checked_description(request.description)
    reference_id = checked_reference(request.reference_id)
    metadata = check_metadata(request.metadata)
    compared = [
        kind.value,
        str(account_id),
        str(counterparty_id or ""),
        format_amount(amount),
        currency,
        description or "",
    ]
    if metadata:
        # Only when there is some: a movement without metadata keeps the fingerprint it had
        # before metadata existed, so its key still replays.
        compared.append(canonical_metadata(metadata))
    fingerprint = hashlib.sha256("\x1f".join(compared).encode()).hexdigest()
    return CheckedMovement(
        kind,
        account_id,
        counterparty_id,
        amount,
        currency,
        description,
        reference_id,
        fingerprint,
        metadata=metadata,
    )


def checked_description(description: str | None, field: str = "description") -> str | None:
    """A movement's description rule (also a hold's description and a reversal's reason,
    under its own ``field``)."""
    if description is None:
        return None
    if len(description) > DESCRIPTION_LENGTH_MAX:
        raise ValidationFailed(
            f"{field} is longer than {DESCRIPTION_LENGTH_MAX} characters", field=field
        )
    if not description.isprintable():
        raise ValidationFailed(f"{field} must not contain control characters", field=field)
    return description


def checked_reference(reference_id: str | None) -> str:
    """An idempotency key as every movement's is checked; one of its own when absent (also
    for reversals, holds and captures)."""
    if reference_id is None:
        return f"auto-{uuid4()}"
    if (
        not reference_id
        or len(reference_id) > REFERENCE_ID_LENGTH_MAX
        or not reference_id.isprintable()
    ):
        raise ValidationFailed(
            f"reference_id must be 1 to {REFERENCE_ID_LENGTH_MAX} printable characters",
            field="reference_id",
        )
    return reference_id
