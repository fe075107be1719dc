"""Idempotency with Stripe's semantics: the key is ``(account_id, reference_id)`` of the
initiating leg. A retry with the same parameters gets the original outcome again (declines
included); other parameters get ``IDEMPOTENCY_CONFLICT`` naming the fields that differ.
Concurrent duplicates race on the store's unique key: exactly one commits, the others replay it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from banking.domain.errors import (
    IdempotencyConflict,
    InvariantViolated,
    ReferenceAlreadyUsed,
    error_for_failure,
)
from banking.domain.records import MovementResult, Transaction, TransactionStatus
from banking.ledger.checks import CheckedMovement
from banking.ledger.ports import LedgerStore, UnitOfWork


async def run_once(
    unit_of_work: UnitOfWork,
    checked: CheckedMovement,
    work: Callable[[LedgerStore], Awaitable[Transaction]],
) -> MovementResult:
    """Run a movement's unit of work; when its key is taken, the stored leg instead."""
    try:
        return MovementResult(await unit_of_work.run(work), replayed=False)
    except ReferenceAlreadyUsed:
        return MovementResult(await replay(unit_of_work, checked), replayed=True)


async def replay(unit_of_work: UnitOfWork, checked: CheckedMovement) -> Transaction:
    """The leg that holds the key of ``checked``, if it was made from the same parameters."""
    async with unit_of_work.read() as store:
        return await matching_leg(store, checked)


async def matching_leg(store: LedgerStore, checked: CheckedMovement) -> Transaction:
    """``replay`` on an open view of the books (a group's own unit of work)."""
    found = await store.find_initiating_leg(checked.account_id, checked.reference_id)
    if found is None:
        raise InvariantViolated("the idempotency key is taken but no leg holds it")
    leg, fingerprint = found
    if fingerprint != checked.fingerprint:
        differing = differing_fields(leg, checked)
        verb = "differs" if len(differing) == 1 else "differ"
        raise IdempotencyConflict(
            "reference_id was already used with different parameters"
            + (f": {', '.join(differing)} {verb}" if differing else ""),
            transaction_id=leg.transaction_id,
            fields=differing,
        )
    return leg


def differing_fields(leg: Transaction, checked: CheckedMovement) -> list[str]:
    """The request fields in which ``checked`` differs from the leg that holds its key."""
    compared = {
        "transaction_type": (leg.transaction_type, checked.kind),
        "account_id": (leg.account_id, checked.account_id),
        "destination_account_id": (leg.counterparty_account_id, checked.counterparty_id),
        "amount": (leg.amount, checked.amount),
        "currency": (leg.currency, checked.currency),
        "description": (leg.description or None, checked.description or None),
        "metadata": (dict(leg.metadata), dict(checked.metadata)),
    }
    return [name for name, (stored, asked) in compared.items() if stored != asked]


def outcome(result: MovementResult) -> MovementResult:
    """A completed (or pending) leg is the result; a failed one is raised as its error,
    replay or not, so a retry answers exactly as the first request did."""
    leg = result.transaction
    if leg.status is not TransactionStatus.FAILED:
        return result
    error = error_for_failure(
        leg.failure_code, leg.failure_reason, transaction_id=leg.transaction_id
    )
    error.replayed = result.replayed
    raise error
