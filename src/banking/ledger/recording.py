"""How a decided movement is written down: its legs, their journal entries and their events.

Building the records is pure; ``record`` hands them to the store, inside the movement's unit
of work, so legs, journal and outbox commit or roll back together.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from banking.domain.clock import utc_now
from banking.domain.errors import InvariantViolated
from banking.domain.money import format_amount
from banking.domain.records import (
    Balance,
    BalanceAfter,
    JournalEntry,
    LegsRecorded,
    Transaction,
    TransactionStatus,
    TransactionType,
)
from banking.domain.roles import Actor
from banking.ledger.checks import DESCRIPTION_LENGTH_MAX, CheckedMovement
from banking.ledger.ports import LedgerStore


def new_leg(
    checked: CheckedMovement,
    *,
    status: TransactionStatus,
    created_at: datetime,
    transaction_id: UUID,
    balance_after: BalanceAfter | None = None,
    failure: tuple[str, str] | None = None,
) -> Transaction:
    """The initiating leg of a movement, as the request describes it."""
    return Transaction(
        transaction_id=transaction_id,
        account_id=checked.account_id,
        transaction_type=checked.kind,
        amount=checked.amount,
        currency=checked.currency,
        description=checked.description,
        reference_id=checked.reference_id,
        status=status,
        created_at=created_at,
        related_transaction_id=None,
        counterparty_account_id=checked.counterparty_id,
        failure_code=failure[0] if failure else None,
        failure_reason=failure[1] if failure else None,
        available_balance_after=balance_after.available_balance if balance_after else None,
        balance_version_after=balance_after.version if balance_after else None,
        metadata=checked.metadata,
        reverses_transaction_id=checked.reverses_transaction_id,
    )


def pending_leg(checked: CheckedMovement) -> Transaction:
    """The leg of an accepted asynchronous command, before it is applied."""
    return new_leg(
        checked, status=TransactionStatus.PENDING, created_at=utc_now(), transaction_id=uuid4()
    )


def transfer_legs(
    first: Transaction, at: datetime, source_after: BalanceAfter, destination_after: BalanceAfter
) -> tuple[Transaction, Transaction]:
    """The two completed legs of a transfer, pointing at each other. ``first`` is the
    out-leg as it would be stored (its id and creation time are kept)."""
    if first.counterparty_account_id is None:
        raise InvariantViolated("a transfer needs a destination")
    in_id = uuid4()
    out_leg = replace(
        first,
        status=TransactionStatus.COMPLETED,
        related_transaction_id=in_id,
        available_balance_after=source_after.available_balance,
        balance_version_after=source_after.version,
    )
    in_leg = replace(
        first,
        transaction_id=in_id,
        account_id=first.counterparty_account_id,
        transaction_type=TransactionType.TRANSFER_IN,
        status=TransactionStatus.COMPLETED,
        created_at=at,
        related_transaction_id=first.transaction_id,
        counterparty_account_id=first.account_id,
        available_balance_after=destination_after.available_balance,
        balance_version_after=destination_after.version,
    )
    return out_leg, in_leg


def failed(leg: Transaction, code: str, reason: str) -> Transaction:
    """``leg`` finished as failed with ``code`` (a decline reason or a rejection's code)."""
    return replace(
        leg,
        status=TransactionStatus.FAILED,
        failure_code=code,
        failure_reason=reason[:DESCRIPTION_LENGTH_MAX],
    )


def journal_entry(leg: Transaction, actor: Actor, trace_id: str | None) -> JournalEntry:
    metadata: dict[str, Any] = {"amount": format_amount(leg.amount), "trace_id": trace_id}
    if leg.available_balance_after is not None:
        metadata["available_balance_after"] = format_amount(leg.available_balance_after)
    if leg.failure_code is not None:
        metadata["failure_code"] = leg.failure_code
        metadata["failure_reason"] = leg.failure_reason
    if leg.reverses_transaction_id is not None:
        metadata["reverses_transaction_id"] = str(leg.reverses_transaction_id)
    return JournalEntry(
        log_id=uuid4(),
        transaction_id=leg.transaction_id,
        event_type=leg.status.value,
        metadata=metadata,
        created_at=leg.created_at,
        created_by=actor.username,
    )


def balances_after(
    pairs: Iterable[tuple[Transaction, BalanceAfter | None]],
) -> tuple[Balance, ...]:
    """The balances of completed legs' accounts right after them, where the balance update
    read the current balance too (``BalanceAfter.current_balance``): what their balance
    events carry, since current and available differ while a hold is open."""
    return tuple(
        Balance(
            account_id=leg.account_id,
            currency=leg.currency,
            current_balance=after.current_balance,
            available_balance=after.available_balance,
            version=after.version,
            last_updated=leg.created_at,
        )
        for leg, after in pairs
        if leg.status is TransactionStatus.COMPLETED
        and after is not None
        and after.current_balance is not None
    )


async def record(
    store: LedgerStore,
    actor: Actor,
    checked: CheckedMovement,
    legs: list[Transaction],
    *,
    pending: Transaction | None,
    trace_id: str | None,
    balances: Sequence[Balance] = (),
) -> None:
    """Store the finished legs of a movement (the pending leg of an async command is finished
    in place), their journal entries and their events (``balances``: the balances after them,
    when the legs alone cannot tell, see ``LegsRecorded``)."""
    new_legs = [
        leg for leg in legs if pending is None or leg.transaction_id != pending.transaction_id
    ]
    if pending is not None:
        finished = [leg for leg in legs if leg.transaction_id == pending.transaction_id]
        if not finished:
            raise InvariantViolated("the pending leg is not among the legs to store")
        if not await store.finish_pending_leg(finished[0]):
            raise InvariantViolated(f"leg {pending.transaction_id} is no longer pending")
    if new_legs:
        await store.insert_legs(new_legs, fingerprint=checked.fingerprint, created_by=actor.user_id)
    await store.add_journal([journal_entry(leg, actor, trace_id) for leg in legs])
    await store.add_events([LegsRecorded(tuple(legs), trace_id, tuple(balances))])
