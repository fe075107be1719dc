"""Who a command acts for is read from the users table when it is applied: the name and role
written in the message are not trusted, and a user who is gone or deactivated moves nothing."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from uuid import uuid4

from banking.domain.records import Command, DebitOrCredit, TransactionStatus, TransactionType
from banking.domain.roles import Actor, Role
from tests.ledger.world import World
from tests.support.ledger import Core
from tests.support.memory_store import MemoryUnitOfWork


def credit_command(world: World, actor: Actor, amount: str = "500.00") -> Command:
    """A credit with no pending leg, as another service (or a forger) would produce it."""
    request = DebitOrCredit(world.usd.account_id, Decimal(amount), "USD", None, f"ext-{uuid4()}")
    return Command(uuid4(), TransactionType.CREDIT, request, actor)


async def test_a_customer_claiming_to_be_admin_is_still_a_customer(
    core: Core, world: World, memory: MemoryUnitOfWork
) -> None:
    claimed = replace(world.alice, username="root", role=Role.ADMIN)
    before = await core.books()

    outcome = await core.movements.apply_command(credit_command(world, claimed))

    assert outcome.rejected_code == "FORBIDDEN" and outcome.leg is None
    assert await core.available(world.usd) == Decimal("100.00")
    after = await core.books()
    assert after.balances == before.balances and after.legs == before.legs
    assert after.event_types()[len(before.events) :] == ["transaction.rejected"]


async def test_an_unknown_user_moves_nothing(core: Core, world: World) -> None:
    ghost = Actor(uuid4(), "ghost", Role.ADMIN)

    outcome = await core.movements.apply_command(credit_command(world, ghost))

    assert outcome.rejected_code == "FORBIDDEN"
    assert await core.available(world.usd) == Decimal("100.00")


async def test_a_deactivated_teller_moves_nothing(core: Core, world: World) -> None:
    retired = await core.user(Role.TELLER, is_active=False)

    outcome = await core.movements.apply_command(credit_command(world, retired))

    assert outcome.rejected_code == "FORBIDDEN"
    assert await core.available(world.usd) == Decimal("100.00")


async def test_a_teller_demoted_after_submitting_cannot_apply_it(
    core: Core, world: World, memory: MemoryUnitOfWork
) -> None:
    teller = await core.user(Role.TELLER)
    request = DebitOrCredit(world.usd.account_id, Decimal("5.00"), "USD", None, "demoted")
    accepted = await core.movements.submit(teller, TransactionType.CREDIT, request)
    owner = memory.books.owners[teller.user_id]
    memory.books.owners[teller.user_id] = replace(owner, role=Role.AUDITOR)

    outcome = await core.movements.apply_command(
        Command(accepted.transaction.transaction_id, TransactionType.CREDIT, request, teller)
    )

    assert outcome.leg is not None and outcome.leg.status is TransactionStatus.FAILED
    assert outcome.leg.failure_code == "FORBIDDEN"
    assert await core.available(world.usd) == Decimal("100.00")


async def test_the_journal_names_the_user_from_the_table_not_the_message(
    core: Core, world: World, memory: MemoryUnitOfWork
) -> None:
    claimed = replace(world.teller, username="someone-else")

    outcome = await core.movements.apply_command(credit_command(world, claimed, "1.00"))

    assert outcome.leg is not None and outcome.leg.status is TransactionStatus.COMPLETED
    assert memory.books.journal[-1].created_by == world.teller.username
    assert await core.available(world.usd) == Decimal("101.00")
