"""Where a debit, credit or transfer is decided: applied, declined, or refused.

Each decision runs inside one unit of work on a ``LedgerStore`` and returns the initiating leg
as stored. The rules (DESIGN.md section 4):

- the account exists and the actor may act on it (another customer's account is not found);
- the currency is the account's;
- an inactive account declines (``ACCOUNT_INACTIVE``, stored as a failed leg);
- a debit or transfer takes money only if that much is available, down to minus the
  account's overdraft limit: the store's conditional update decides, so no concurrency can
  overdraw (``INSUFFICIENT_FUNDS``, a failed leg);
- a transfer locks both balances in account-id order first, and moves money, never makes it;
- a balance never reaches 10^16 (refused as a validation error; nothing is stored);
- a decline is recorded while its account's balance row is locked, like a movement that
  applies: every leg of an account, failed or not, is created, journaled and put in the
  outbox in the account's commit order (the order its events are published in).

Shared by the synchronous path and the asynchronous command processor: ``pending`` is the
command's pending leg, finished in place. ``precheck`` is the part that needs only the accounts
and the actor; the PostgreSQL store's group call (``banking.storage.pg_movements``) runs it
too, and leaves the rest to a server-side function held to these decisions by tests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import NoReturn
from uuid import UUID, uuid4

from banking.domain.clock import utc_now
from banking.domain.errors import (
    AccountNotFound,
    DeclineReason,
    InvariantViolated,
    ReferenceAlreadyUsed,
    ValidationFailed,
)
from banking.domain.money import require_same_currency
from banking.domain.records import (
    Account,
    BalanceAfter,
    Transaction,
    TransactionStatus,
    TransactionType,
)
from banking.domain.roles import Actor
from banking.ledger.access import require_can_credit, require_can_debit, require_visible
from banking.ledger.checks import CheckedMovement
from banking.ledger.ports import LedgerStore
from banking.ledger.recording import balances_after, new_leg, record, transfer_legs

BALANCE_LIMIT_REASON = "the resulting balance would exceed the ledger's limit of 10^16"
INSUFFICIENT_FUNDS_REASON = "insufficient funds"

# A decline decided before the balances are touched (an inactive account): its code and reason.
Decline = tuple[DeclineReason, str]

Decide = Callable[
    [LedgerStore, Actor, CheckedMovement, Transaction | None, str | None], Awaitable[Transaction]
]


async def decide_debit(
    store: LedgerStore,
    actor: Actor,
    checked: CheckedMovement,
    pending: Transaction | None,
    trace_id: str | None,
) -> Transaction:
    decline = precheck(actor, checked, _by_id([await store.get_account(checked.account_id)]))
    balance_after = None
    if decline is None:
        balance_after = await store.apply_debit(checked.account_id, checked.amount, utc_now())
        if balance_after is None:
            decline = (DeclineReason.INSUFFICIENT_FUNDS, INSUFFICIENT_FUNDS_REASON)
    if decline is not None:
        await store.lock_balances([checked.account_id])
    return await _record_single(store, actor, checked, balance_after, decline, pending, trace_id)


async def decide_credit(
    store: LedgerStore,
    actor: Actor,
    checked: CheckedMovement,
    pending: Transaction | None,
    trace_id: str | None,
) -> Transaction:
    require_can_credit(actor)
    decline = precheck(actor, checked, _by_id([await store.get_account(checked.account_id)]))
    balance_after = None
    if decline is None:
        balance_after = await store.apply_credit(checked.account_id, checked.amount, utc_now())
        if balance_after is None:
            await _refuse_over_limit(store, checked, pending)
    else:
        await store.lock_balances([checked.account_id])
    return await _record_single(store, actor, checked, balance_after, decline, pending, trace_id)


async def decide_transfer(
    store: LedgerStore,
    actor: Actor,
    checked: CheckedMovement,
    pending: Transaction | None,
    trace_id: str | None,
) -> Transaction:
    destination_id = checked.counterparty_id
    if destination_id is None:
        raise InvariantViolated("a transfer needs a destination")
    found = _by_id(await store.get_accounts([checked.account_id, destination_id]))
    decline = precheck(actor, checked, found)
    await store.lock_balances([checked.account_id, destination_id])
    if decline is not None:
        return await _record_single(store, actor, checked, None, decline, pending, trace_id)
    now = utc_now()
    source_after = await store.apply_debit(checked.account_id, checked.amount, now)
    if source_after is None:
        decline = (DeclineReason.INSUFFICIENT_FUNDS, INSUFFICIENT_FUNDS_REASON)
        return await _record_single(store, actor, checked, None, decline, pending, trace_id)
    destination_after = await store.apply_credit(destination_id, checked.amount, now)
    if destination_after is None:
        await _refuse_over_limit(store, checked, pending)
    first = new_leg(
        checked,
        status=TransactionStatus.COMPLETED,
        created_at=pending.created_at if pending else now,
        transaction_id=_leg_id(checked, pending),
    )
    out_leg, in_leg = transfer_legs(first, now, source_after, destination_after)
    balances = balances_after([(out_leg, source_after), (in_leg, destination_after)])
    await record(
        store,
        actor,
        checked,
        [out_leg, in_leg],
        pending=pending,
        trace_id=trace_id,
        balances=balances,
    )
    return out_leg


def precheck(
    actor: Actor, checked: CheckedMovement, accounts: Mapping[UUID, Account | None]
) -> Decline | None:
    """The rules of a movement that need only its accounts (as read, before any lock) and the
    actor, in the order every path checks them: the account exists and the actor may act on
    it (crediting needs staff; another customer's account is not found), the destination of a
    transfer exists, the currency is each account's. Raises the refusal; returns the decline of
    an inactive account (source first), or None when the balances decide.

    ``decide_debit``, ``decide_credit`` and ``decide_transfer`` call it, and so does the
    PostgreSQL store's group call (``banking.storage.pg_movements``) before its server-side
    function decides the rest."""
    if checked.kind is TransactionType.CREDIT:
        require_can_credit(actor)
        account = require_visible(actor, accounts.get(checked.account_id))
    else:
        account = require_can_debit(actor, accounts.get(checked.account_id))
    require_same_currency(account.currency, checked.currency)
    if checked.kind is not TransactionType.TRANSFER_OUT:
        return _inactive(account)
    if checked.counterparty_id is None:
        raise InvariantViolated("a transfer needs a destination")
    destination = accounts.get(checked.counterparty_id)
    if destination is None:
        raise AccountNotFound("destination account not found")
    require_same_currency(destination.currency, checked.currency)
    return _inactive(account) or _inactive(destination)


DECISIONS: dict[TransactionType, Decide] = {
    TransactionType.DEBIT: decide_debit,
    TransactionType.CREDIT: decide_credit,
    TransactionType.TRANSFER_OUT: decide_transfer,
}


async def check_accounts(store: LedgerStore, actor: Actor, checked: CheckedMovement) -> None:
    """Visibility, existence and currency, as the decisions check them (``precheck``), for a
    command that is accepted now and decided later (an inactive account declines then)."""
    ids = [checked.account_id] + ([checked.counterparty_id] if checked.counterparty_id else [])
    precheck(actor, checked, _by_id(await store.get_accounts(ids)))


async def _refuse_over_limit(
    store: LedgerStore, checked: CheckedMovement, pending: Transaction | None
) -> NoReturn:
    """A credit that would take a balance to 10^16 is refused, and nothing is stored. A retry
    of a movement that succeeded earlier is still a retry: its key is taken, so it replays."""
    holder = await store.find_initiating_leg(checked.account_id, checked.reference_id)
    if holder is not None and (
        pending is None or holder[0].transaction_id != pending.transaction_id
    ):
        raise ReferenceAlreadyUsed("the idempotency key is already used")
    raise ValidationFailed(BALANCE_LIMIT_REASON, field="amount")


def _by_id(found: Sequence[Account | None]) -> dict[UUID, Account | None]:
    return {account.account_id: account for account in found if account is not None}


def _inactive(account: Account) -> Decline | None:
    if account.is_active:
        return None
    return (DeclineReason.ACCOUNT_INACTIVE, f"account {account.account_number} is not active")


def _leg_id(checked: CheckedMovement, pending: Transaction | None) -> UUID:
    return pending.transaction_id if pending else (checked.transaction_id or uuid4())


async def _record_single(
    store: LedgerStore,
    actor: Actor,
    checked: CheckedMovement,
    balance_after: BalanceAfter | None,
    decline: Decline | None,
    pending: Transaction | None,
    trace_id: str | None,
) -> Transaction:
    """Store the one leg of a debit or credit, or the declined leg of any movement."""
    if decline is None and balance_after is None:
        raise InvariantViolated("a completed leg needs the balance after it")
    leg = new_leg(
        checked,
        status=TransactionStatus.COMPLETED if decline is None else TransactionStatus.FAILED,
        created_at=pending.created_at if pending else utc_now(),
        transaction_id=_leg_id(checked, pending),
        balance_after=balance_after,
        failure=(decline[0].value, decline[1]) if decline else None,
    )
    balances = balances_after([(leg, balance_after)])
    await record(
        store, actor, checked, [leg], pending=pending, trace_id=trace_id, balances=balances
    )
    return leg
