"""Overdraft limits: staff let an account's balances go below zero, down to its limit."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal
from uuid import uuid4

import pytest

from banking.domain.errors import (
    AccountNotFound,
    Forbidden,
    InsufficientFunds,
    InsufficientFundsDeclined,
    ValidationFailed,
)
from banking.domain.records import BatchItem, TransactionStatus
from banking.domain.roles import Role
from tests.ledger.test_groups import completed
from tests.ledger.world import CREDIT, DEBIT, TRANSFER, Path, ask, last_command, make_world, request
from tests.support.ledger import Core
from tests.support.memory_store import MemoryUnitOfWork


@pytest.mark.parametrize("role", [Role.TELLER, Role.ADMIN])
async def test_staff_set_a_limit_and_the_account_may_go_down_to_it(core: Core, role: Role) -> None:
    world = await make_world(core)
    staff = await core.user(role)
    before = await core.balance(world.usd)

    balance = await core.accounts.set_overdraft_limit(staff, world.usd.account_id, "50.00")

    assert balance.overdraft_limit == Decimal("50.00")
    assert balance.version == before.version + 1
    assert balance.available_balance == Decimal("100.00")
    # 100.00 available and 50.00 of overdraft: exactly 150.00 may leave, not one cent more.
    debit = await core.movements.debit(world.alice, request(DEBIT, world.usd, "120.00"))
    assert debit.transaction.available_balance_after == Decimal("-20.00")
    await core.movements.transfer(
        world.alice, request(TRANSFER, world.usd, "30.00", destination=world.usd_bob)
    )
    assert await core.available(world.usd) == Decimal("-50.00")
    with pytest.raises(InsufficientFunds):
        await core.movements.debit(world.alice, request(DEBIT, world.usd, "0.01"))
    with pytest.raises(InsufficientFunds):
        await core.movements.transfer(
            world.alice, request(TRANSFER, world.usd, "0.01", destination=world.usd_bob)
        )
    after = await core.balance(world.usd)
    assert (after.current_balance, after.available_balance) == (Decimal("-50.00"),) * 2
    assert (await core.reconcile()).clean


async def test_without_a_limit_nothing_goes_below_zero(core: Core) -> None:
    world = await make_world(core)
    assert (await core.balance(world.usd)).overdraft_limit == Decimal("0.00")

    with pytest.raises(InsufficientFunds):
        await core.movements.debit(world.alice, request(DEBIT, world.usd, "100.01"))

    assert await core.available(world.usd) == Decimal("100.00")


async def test_a_change_is_audited_and_the_same_limit_again_changes_nothing(core: Core) -> None:
    world = await make_world(core)
    before = await core.books()

    await core.accounts.set_overdraft_limit(world.teller, world.usd.account_id, 25)
    changed = await core.books()
    again = await core.accounts.set_overdraft_limit(world.teller, world.usd.account_id, "25.00")

    assert changed.event_types()[len(before.events) :] == ["staff.overdraft_limit_set"]
    assert await core.books() == changed
    assert again.overdraft_limit == Decimal("25.00")


async def test_a_limit_can_be_lowered_to_what_the_account_uses_but_not_below(core: Core) -> None:
    world = await make_world(core)
    await core.accounts.set_overdraft_limit(world.teller, world.usd.account_id, "50.00")
    await core.movements.debit(world.alice, request(DEBIT, world.usd, "130.00"))
    before = await core.books()

    with pytest.raises(ValidationFailed) as refused:
        await core.accounts.set_overdraft_limit(world.teller, world.usd.account_id, "29.99")

    assert refused.value.field == "overdraft_limit"
    assert await core.books() == before
    lowered = await core.accounts.set_overdraft_limit(world.teller, world.usd.account_id, "30")
    assert lowered.overdraft_limit == Decimal("30.00")
    assert (await core.reconcile()).clean


@pytest.mark.parametrize(
    "limit",
    ["-1.00", "abc", "1e3", "10000000000000000", 1.5, True, None, "1.001", ""],
)
async def test_a_bad_limit_is_refused_and_changes_nothing(core: Core, limit: object) -> None:
    world = await make_world(core)
    before = await core.books()

    with pytest.raises(ValidationFailed) as refused:
        await core.accounts.set_overdraft_limit(world.teller, world.usd.account_id, limit)

    assert refused.value.field == "overdraft_limit"
    assert await core.books() == before


async def test_the_currency_decides_the_limits_digits(core: Core) -> None:
    world = await make_world(core)
    before = await core.books()

    with pytest.raises(ValidationFailed, match="more than 0 decimal places for JPY"):
        await core.accounts.set_overdraft_limit(world.teller, world.jpy.account_id, "10.50")

    assert await core.books() == before


@pytest.mark.parametrize("who", ["alice", "bob", "auditor"])
async def test_customers_and_auditors_cannot_set_a_limit(core: Core, who: str) -> None:
    world = await make_world(core)
    before = await core.books()

    with pytest.raises(Forbidden):
        await core.accounts.set_overdraft_limit(getattr(world, who), world.usd.account_id, "10")

    assert await core.books() == before


async def test_an_unknown_account_is_not_found(core: Core) -> None:
    world = await make_world(core)
    before = await core.books()

    with pytest.raises(AccountNotFound):
        await core.accounts.set_overdraft_limit(world.teller, uuid4(), "10.00")

    assert await core.books() == before


async def test_credits_and_transfers_into_an_overdrawn_account_repay_it(core: Core) -> None:
    world = await make_world(core)
    await core.accounts.set_overdraft_limit(world.teller, world.usd_bob.account_id, "20.00")
    await core.movements.debit(world.bob, request(DEBIT, world.usd_bob, "25.00"))

    await core.movements.credit(world.teller, request(CREDIT, world.usd_bob, "10.00"))
    await core.movements.transfer(
        world.alice, request(TRANSFER, world.usd, "5.00", destination=world.usd_bob)
    )

    assert await core.available(world.usd_bob) == Decimal("0.00")
    assert (await core.reconcile()).clean


async def test_a_batch_uses_the_limit_item_by_item(core: Core) -> None:
    world = await make_world(core)
    await core.accounts.set_overdraft_limit(world.teller, world.usd.account_id, "10.00")
    items = [
        BatchItem(DEBIT, request(DEBIT, world.usd, "60.00")),
        BatchItem(TRANSFER, request(TRANSFER, world.usd, "45.00", destination=world.usd_bob)),
        BatchItem(DEBIT, request(DEBIT, world.usd, "5.01")),  # 0.01 beyond the limit
        BatchItem(DEBIT, request(DEBIT, world.usd, "5.00")),
    ]

    results = await core.movements.batch(world.alice, items, atomic=False)

    assert completed(results[0]).transaction.available_balance_after == Decimal("40.00")
    assert completed(results[1]).transaction.available_balance_after == Decimal("-5.00")
    assert isinstance(results[2], InsufficientFundsDeclined)
    assert completed(results[3]).transaction.available_balance_after == Decimal("-10.00")
    assert await core.available(world.usd) == Decimal("-10.00")
    assert await core.available(world.usd_bob) == Decimal("55.00")
    assert (await core.reconcile()).clean


async def test_a_command_applied_later_uses_the_limit_of_then(core: Core) -> None:
    world = await make_world(core)
    await ask(core, Path.SUBMIT, world.alice, DEBIT, request(DEBIT, world.usd, "130.00"))
    await core.accounts.set_overdraft_limit(world.teller, world.usd.account_id, "30.00")

    outcome = await core.movements.apply_command(await last_command(core))

    assert outcome.leg is not None
    assert outcome.leg.status is TransactionStatus.COMPLETED
    assert await core.available(world.usd) == Decimal("-30.00")
    assert (await core.reconcile()).clean


async def test_concurrent_debits_stop_exactly_at_the_limit(core: Core) -> None:
    """Forty debits of 5.00 at once on 100.00 with 50.00 of overdraft: thirty apply."""
    world = await make_world(core)
    await core.accounts.set_overdraft_limit(world.teller, world.usd.account_id, "50.00")

    outcomes = await asyncio.gather(
        *[
            core.movements.debit(
                world.alice, request(DEBIT, world.usd, "5.00", reference_id=f"o-{index}")
            )
            for index in range(40)
        ],
        return_exceptions=True,
    )

    applied = [o for o in outcomes if not isinstance(o, BaseException)]
    declined = [o for o in outcomes if isinstance(o, InsufficientFundsDeclined)]
    assert (len(applied), len(declined)) == (30, 10)
    assert await core.available(world.usd) == Decimal("-50.00")
    assert (await core.reconcile()).clean


async def test_lowering_the_limit_while_debits_race_never_leaves_a_balance_below_it(
    core: Core,
) -> None:
    """Debits of 5.00 race a change of the limit from 50.00 to 0: either the change comes
    first (and the debits stop at zero) or it is refused because the account already uses
    more; never a balance below the limit the account ends with."""
    world = await make_world(core)
    await core.accounts.set_overdraft_limit(world.teller, world.usd.account_id, "50.00")

    async def lower() -> object:
        await asyncio.sleep(0)
        return await core.accounts.set_overdraft_limit(world.teller, world.usd.account_id, "0")

    debits = [
        core.movements.debit(
            world.alice, request(DEBIT, world.usd, "5.00", reference_id=f"r-{index}")
        )
        for index in range(30)
    ]
    outcomes = await asyncio.gather(*debits[:15], lower(), *debits[15:], return_exceptions=True)

    unexpected = [
        o
        for o in outcomes
        if isinstance(o, BaseException)
        and not isinstance(o, InsufficientFundsDeclined | ValidationFailed)
    ]
    assert unexpected == []
    balance = await core.balance(world.usd)
    assert balance.available_balance >= -balance.overdraft_limit
    assert balance.current_balance >= -balance.overdraft_limit
    assert (await core.reconcile()).clean


async def test_reconcile_reports_a_balance_below_its_limit(
    core: Core, memory: MemoryUnitOfWork
) -> None:
    world = await make_world(core)
    await core.accounts.set_overdraft_limit(world.teller, world.usd.account_id, "40.00")
    await core.movements.debit(world.alice, request(DEBIT, world.usd, "120.00"))
    assert (await core.reconcile()).clean
    usd = world.usd.account_id

    # What the database's checks refuse: the limit lowered under what the account uses.
    memory.books.balances[usd] = replace(
        memory.books.balances[usd], overdraft_limit=Decimal("10.00")
    )

    assert (await core.reconcile()).problems == [
        f"account {usd}: current -20.00, available -20.00, sum of completed legs -20.00, "
        "below its overdraft limit 10.00"
    ]
