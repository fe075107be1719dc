"""Transfers: money moves between two accounts as two linked legs, never made or lost."""

from __future__ import annotations

from decimal import Decimal

import pytest

from banking.domain.errors import ValidationFailed
from banking.domain.records import TransactionStatus, TransactionType, TransferRequest
from banking.domain.roles import Role
from tests.ledger.world import CREDIT, TRANSFER, World, make_world, request
from tests.support.ledger import Core


async def test_a_transfer_moves_money_and_links_its_two_legs(core: Core) -> None:
    world = await make_world(core)

    result = await core.movements.transfer(
        world.alice,
        TransferRequest(
            world.usd.account_id, world.usd_bob.account_id, Decimal("75.25"), "USD", "rent", "t-1"
        ),
    )

    out_leg = result.transaction
    assert out_leg.transaction_type is TransactionType.TRANSFER_OUT
    assert out_leg.status is TransactionStatus.COMPLETED
    assert out_leg.counterparty_account_id == world.usd_bob.account_id
    assert out_leg.available_balance_after == Decimal("24.75")
    assert out_leg.related_transaction_id is not None
    in_leg = await core.movements.get_transaction(world.bob, out_leg.related_transaction_id)
    assert in_leg.transaction_type is TransactionType.TRANSFER_IN
    assert in_leg.status is TransactionStatus.COMPLETED
    assert (in_leg.account_id, in_leg.counterparty_account_id) == (
        world.usd_bob.account_id,
        world.usd.account_id,
    )
    assert in_leg.related_transaction_id == out_leg.transaction_id
    assert (in_leg.amount, in_leg.currency, in_leg.description, in_leg.reference_id) == (
        Decimal("75.25"),
        "USD",
        "rent",
        "t-1",
    )
    assert in_leg.available_balance_after == Decimal("85.25")
    assert await core.available(world.usd) == Decimal("24.75")
    assert await core.available(world.usd_bob) == Decimal("85.25")
    assert (await core.reconcile()).clean


async def test_a_customer_transfers_between_their_own_accounts(core: Core) -> None:
    alice = await core.user()
    checking = await core.account(alice, "40.00")
    savings = await core.account(alice, account_type="savings")

    await core.movements.transfer(alice, request(TRANSFER, checking, "40.00", destination=savings))

    assert await core.available(checking) == Decimal("0.00")
    assert await core.available(savings) == Decimal("40.00")


async def test_a_transfer_writes_two_legs_two_journal_entries_and_four_events(
    core: Core, world: World
) -> None:
    before = await core.books()

    result = await core.movements.transfer(
        world.alice, request(TRANSFER, world.usd, "5.00", destination=world.usd_bob)
    )

    after = await core.books()
    out_id, in_id = result.transaction.transaction_id, result.transaction.related_transaction_id
    assert set(after.legs) - set(before.legs) == {out_id, in_id}
    assert after.journal_entries == before.journal_entries + 2
    new_events = after.events[len(before.events) :]
    assert [(event_type, key) for _topic, key, event_type, _ in new_events] == [
        ("transaction.completed", str(world.usd.account_id)),
        ("balance.updated", str(world.usd.account_id)),
        ("transaction.completed", str(world.usd_bob.account_id)),
        ("balance.updated", str(world.usd_bob.account_id)),
    ]
    assert [payload["available_balance"] for *_, payload in new_events[1::2]] == [
        "95.00",
        "15.00",
    ]


async def test_a_teller_transfers_between_any_customers(core: Core, world: World) -> None:
    await core.movements.transfer(
        world.teller, request(TRANSFER, world.usd_bob, "10.00", destination=world.usd)
    )

    assert await core.available(world.usd_bob) == Decimal("0.00")
    assert await core.available(world.usd) == Decimal("110.00")


async def test_a_transfer_into_a_full_account_is_refused_and_takes_nothing(core: Core) -> None:
    world = await make_world(core)
    rich = await core.account(world.bob)
    await core.movements.credit(world.teller, request(CREDIT, rich, "9999999999999999.99"))
    before = await core.books()

    with pytest.raises(ValidationFailed) as refused:
        await core.movements.transfer(
            world.alice, request(TRANSFER, world.usd, "0.01", destination=rich)
        )

    assert refused.value.field == "amount"
    assert "10^16" in refused.value.message
    assert await core.books() == before
    assert await core.available(world.usd) == Decimal("100.00")


@pytest.mark.parametrize("count", [1, 7, 25])
async def test_transfers_back_and_forth_keep_the_total(
    core: Core, world: World, count: int
) -> None:
    for index in range(count):
        source, destination = (
            (world.usd, world.usd_bob) if index % 2 else (world.usd_bob, world.usd)
        )
        owner = world.alice if source is world.usd else world.bob
        await core.movements.transfer(
            owner, request(TRANSFER, source, "3.33", destination=destination)
        )

    total = await core.available(world.usd) + await core.available(world.usd_bob)
    assert total == Decimal("110.00")
    assert (await core.reconcile()).clean


async def test_an_admin_transfers_in_yen(core: Core, world: World) -> None:
    admin = await core.user(Role.ADMIN)

    result = await core.movements.transfer(
        admin, request(TRANSFER, world.jpy, "999", destination=world.jpy_bob)
    )

    assert result.transaction.currency == "JPY"
    assert await core.available(world.jpy) == Decimal("1")
    assert await core.available(world.jpy_bob) == Decimal("999")
