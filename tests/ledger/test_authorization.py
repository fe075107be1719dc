"""Who may do what, decided by the core for every door. A customer acts on their own accounts
only, and another customer's account answers exactly as a missing one (never FORBIDDEN, so
ids cannot be probed); crediting needs a teller or an admin; auditors read everything and
move nothing; tellers and admins move money on any account."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest

from banking.domain.errors import AccountNotFound, Forbidden, TransactionNotFound
from banking.domain.records import HistoryFilter, TransactionType
from banking.domain.roles import Actor, Role
from tests.ledger.world import (
    CREDIT,
    DEBIT,
    KINDS,
    PATHS,
    TRANSFER,
    Path,
    World,
    ask,
    make_world,
    move,
    request,
)
from tests.support.ledger import Core

Read = Callable[[Core, Actor, UUID], Awaitable[Any]]


async def _number_of(core: Core, account_id: UUID) -> str:
    auditor = Actor(uuid4(), "auditor", Role.AUDITOR)
    try:
        return (await core.accounts.get(auditor, account_id)).account_number
    except AccountNotFound:
        return "100000000008"  # a valid account number that no account has


async def _find_by_number(core: Core, actor: Actor, account_id: UUID) -> Any:
    return await core.accounts.find_by_number(actor, await _number_of(core, account_id))


READS: dict[str, Read] = {
    "get-account": lambda core, actor, account_id: core.accounts.get(actor, account_id),
    "balance": lambda core, actor, account_id: core.accounts.balance(actor, account_id),
    "history": lambda core, actor, account_id: core.history.page(
        actor, account_id, HistoryFilter()
    ),
    "find-by-number": _find_by_number,
}


@pytest.mark.parametrize("read", list(READS))
async def test_another_customers_account_reads_as_a_missing_one(core: Core, read: str) -> None:
    world = await make_world(core)
    before = await core.books()

    with pytest.raises(AccountNotFound) as other:
        await READS[read](core, world.alice, world.usd_bob.account_id)
    with pytest.raises(AccountNotFound) as missing:
        await READS[read](core, world.alice, uuid4())

    assert other.value.code == missing.value.code == "ACCOUNT_NOT_FOUND"
    assert other.value.message == missing.value.message == "account not found"
    assert str(world.usd_bob.account_id) not in other.value.message
    assert await core.books() == before
    assert await READS[read](core, world.bob, world.usd_bob.account_id) is not None


async def test_another_customers_transaction_reads_as_a_missing_one(core: Core) -> None:
    world = await make_world(core)
    bobs = await core.movements.debit(world.bob, request(DEBIT, world.usd_bob, "1.00"))
    before = await core.books()

    with pytest.raises(TransactionNotFound) as other:
        await core.movements.get_transaction(world.alice, bobs.transaction.transaction_id)
    with pytest.raises(TransactionNotFound) as missing:
        await core.movements.get_transaction(world.alice, uuid4())

    assert other.value.code == missing.value.code == "TRANSACTION_NOT_FOUND"
    assert other.value.message == missing.value.message == "transaction not found"
    assert await core.books() == before
    seen = await core.movements.get_transaction(world.bob, bobs.transaction.transaction_id)
    assert seen == bobs.transaction


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", [DEBIT, TRANSFER])
async def test_a_customer_cannot_move_money_out_of_another_customers_account(
    core: Core, world: World, kind: TransactionType, path: Path
) -> None:
    before = await core.books()
    asked = request(kind, world.usd_bob, "1.00", destination=world.usd)

    with pytest.raises(AccountNotFound) as refused:
        await ask(core, path, world.alice, kind, asked)

    assert refused.value.message == "account not found"
    assert await core.books() == before
    assert await core.available(world.usd_bob) == Decimal("10.00")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("whose", ["own-account", "another-customers-account"])
async def test_a_customer_cannot_credit(core: Core, world: World, whose: str, path: Path) -> None:
    account = world.usd if whose == "own-account" else world.usd_bob
    before = await core.books()

    with pytest.raises(Forbidden) as refused:
        await ask(core, path, world.alice, CREDIT, request(CREDIT, account, "1000.00"))

    assert refused.value.code == "FORBIDDEN"
    assert refused.value.message == "crediting an account needs the teller or admin role"
    assert await core.books() == before


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", KINDS)
async def test_an_auditor_moves_no_money(
    core: Core, world: World, kind: TransactionType, path: Path
) -> None:
    before = await core.books()

    with pytest.raises(Forbidden) as refused:
        await ask(
            core,
            path,
            world.auditor,
            kind,
            request(kind, world.usd, "1.00", destination=world.usd_bob),
        )

    assert refused.value.message == (
        "crediting an account needs the teller or admin role"
        if kind is CREDIT
        else "role auditor cannot move money"
    )
    assert await core.books() == before


async def test_an_auditor_reads_everything(core: Core) -> None:
    world = await make_world(core)
    leg = (await core.movements.debit(world.bob, request(DEBIT, world.usd_bob, "5.00"))).transaction

    for account in (world.usd, world.usd_bob, world.jpy):
        assert await core.accounts.get(world.auditor, account.account_id) == account
        page = await core.history.page(world.auditor, account.account_id, HistoryFilter())
        assert page.transactions
        found = await core.accounts.find_by_number(world.auditor, account.account_number)
        assert found == account
    balance = await core.accounts.balance(world.auditor, world.usd_bob.account_id)
    assert balance.available_balance == Decimal("5.00")
    assert await core.movements.get_transaction(world.auditor, leg.transaction_id) == leg
    listed = {a.account_id for a in await core.accounts.list(world.auditor)}
    assert {world.usd.account_id, world.usd_bob.account_id, world.jpy.account_id} <= listed


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("role", [Role.TELLER, Role.ADMIN])
async def test_tellers_and_admins_move_money_on_any_account(
    core: Core, kind: TransactionType, role: Role
) -> None:
    world = await make_world(core)
    staff = await core.user(role)

    for account, other in ((world.usd, world.usd_bob), (world.usd_bob, world.usd)):
        await move(core, staff, kind, request(kind, account, "2.00", destination=other))

    expected = {
        DEBIT: ("98.00", "8.00"),
        CREDIT: ("102.00", "12.00"),
        TRANSFER: ("100.00", "10.00"),
    }[kind]
    assert await core.available(world.usd) == Decimal(expected[0])
    assert await core.available(world.usd_bob) == Decimal(expected[1])


async def test_a_customer_pays_another_customer_but_cannot_see_their_side(
    core: Core, world: World
) -> None:
    result = await core.movements.transfer(
        world.alice, request(TRANSFER, world.usd, "30.00", destination=world.usd_bob)
    )
    in_leg_id = result.transaction.related_transaction_id
    assert in_leg_id is not None
    before = await core.books()

    with pytest.raises(TransactionNotFound):
        await core.movements.get_transaction(world.alice, in_leg_id)
    with pytest.raises(AccountNotFound):
        await core.accounts.balance(world.alice, world.usd_bob.account_id)
    assert await core.books() == before
    assert (await core.movements.get_transaction(world.bob, in_leg_id)).amount == Decimal("30.00")
    assert await core.available(world.usd_bob) == Decimal("40.00")


@pytest.mark.parametrize(
    ("viewer", "sees"),
    [
        ("owner", True),
        ("other-customer", False),
        ("teller", True),
        ("auditor", True),
        ("admin", True),
    ],
)
async def test_who_sees_a_transaction(core: Core, world: World, viewer: str, sees: bool) -> None:
    leg = (await core.movements.debit(world.alice, request(DEBIT, world.usd, "1.00"))).transaction
    actor = {
        "owner": world.alice,
        "other-customer": world.bob,
        "teller": world.teller,
        "auditor": world.auditor,
        "admin": world.admin,
    }[viewer]

    if sees:
        assert await core.movements.get_transaction(actor, leg.transaction_id) == leg
    else:
        before = await core.books()
        with pytest.raises(TransactionNotFound):
            await core.movements.get_transaction(actor, leg.transaction_id)
        assert await core.books() == before


async def test_a_customer_lists_only_their_own_accounts(core: Core, world: World) -> None:
    listed = await core.accounts.list(world.alice)

    assert {a.account_id for a in listed} == {world.usd.account_id, world.jpy.account_id}
    assert {a.account_id for a in await core.accounts.list(world.bob)} == {
        world.usd_bob.account_id,
        world.jpy_bob.account_id,
    }


@pytest.mark.parametrize("role", [Role.TELLER, Role.AUDITOR, Role.ADMIN])
async def test_staff_list_every_account(core: Core, world: World, role: Role) -> None:
    staff = await core.user(role)

    listed = {a.account_id for a in await core.accounts.list(staff)}

    assert listed >= {
        world.usd.account_id,
        world.usd_bob.account_id,
        world.jpy.account_id,
        world.jpy_bob.account_id,
    }


@pytest.mark.parametrize(
    ("who", "whose"),
    [("customer", "own"), ("customer", "other"), ("auditor", "own")],
)
async def test_only_tellers_and_admins_freeze_accounts(
    core: Core, world: World, who: str, whose: str
) -> None:
    actor = world.alice if who == "customer" else world.auditor
    account = world.usd if whose == "own" else world.usd_bob
    before = await core.books()

    with pytest.raises(Forbidden) as refused:
        await core.accounts.set_active(actor, account.account_id, is_active=False)

    assert refused.value.message == "this change needs the teller or admin role"
    assert await core.books() == before
    assert (await core.accounts.get(world.teller, account.account_id)).is_active is True
