"""Credits: money enters the bank through a teller or an admin, up to the ledger's limit."""

from __future__ import annotations

from decimal import Decimal

import pytest

from banking.domain.errors import ValidationFailed
from banking.domain.records import TransactionStatus, TransactionType
from banking.domain.roles import Role
from tests.ledger.world import CREDIT, World, make_world, request
from tests.support.ledger import Core

BELOW_LIMIT = "9999999999999999.99"  # the largest balance the ledger holds (below 10^16)
LIMIT_MESSAGE = "the resulting balance would exceed the ledger's limit of 10^16"


async def test_a_teller_credit_adds_the_amount(core: Core) -> None:
    world = await make_world(core)
    before = await core.balance(world.usd)

    result = await core.movements.credit(
        world.teller, request(CREDIT, world.usd, "250.00", reference_id="deposit-1")
    )

    leg = result.transaction
    assert leg.transaction_type is TransactionType.CREDIT
    assert leg.status is TransactionStatus.COMPLETED
    assert (leg.amount, leg.reference_id) == (Decimal("250.00"), "deposit-1")
    assert leg.available_balance_after == Decimal("350.00")
    after = await core.balance(world.usd)
    assert (after.current_balance, after.available_balance) == (Decimal("350.00"),) * 2
    assert after.version == before.version + 1
    # The customer sees the teller's credit on their own account.
    assert await core.movements.get_transaction(world.alice, leg.transaction_id) == leg


@pytest.mark.parametrize("role", [Role.TELLER, Role.ADMIN])
async def test_staff_who_move_money_credit_any_account(
    core: Core, world: World, role: Role
) -> None:
    staff = await core.user(role)

    await core.movements.credit(staff, request(CREDIT, world.usd, "1.00"))
    await core.movements.credit(staff, request(CREDIT, world.usd_bob, "2.00"))

    assert await core.available(world.usd) == Decimal("101.00")
    assert await core.available(world.usd_bob) == Decimal("12.00")


async def test_crediting_a_tenth_ten_times_gives_exactly_one(core: Core) -> None:
    customer = await core.user()
    account = await core.account(customer)
    teller = await core.user(Role.TELLER)

    for _ in range(10):
        await core.movements.credit(teller, request(CREDIT, account, "0.1"))

    assert await core.available(account) == Decimal("1.00")
    assert (await core.reconcile()).clean


async def test_a_credit_up_to_the_limit_is_taken_one_cent_more_is_refused(core: Core) -> None:
    customer = await core.user()
    account = await core.account(customer)
    teller = await core.user(Role.TELLER)
    await core.movements.credit(teller, request(CREDIT, account, BELOW_LIMIT))
    assert await core.available(account) == Decimal(BELOW_LIMIT)
    before = await core.books()

    with pytest.raises(ValidationFailed) as refused:
        await core.movements.credit(teller, request(CREDIT, account, "0.01"))

    assert refused.value.field == "amount"
    assert refused.value.message == LIMIT_MESSAGE
    assert await core.books() == before


async def test_a_jpy_credit_in_whole_yen(core: Core, world: World) -> None:
    result = await core.movements.credit(world.teller, request(CREDIT, world.jpy_bob, "500"))

    assert result.transaction.amount == Decimal("500")
    assert await core.available(world.jpy_bob) == Decimal("500")


async def test_a_credit_is_published_with_the_new_balance(core: Core, world: World) -> None:
    before = await core.books()

    result = await core.movements.credit(world.teller, request(CREDIT, world.usd_bob, "5.00"))

    after = await core.books()
    assert after.event_types()[len(before.events) :] == [
        "transaction.completed",
        "balance.updated",
    ]
    balance_event = after.events[-1][3]
    assert balance_event["account_id"] == str(world.usd_bob.account_id)
    assert balance_event["available_balance"] == "15.00"
    assert balance_event["version"] == result.transaction.balance_version_after
    assert after.journal_entries == before.journal_entries + 1
    assert set(after.legs) - set(before.legs) == {result.transaction.transaction_id}
