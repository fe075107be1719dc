"""Reversals: a movement that undoes all or part of a completed one (issue 15, item 2).

A reversal is a movement in the opposite direction on the original's account(s), decided by
the same decisions as any movement (``decisions``: the conditional debit, the overdraft limit,
the balance limit) in one unit of work, each of its legs pointing at the original's
initiating leg (``reverses_transaction_id``; a transfer's out-leg):

- of a debit: a credit of the amount to the same account;
- of a credit: a debit of it, which may decline ``INSUFFICIENT_FUNDS`` (a failed leg, like any
  declined debit, that counts nothing toward the cap);
- of a transfer (named by either of its legs): a transfer from its destination back to its
  source.

**The cap.** ``reversed_amount`` on the original's initiating leg is raised in the reversal's
unit of work by a conditional update (``reversed_amount + x <= amount``, and a CHECK of the
same), so the reversals of a movement never exceed it in total however many race; a reversal
the cap refuses (422 ``VALIDATION_ERROR``, field ``amount``, naming what is left) stores
nothing, and a declined one keeps no increment.

**Lock order** (no deadlock with any movement): first the balance rows of the reversal's
accounts in account-id order, as every movement, transfer and group locks them; then the
original's row (read ``FOR UPDATE``, then the conditional update). Movements lock balance rows
only, in that same order, so they cannot wait in a cycle with a reversal; two reversals of one
original have the same accounts, so they queue on the balances before either touches the
original's row. The idempotency key is looked up after the balance locks, so a concurrent
duplicate finds the first one's committed leg and replays it.

**Who may** (here, not in the doors): tellers and admins reverse anything; a customer only a
transfer into their own account (a refund of money they received); auditors nothing. Another
customer's movement is not found (404), as in ``MovementService.get_transaction``; a customer's
own debit, credit or outgoing transfer is forbidden (403).

**Idempotent** like every movement: the key is the reversal's ``reference_id`` on the account
of its initiating leg; the fingerprint is the original (its initiating leg), the amount asked
for (none: "what is left") and the reason. Only completed movements that are not reversals
themselves can be reversed (409 ``TRANSACTION_NOT_REVERSIBLE``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Final
from uuid import UUID

from banking.domain.errors import (
    AccountNotFound,
    Forbidden,
    IdempotencyConflict,
    InvariantViolated,
    ReferenceAlreadyUsed,
    TransactionNotFound,
    TransactionNotReversible,
    ValidationFailed,
)
from banking.domain.money import check_amount_for_currency, format_amount, parse_amount
from banking.domain.records import (
    MovementResult,
    ReversalRequest,
    Reversals,
    Transaction,
    TransactionStatus,
    TransactionType,
)
from banking.domain.roles import Actor, Role
from banking.ledger.access import require_moves_money, require_visible
from banking.ledger.checks import (
    DESCRIPTION_LENGTH_MAX,
    CheckedMovement,
    checked_description,
    checked_reference,
)
from banking.ledger.decisions import DECISIONS
from banking.ledger.idempotency import outcome
from banking.ledger.ports import LedgerStore, UnitOfWork

# The reason is the reversal's description (what its statement line says).
REASON_LENGTH_MAX: Final = DESCRIPTION_LENGTH_MAX
# The most reversal legs ``reversals_of`` lists (the amount reversed is always the total).
REVERSALS_SHOWN_MAX: Final = 100
_ZERO: Final = Decimal("0.00")
# The movement that reverses each kind of initiating leg.
_REVERSING_KIND: Final = {
    TransactionType.DEBIT: TransactionType.CREDIT,
    TransactionType.CREDIT: TransactionType.DEBIT,
    TransactionType.TRANSFER_OUT: TransactionType.TRANSFER_OUT,
}


@dataclass(frozen=True, slots=True)
class CheckedReversal:
    """A reversal request after the checks that need no books."""

    transaction_id: UUID
    amount: Decimal | None  # None: what is left
    reason: str
    reference_id: str


@dataclass(frozen=True, slots=True)
class ReversalPlan:
    """What reverses ``original``: a movement of ``kind`` from ``account_id`` (to
    ``counterparty_id`` for a transfer back), in the original's currency."""

    original: Transaction
    kind: TransactionType
    account_id: UUID
    counterparty_id: UUID | None

    @property
    def account_ids(self) -> list[UUID]:
        """The reversal's accounts, in the one lock order."""
        ids = {self.account_id} | ({self.counterparty_id} if self.counterparty_id else set())
        return sorted(ids)


def check_reversal(request: ReversalRequest) -> CheckedReversal:
    """Validate what needs no books: the reason (1 to 500 printable characters), the amount
    if one is given (above zero, below 10^16; the currency's digits are checked once the
    original is read) and the idempotency key."""
    if not request.reason:
        raise ValidationFailed("reason is required", field="reason")
    reason = checked_description(request.reason, "reason") or ""
    amount = None if request.amount is None else parse_amount(request.amount)
    return CheckedReversal(
        request.transaction_id, amount, reason, checked_reference(request.reference_id)
    )


def plan_reversal(original: Transaction) -> ReversalPlan:
    """The movement that reverses a completed initiating leg (pure)."""
    kind = _REVERSING_KIND.get(original.transaction_type)
    if kind is None:
        raise InvariantViolated(f"{original.transaction_type.value} is not an initiating leg")
    if kind is TransactionType.TRANSFER_OUT:
        if original.counterparty_account_id is None:
            raise InvariantViolated("a transfer leg has its destination account")
        return ReversalPlan(original, kind, original.counterparty_account_id, original.account_id)
    return ReversalPlan(original, kind, original.account_id, None)


def require_reversible(original: Transaction) -> None:
    """Only a completed movement that is not itself a reversal (409 otherwise)."""
    if original.reverses_transaction_id is not None:
        raise TransactionNotReversible(
            "a reversal cannot be reversed", transaction_id=original.transaction_id
        )
    if original.status is not TransactionStatus.COMPLETED:
        raise TransactionNotReversible(
            f"only a completed movement can be reversed; this one is {original.status.value}",
            transaction_id=original.transaction_id,
        )


def require_may_reverse(
    actor: Actor, original: Transaction, destination_owner: UUID | None
) -> None:
    """Tellers and admins reverse anything; a customer only a transfer into their own
    account (``destination_owner``: who holds the transfer's destination)."""
    require_moves_money(actor)
    if actor.moves_any_account:
        return
    if actor.role is Role.CUSTOMER and (
        original.transaction_type is TransactionType.TRANSFER_OUT
        and destination_owner == actor.user_id
    ):
        return
    raise Forbidden(
        "a customer may reverse only a transfer into their own account; reversing a debit, "
        "a credit or an outgoing transfer needs the teller or admin role"
    )


def amount_to_reverse(
    asked: Decimal | None, original: Transaction, reversed_amount: Decimal
) -> Decimal:
    """The amount a reversal takes: the one asked for, or what is left; refused (422, field
    ``amount``) above what is left or with more digits than the currency has."""
    left = original.amount - reversed_amount
    if left <= 0:
        raise ValidationFailed(
            f"nothing is left to reverse: {format_amount(reversed_amount)} of "
            f"{format_amount(original.amount)} is reversed already",
            field="amount",
        )
    if asked is None:
        return left
    amount = check_amount_for_currency(asked, original.currency)
    if amount > left:
        raise ValidationFailed(
            f"amount is more than what is left to reverse ({format_amount(left)} of "
            f"{format_amount(original.amount)})",
            field="amount",
        )
    return amount


def fingerprint_of(original_id: UUID, asked: CheckedReversal) -> str:
    """What a reversal's idempotency key is compared on: the original, the amount asked
    for (empty: what is left) and the reason."""
    parts = [
        "reversal",
        str(original_id),
        "" if asked.amount is None else format_amount(asked.amount),
        asked.reason,
    ]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


async def reverse(
    unit_of_work: UnitOfWork,
    actor: Actor,
    request: ReversalRequest,
    *,
    trace_id: str | None,
) -> MovementResult:
    """Reverse all or part of a completed movement: the reversal's initiating leg (a decline
    is raised as its error, naming the failed leg), or its stored outcome for a key used
    before (``replayed``)."""
    require_moves_money(actor)
    asked = check_reversal(request)

    async def work(store: LedgerStore) -> MovementResult:
        plan = await _plan(store, actor, asked.transaction_id)
        original = plan.original
        fingerprint = fingerprint_of(original.transaction_id, asked)
        await store.lock_balances(plan.account_ids)
        held = await store.find_initiating_leg(plan.account_id, asked.reference_id)
        if held is not None:
            return MovementResult(_replayed(held, fingerprint, original, asked), replayed=True)
        reversed_amount = await store.get_reversed_amount(original.transaction_id, for_update=True)
        if reversed_amount is None:
            raise InvariantViolated(f"leg {original.transaction_id} is gone")
        amount = amount_to_reverse(asked.amount, original, reversed_amount)
        checked = CheckedMovement(
            kind=plan.kind,
            account_id=plan.account_id,
            counterparty_id=plan.counterparty_id,
            amount=amount,
            currency=original.currency,
            description=asked.reason,
            reference_id=asked.reference_id,
            fingerprint=fingerprint,
            reverses_transaction_id=original.transaction_id,
        )
        leg = await DECISIONS[plan.kind](store, actor, checked, None, trace_id)
        if leg.status is TransactionStatus.COMPLETED:
            total = await store.add_reversed_amount(original.transaction_id, amount)
            if total is None:  # the conditional update has the cap's last word
                raise ValidationFailed(
                    "amount is more than what is left to reverse", field="amount"
                )
        return MovementResult(leg, replayed=False)

    try:
        result = await unit_of_work.run(work)
    except ReferenceAlreadyUsed:
        # A concurrent request took the key between the lookup and the insert (an
        # asynchronous command's pending leg takes no balance lock): its outcome, read now.
        result = await unit_of_work.run(work)
    return outcome(result)


async def reversals_of(
    unit_of_work: UnitOfWork, actor: Actor, transaction_id: UUID
) -> tuple[Transaction, Reversals]:
    """A leg as the actor may see it, with what has been reversed of its movement: the
    amount (the total, from the initiating leg) and the completed reversal legs on the same
    account, oldest first (at most ``REVERSALS_SHOWN_MAX``)."""

    async def read(store: LedgerStore) -> tuple[Transaction, Reversals]:
        leg = await _visible_leg(store, actor, transaction_id)
        initiating_id = leg.transaction_id
        if leg.transaction_type is TransactionType.TRANSFER_IN:
            if leg.related_transaction_id is None:
                raise InvariantViolated("a transfer's in-leg has its out-leg")
            initiating_id = leg.related_transaction_id
        reversed_amount = await store.get_reversed_amount(initiating_id)
        legs = await store.reversal_legs(
            initiating_id, account_id=leg.account_id, limit=REVERSALS_SHOWN_MAX
        )
        ids = tuple(reversal.transaction_id for reversal in legs)
        return leg, Reversals(reversed_amount or _ZERO, ids)

    return await unit_of_work.read_may_lag(actor.user_id, read)


async def _visible_leg(store: LedgerStore, actor: Actor, transaction_id: UUID) -> Transaction:
    leg = await store.get_transaction(transaction_id)
    if leg is None:
        raise TransactionNotFound("transaction not found")
    try:
        require_visible(actor, await store.get_account(leg.account_id))
    except AccountNotFound as error:
        raise TransactionNotFound("transaction not found") from error
    return leg


async def _plan(store: LedgerStore, actor: Actor, transaction_id: UUID) -> ReversalPlan:
    """The reversal of the movement ``transaction_id`` names (either leg of a transfer), once
    the actor may see it, may reverse it, and it is reversible."""
    leg = await _visible_leg(store, actor, transaction_id)
    original = leg
    if leg.transaction_type is TransactionType.TRANSFER_IN:
        related = leg.related_transaction_id
        found = await store.get_transaction(related) if related else None
        if found is None:
            raise InvariantViolated(f"transfer leg {leg.transaction_id} has no out-leg")
        original = found
    destination_owner = None
    if (
        original.transaction_type is TransactionType.TRANSFER_OUT
        and original.counterparty_account_id
    ):
        destination = await store.get_account(original.counterparty_account_id)
        destination_owner = destination.customer_id if destination else None
    require_may_reverse(actor, original, destination_owner)
    require_reversible(original)
    return plan_reversal(original)


def _replayed(
    held: tuple[Transaction, str], fingerprint: str, original: Transaction, asked: CheckedReversal
) -> Transaction:
    """The leg that holds the key, if it was made by the same reversal request."""
    leg, stored = held
    if stored == fingerprint:
        return leg
    differing = [
        name
        for name, differs in (
            ("transaction_id", leg.reverses_transaction_id != original.transaction_id),
            ("reason", leg.description != asked.reason),
        )
        if differs
    ] or ["amount"]
    verb = "differs" if len(differing) == 1 else "differ"
    raise IdempotencyConflict(
        f"reference_id was already used with different parameters: {', '.join(differing)} {verb}",
        transaction_id=leg.transaction_id,
        fields=differing,
    )
