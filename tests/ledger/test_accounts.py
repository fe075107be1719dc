"""Accounts: who opens which, in what type and currency, for whom; looking them up; freezing
and re-opening them (a frozen account moves no money)."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID, uuid4

import pytest

from banking.domain.errors import (
    AccountInactiveDeclined,
    AccountNotFound,
    Forbidden,
    ValidationFailed,
)
from banking.domain.roles import Role
from banking.ledger.accounts import is_valid_account_number
from tests.ledger.world import CREDIT, DEBIT, KINDS, TRANSFER, World, make_world, move, request
from tests.support.ledger import Core

ACCOUNT_TYPES = ["checking", "savings", "business", "loan"]


@pytest.mark.parametrize("account_type", ACCOUNT_TYPES)
async def test_a_customer_opens_their_own_account_with_a_zero_balance(
    core: Core, account_type: str
) -> None:
    customer = await core.user()

    account, balance = await core.accounts.open(
        customer, account_type=account_type, currency="EUR", customer_id=None
    )

    assert (account.customer_id, account.account_type, account.currency) == (
        customer.user_id,
        account_type,
        "EUR",
    )
    assert account.is_active is True
    assert len(account.account_number) == 12 and is_valid_account_number(account.account_number)
    assert (balance.current_balance, balance.available_balance, balance.version) == (
        Decimal("0.00"),
        Decimal("0.00"),
        1,
    )
    assert await core.accounts.get(customer, account.account_id) == account
    assert await core.accounts.balance(customer, account.account_id) == balance
    assert await core.accounts.find_by_number(customer, account.account_number) == account


async def test_a_customer_may_name_themselves_as_the_owner(core: Core) -> None:
    customer = await core.user()

    account, _ = await core.accounts.open(
        customer, account_type="checking", currency="USD", customer_id=customer.user_id
    )

    assert account.customer_id == customer.user_id


@pytest.mark.parametrize("role", [Role.TELLER, Role.ADMIN])
async def test_staff_open_an_account_for_a_customer(core: Core, role: Role) -> None:
    staff, customer = await core.user(role), await core.user()

    account, _ = await core.accounts.open(
        staff, account_type="savings", currency="jpy", customer_id=customer.user_id
    )

    assert (account.customer_id, account.currency) == (customer.user_id, "JPY")
    assert [a.account_id for a in await core.accounts.list(customer)] == [account.account_id]


async def test_account_numbers_are_distinct(core: Core) -> None:
    customer = await core.user()

    numbers = {
        (
            await core.accounts.open(
                customer, account_type="checking", currency="USD", customer_id=None
            )
        )[0].account_number
        for _ in range(50)
    }

    assert len(numbers) == 50


@pytest.mark.parametrize(
    ("account_type", "currency", "field", "message"),
    [
        ("gold", "USD", "account_type", "account_type must be one of"),
        ("", "USD", "account_type", "account_type must be one of"),
        ("Checking", "USD", "account_type", "account_type must be one of"),
        ("checking", "XXX", "currency", "unsupported currency 'XXX'"),
        ("checking", "US", "currency", "currency must be a 3-letter ISO 4217 code"),
        ("checking", "", "currency", "currency must be a 3-letter ISO 4217 code"),
        ("checking", "EURO", "currency", "currency must be a 3-letter ISO 4217 code"),
        ("checking", "E1R", "currency", "currency must be a 3-letter ISO 4217 code"),
    ],
)
async def test_an_account_needs_a_known_type_and_currency(
    core: Core, account_type: str, currency: str, field: str, message: str
) -> None:
    customer = await core.user()
    before = await core.books()

    with pytest.raises(ValidationFailed) as refused:
        await core.accounts.open(
            customer, account_type=account_type, currency=currency, customer_id=None
        )

    assert refused.value.field == field
    assert refused.value.message.startswith(message)
    assert await core.books() == before


@pytest.mark.parametrize(
    "owner",
    ["unknown-user", "teller", "admin", "auditor", "inactive-customer"],
)
async def test_the_owner_must_be_an_active_customer(core: Core, owner: str) -> None:
    teller = await core.user(Role.TELLER)
    owner_id: UUID
    if owner == "unknown-user":
        owner_id = uuid4()
    elif owner == "inactive-customer":
        owner_id = (await core.user(is_active=False)).user_id
    else:
        owner_id = (await core.user(Role(owner))).user_id
    before = await core.books()

    with pytest.raises(ValidationFailed) as refused:
        await core.accounts.open(
            teller, account_type="checking", currency="USD", customer_id=owner_id
        )

    assert refused.value.field == "customer_id"
    assert refused.value.message == "customer_id must be an active customer"
    assert await core.books() == before


async def test_a_customer_cannot_open_an_account_for_someone_else(core: Core) -> None:
    alice, bob = await core.user(), await core.user()
    before = await core.books()

    with pytest.raises(ValidationFailed) as refused:
        await core.accounts.open(
            alice, account_type="savings", currency="USD", customer_id=bob.user_id
        )

    assert refused.value.field == "customer_id"
    assert refused.value.message == "customers open accounts for themselves only"
    assert await core.books() == before
    assert await core.accounts.list(bob) == []


async def test_staff_must_name_the_customer(core: Core) -> None:
    teller = await core.user(Role.TELLER)
    before = await core.books()

    with pytest.raises(ValidationFailed) as refused:
        await core.accounts.open(teller, account_type="checking", currency="USD", customer_id=None)

    assert (refused.value.field, refused.value.message) == (
        "customer_id",
        "customer_id is required",
    )
    assert await core.books() == before


async def test_an_auditor_opens_no_account(core: Core) -> None:
    auditor, customer = await core.user(Role.AUDITOR), await core.user()
    before = await core.books()

    with pytest.raises(Forbidden):
        await core.accounts.open(
            auditor, account_type="checking", currency="USD", customer_id=customer.user_id
        )

    assert await core.books() == before


@pytest.mark.parametrize("number", ["", "12345", "100000000009", "abcdefghijkl", "1000 0000 0008"])
async def test_looking_up_a_malformed_account_number_is_a_validation_error(
    core: Core, world: World, number: str
) -> None:
    before = await core.books()

    with pytest.raises(ValidationFailed) as refused:
        await core.accounts.find_by_number(world.teller, number)

    assert refused.value.field == "account_number"
    assert refused.value.message == "account_number is not valid"
    assert await core.books() == before


async def test_an_unknown_account_is_not_found(core: Core, world: World) -> None:
    before = await core.books()
    for read in (core.accounts.get, core.accounts.balance):
        with pytest.raises(AccountNotFound):
            await read(world.teller, uuid4())
    with pytest.raises(AccountNotFound):
        await core.accounts.find_by_number(world.teller, "100000000008")
    assert await core.books() == before


# --- frozen accounts --------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.TELLER, Role.ADMIN])
async def test_staff_freeze_an_account_and_it_moves_no_money(core: Core, role: Role) -> None:
    world = await make_world(core)
    staff = await core.user(role)

    frozen = await core.accounts.set_active(staff, world.usd.account_id, is_active=False)
    before = await core.books()

    assert frozen.is_active is False
    assert (await core.accounts.get(world.alice, world.usd.account_id)).is_active is False
    for kind in KINDS:
        with pytest.raises(AccountInactiveDeclined):
            await move(
                core,
                world.mover(kind),
                kind,
                request(kind, world.usd, "1.00", destination=world.usd_bob),
            )
    # ... nor into it.
    with pytest.raises(AccountInactiveDeclined):
        await core.movements.transfer(
            world.bob, request(TRANSFER, world.usd_bob, "1.00", destination=world.usd)
        )
    after = await core.books()
    assert after.balances == before.balances
    new_legs = [leg for i, leg in after.legs.items() if i not in before.legs]
    assert [leg.failure_code for leg in new_legs] == ["ACCOUNT_INACTIVE"] * 4
    assert after.event_types()[len(before.events) :] == ["transaction.failed"] * 4
    assert await core.available(world.usd) == Decimal("100.00")
    assert await core.available(world.usd_bob) == Decimal("10.00")


async def test_a_reopened_account_moves_money_again(core: Core, world: World) -> None:
    await core.accounts.set_active(world.teller, world.usd.account_id, is_active=False)

    reopened = await core.accounts.set_active(world.teller, world.usd.account_id, is_active=True)
    await core.movements.debit(world.alice, request(DEBIT, world.usd, "1.00"))
    await core.movements.credit(world.teller, request(CREDIT, world.usd, "2.00"))

    assert reopened.is_active is True
    assert await core.available(world.usd) == Decimal("101.00")


async def test_freezing_an_unknown_account_is_not_found(core: Core, world: World) -> None:
    before = await core.books()

    with pytest.raises(AccountNotFound):
        await core.accounts.set_active(world.teller, uuid4(), is_active=False)

    assert await core.books() == before


async def test_a_frozen_account_can_still_be_read(core: Core, world: World) -> None:
    await core.accounts.set_active(world.teller, world.usd.account_id, is_active=False)

    assert (await core.accounts.balance(world.alice, world.usd.account_id)).available_balance == (
        Decimal("100.00")
    )
    assert [
        a.is_active
        for a in await core.accounts.list(world.alice)
        if a.account_id == world.usd.account_id
    ] == [False]
