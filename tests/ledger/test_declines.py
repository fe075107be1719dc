"""Declines: a movement the rules refuse is stored as a ``failed`` leg with its journal entry
and a ``transaction.failed`` event, answers with the reason, and moves no money."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal

import pytest

from banking.domain.errors import (
    AccountInactiveDeclined,
    BankingError,
    DeclineReason,
    InsufficientFundsDeclined,
)
from banking.domain.records import Account, TransactionStatus, TransactionType
from tests.ledger.world import CREDIT, DEBIT, TRANSFER, World, make_world, move, request
from tests.support.ledger import Books, Core
from tests.support.memory_store import MemoryUnitOfWork

INSUFFICIENT = DeclineReason.INSUFFICIENT_FUNDS
INACTIVE = DeclineReason.ACCOUNT_INACTIVE
ERRORS: dict[DeclineReason, type[BankingError]] = {
    INSUFFICIENT: InsufficientFundsDeclined,
    INACTIVE: AccountInactiveDeclined,
}


@dataclass(frozen=True)
class Decline:
    kind: TransactionType
    amount: str
    reason: DeclineReason
    frozen: str | None = None  # "source" or "destination": the account frozen first


DECLINES = {
    "debit-insufficient-funds": Decline(DEBIT, "100.01", INSUFFICIENT),
    "debit-far-beyond-the-balance": Decline(DEBIT, "1000000.00", INSUFFICIENT),
    "transfer-insufficient-funds": Decline(TRANSFER, "100.01", INSUFFICIENT),
    "debit-inactive-account": Decline(DEBIT, "1.00", INACTIVE, "source"),
    "credit-inactive-account": Decline(CREDIT, "1.00", INACTIVE, "source"),
    "transfer-inactive-source": Decline(TRANSFER, "1.00", INACTIVE, "source"),
    "transfer-inactive-destination": Decline(TRANSFER, "1.00", INACTIVE, "destination"),
    # Inactive is checked first: a frozen account says so even when funds are short too.
    "debit-inactive-and-short": Decline(DEBIT, "500.00", INACTIVE, "source"),
    "transfer-inactive-destination-and-short": Decline(TRANSFER, "500.00", INACTIVE, "destination"),
}


async def freeze(core: Core, world: World, account: Account) -> None:
    await core.accounts.set_active(world.teller, account.account_id, is_active=False)


def expected_message(decline: Decline, world: World) -> str:
    if decline.reason is INSUFFICIENT:
        return "insufficient funds"
    frozen = world.usd_bob if decline.frozen == "destination" else world.usd
    return f"account {frozen.account_number} is not active"


def assert_only_the_failed_leg_was_added(
    before: Books, after: Books, leg_id: object, reason: DeclineReason
) -> None:
    assert after.balances == before.balances
    assert after.accounts == before.accounts
    assert set(after.legs) - set(before.legs) == {leg_id}
    assert {i: leg for i, leg in after.legs.items() if i != leg_id} == before.legs
    assert after.journal_entries == before.journal_entries + 1
    assert after.events[: len(before.events)] == before.events
    new_events = after.events[len(before.events) :]
    assert [event_type for _topic, _key, event_type, _ in new_events] == ["transaction.failed"]
    assert new_events[0][0] == "banking.transactions.failed"
    assert new_events[0][3]["failure_code"] == reason.value
    assert new_events[0][3]["status"] == "failed"


@pytest.mark.parametrize("decline", list(DECLINES.values()), ids=list(DECLINES))
async def test_a_decline_is_a_failed_leg_that_moves_no_money(core: Core, decline: Decline) -> None:
    world = await make_world(core)
    if decline.frozen == "source":
        await freeze(core, world, world.usd)
    if decline.frozen == "destination":
        await freeze(core, world, world.usd_bob)
    before = await core.books()
    asked = request(
        decline.kind,
        world.usd,
        decline.amount,
        destination=world.usd_bob,
        description="declined",
        reference_id="declined-1",
    )

    with pytest.raises(ERRORS[decline.reason]) as declined:
        await move(core, world.mover(decline.kind), decline.kind, asked)

    error = declined.value
    assert error.code == decline.reason.value
    assert error.message == expected_message(decline, world)
    assert error.replayed is False
    assert error.transaction_id is not None
    leg = await core.movements.get_transaction(world.alice, error.transaction_id)
    assert leg.status is TransactionStatus.FAILED
    assert leg.transaction_type is decline.kind
    assert (leg.failure_code, leg.failure_reason) == (decline.reason.value, error.message)
    assert (leg.account_id, leg.amount, leg.currency) == (
        world.usd.account_id,
        Decimal(decline.amount),
        "USD",
    )
    assert (leg.description, leg.reference_id) == ("declined", "declined-1")
    assert leg.available_balance_after is None and leg.balance_version_after is None
    assert leg.related_transaction_id is None  # a declined transfer has no receiving leg
    assert_only_the_failed_leg_was_added(
        before, await core.books(), error.transaction_id, decline.reason
    )
    assert await core.available(world.usd) == Decimal("100.00")
    assert await core.available(world.usd_bob) == Decimal("10.00")
    assert (await core.reconcile()).clean


async def test_a_decline_is_journaled_as_failed_by_whoever_asked(
    core: Core, world: World, memory: MemoryUnitOfWork
) -> None:
    entries_before = len(memory.books.journal)

    with pytest.raises(InsufficientFundsDeclined) as declined:
        await core.movements.debit(world.teller, request(DEBIT, world.usd, "250.00"))

    [entry] = memory.books.journal[entries_before:]
    assert entry.transaction_id == declined.value.transaction_id
    assert (entry.event_type, entry.created_by) == ("failed", world.teller.username)
    assert entry.metadata["failure_code"] == "INSUFFICIENT_FUNDS"
    assert entry.metadata["failure_reason"] == "insufficient funds"
    assert entry.metadata["amount"] == "250.00"
    assert "available_balance_after" not in entry.metadata


async def test_a_decline_in_yen_names_the_reason(core: Core, world: World) -> None:
    before = await core.books()

    with pytest.raises(InsufficientFundsDeclined) as declined:
        await core.movements.transfer(
            world.alice, request(TRANSFER, world.jpy, "1001", destination=world.jpy_bob)
        )

    assert declined.value.code == "INSUFFICIENT_FUNDS"
    after = await core.books()
    assert after.balances == before.balances
    assert after.event_types()[len(before.events) :] == ["transaction.failed"]


async def test_after_a_decline_a_new_request_moves_money_once_funds_arrive(
    core: Core, world: World
) -> None:
    with pytest.raises(InsufficientFundsDeclined):
        await core.movements.debit(world.alice, request(DEBIT, world.usd, "150.00"))
    await core.movements.credit(world.teller, request(CREDIT, world.usd, "50.00"))

    result = await core.movements.debit(world.alice, request(DEBIT, world.usd, "150.00"))

    assert result.transaction.status is TransactionStatus.COMPLETED
    assert await core.available(world.usd) == Decimal("0.00")
    assert (await core.reconcile()).clean


async def test_concurrent_debits_never_overdraw(core: Core) -> None:
    """Ten debits of 30.00 on 100.00 at once: three apply, seven are declined."""
    world = await make_world(core)
    before = await core.books()

    outcomes = await asyncio.gather(
        *[
            core.movements.debit(
                world.alice, request(DEBIT, world.usd, "30.00", reference_id=f"c-{index}")
            )
            for index in range(10)
        ],
        return_exceptions=True,
    )

    applied = [o for o in outcomes if not isinstance(o, BaseException)]
    declined = [o for o in outcomes if isinstance(o, InsufficientFundsDeclined)]
    assert (len(applied), len(declined)) == (3, 7)
    after = await core.books()
    assert len(after.legs) == len(before.legs) + 10  # three completed, seven failed
    assert after.journal_entries == before.journal_entries + 10
    assert after.event_types()[len(before.events) :].count("transaction.failed") == 7
    assert await core.available(world.usd) == Decimal("10.00")
    assert (await core.reconcile()).clean
