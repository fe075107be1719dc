"""Debits: money leaves an account, exactly, once per request."""

from __future__ import annotations

from decimal import Decimal

import pytest

from banking.domain.records import DebitOrCredit, TransactionStatus, TransactionType
from tests.ledger.world import DEBIT, World, make_world, request
from tests.support.ledger import Core
from tests.support.memory_store import MemoryUnitOfWork


async def test_a_debit_takes_the_amount_and_answers_with_its_leg(core: Core) -> None:
    world = await make_world(core)
    before = await core.balance(world.usd)

    result = await core.movements.debit(
        world.alice,
        DebitOrCredit(world.usd.account_id, Decimal("30.25"), "USD", "groceries", "d-1"),
    )

    leg = result.transaction
    assert result.replayed is False
    assert leg.transaction_type is TransactionType.DEBIT
    assert leg.status is TransactionStatus.COMPLETED
    assert (leg.account_id, leg.amount, leg.currency) == (
        world.usd.account_id,
        Decimal("30.25"),
        "USD",
    )
    assert (leg.description, leg.reference_id) == ("groceries", "d-1")
    assert leg.failure_code is None and leg.related_transaction_id is None
    assert leg.available_balance_after == Decimal("69.75")
    assert leg.balance_version_after == before.version + 1
    after = await core.balance(world.usd)
    assert (after.current_balance, after.available_balance) == (Decimal("69.75"),) * 2
    assert after.version == before.version + 1
    assert await core.movements.get_transaction(world.alice, leg.transaction_id) == leg


async def test_a_debit_can_empty_the_account_but_not_one_cent_more(core: Core) -> None:
    world = await make_world(core)

    await core.movements.debit(world.alice, request(DEBIT, world.usd, "100.00"))

    assert await core.available(world.usd) == Decimal("0.00")
    assert (await core.reconcile()).clean


async def test_debits_without_a_reference_are_each_a_new_movement(core: Core) -> None:
    world = await make_world(core)

    first = await core.movements.debit(world.alice, request(DEBIT, world.usd, "10.00"))
    second = await core.movements.debit(world.alice, request(DEBIT, world.usd, "10.00"))

    assert first.transaction.transaction_id != second.transaction.transaction_id
    assert first.transaction.reference_id != second.transaction.reference_id
    assert not first.replayed and not second.replayed
    assert await core.available(world.usd) == Decimal("80.00")


async def test_ten_debits_of_a_tenth_take_exactly_one(core: Core, world: World) -> None:
    for _ in range(10):
        await core.movements.debit(world.alice, request(DEBIT, world.usd, "0.1"))

    assert await core.available(world.usd) == Decimal("99.00")


@pytest.mark.parametrize(
    ("amount", "stored"),
    [("0.01", "0.01"), ("1.5", "1.50"), ("2", "2.00"), ("3.500", "3.50"), ("99.99", "99.99")],
)
async def test_the_amount_is_kept_to_the_cent(
    core: Core, world: World, amount: str, stored: str
) -> None:
    result = await core.movements.debit(world.alice, request(DEBIT, world.usd, amount))

    assert result.transaction.amount == Decimal(stored)
    assert str(result.transaction.amount) == stored
    assert await core.available(world.usd) == Decimal("100.00") - Decimal(stored)


async def test_a_debit_is_journaled_and_published(
    core: Core, world: World, memory: MemoryUnitOfWork
) -> None:
    before = await core.books()

    result = await core.movements.debit(
        world.alice, request(DEBIT, world.usd, "12.00", reference_id="pay-1")
    )

    leg = result.transaction
    entries = memory.books.journal[before.journal_entries :]
    assert [(e.transaction_id, e.event_type, e.created_by) for e in entries] == [
        (leg.transaction_id, "completed", world.alice.username)
    ]
    assert entries[0].metadata["amount"] == "12.00"
    assert entries[0].metadata["available_balance_after"] == "88.00"
    events = (await core.outbox())[len(before.events) :]
    assert [(topic, key, event_type) for topic, key, event_type, _ in events] == [
        ("banking.transactions.completed", str(world.usd.account_id), "transaction.completed"),
        ("banking.accounts.balances", str(world.usd.account_id), "balance.updated"),
    ]
    assert events[0][3]["transaction_id"] == str(leg.transaction_id)
    assert events[0][3]["amount"] == "12.00"
    assert events[1][3]["available_balance"] == "88.00"
    assert events[1][3]["version"] == leg.balance_version_after


async def test_a_jpy_debit_takes_whole_yen(core: Core, world: World) -> None:
    result = await core.movements.debit(world.alice, request(DEBIT, world.jpy, "15"))

    assert result.transaction.currency == "JPY"
    assert await core.available(world.jpy) == Decimal("985")
