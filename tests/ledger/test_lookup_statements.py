"""The lookup of legs across accounts, the balance at a point in time and statements: who sees
what, the filters, and the arithmetic (opening + legs = closing, running balances, totals).

The scenarios use the ``Core`` only, so ``tests/storage/test_lookup_statements_contract.py``
runs them on SQLite and PostgreSQL too."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from banking.domain.errors import AccountNotFound, InsufficientFundsDeclined, ValidationFailed
from banking.domain.records import Transaction, TransactionStatus, TransactionType
from banking.domain.roles import Actor
from banking.ledger.statements import (
    StatementService,
    TransactionSearch,
    signed,
)
from tests.ledger.world import CREDIT, DEBIT, TRANSFER, World, make_world, request
from tests.support.ledger import Core


def service(core: Core, *, legs_max: int = 1000) -> StatementService:
    return StatementService(
        core.unit_of_work, page_size_default=50, page_size_max=200, statement_legs_max=legs_max
    )


async def everything(
    statements: StatementService, actor: Actor, search: TransactionSearch, page_size: int = 2
) -> list[Transaction]:
    legs, cursor = [], None
    while True:
        page = await statements.search(actor, search, cursor=cursor, page_size=page_size)
        legs.extend(page.transactions)
        cursor = page.next_cursor
        if cursor is None:
            return legs


async def test_a_reference_lookup_shows_a_customer_only_their_own_legs(core: Core) -> None:
    world = await make_world(core)
    statements = service(core)
    mine = await core.movements.debit(
        world.alice, request(DEBIT, world.usd, "3.00", reference_id="order-42")
    )
    theirs = await core.movements.debit(
        world.bob, request(DEBIT, world.usd_bob, "1.00", reference_id="order-42")
    )
    search = TransactionSearch(reference_id="order-42")

    alice_sees = await everything(statements, world.alice, search)
    bob_sees = await everything(statements, world.bob, search)
    teller_sees = await everything(statements, world.teller, search)

    assert [leg.transaction_id for leg in alice_sees] == [mine.transaction.transaction_id]
    assert alice_sees[0].status is TransactionStatus.COMPLETED
    assert [leg.transaction_id for leg in bob_sees] == [theirs.transaction.transaction_id]
    assert {leg.transaction_id for leg in teller_sees} == {
        mine.transaction.transaction_id,
        theirs.transaction.transaction_id,
    }
    assert await everything(statements, world.alice, TransactionSearch(reference_id="nope")) == []


async def test_each_side_of_a_transfer_sees_its_own_leg(core: Core) -> None:
    world = await make_world(core)
    statements = service(core)
    await core.movements.transfer(
        world.alice,
        request(TRANSFER, world.usd, "5.00", destination=world.usd_bob, reference_id="rent"),
    )
    search = TransactionSearch(reference_id="rent")

    alice_sees = await everything(statements, world.alice, search)
    bob_sees = await everything(statements, world.bob, search)
    auditor_sees = await everything(statements, world.auditor, search)

    assert [leg.transaction_type for leg in alice_sees] == [TransactionType.TRANSFER_OUT]
    assert [leg.transaction_type for leg in bob_sees] == [TransactionType.TRANSFER_IN]
    assert len(auditor_sees) == 2


async def test_another_customers_account_is_not_found(core: Core) -> None:
    world = await make_world(core)
    with pytest.raises(AccountNotFound):
        await service(core).search(world.bob, TransactionSearch(account_id=world.usd.account_id))


async def test_filters_and_pages_visit_every_matching_leg_once_newest_first(core: Core) -> None:
    world = await make_world(core)
    statements = service(core)
    made = [
        (
            await core.movements.debit(world.alice, request(DEBIT, world.usd, "1.00"))
        ).transaction.transaction_id
        for _ in range(5)
    ]
    with pytest.raises(InsufficientFundsDeclined):
        await core.movements.debit(world.alice, request(DEBIT, world.usd, "1000.00"))

    debits = await everything(
        statements,
        world.alice,
        TransactionSearch(
            account_id=world.usd.account_id,
            transaction_type=TransactionType.DEBIT,
            status=TransactionStatus.COMPLETED,
        ),
    )
    failed = await everything(
        statements, world.alice, TransactionSearch(status=TransactionStatus.FAILED)
    )
    credits = await everything(
        statements, world.alice, TransactionSearch(transaction_type=TransactionType.CREDIT)
    )
    all_mine = await everything(statements, world.alice, TransactionSearch(), page_size=1)

    assert [leg.transaction_id for leg in debits] == list(reversed(made))
    assert [leg.amount for leg in failed] == [Decimal("1000.00")]
    assert {leg.account_id for leg in credits} == {world.usd.account_id, world.jpy.account_id}
    # five debits, the decline, the two funding credits; none of Bob's
    assert len(all_mine) == len({leg.transaction_id for leg in all_mine}) == 8
    assert all(
        (a.created_at, a.transaction_id) > (b.created_at, b.transaction_id)
        for a, b in itertools.pairwise(all_mine)
    )


async def test_a_time_window_is_from_inclusive_to_exclusive(core: Core) -> None:
    world = await make_world(core)
    leg = (await core.movements.debit(world.alice, request(DEBIT, world.usd, "2.00"))).transaction
    statements = service(core)
    on_account = TransactionSearch(account_id=world.usd.account_id)

    at_start = await statements.search(
        world.alice,
        TransactionSearch(account_id=world.usd.account_id, created_from=leg.created_at),
    )
    before_end = await statements.search(
        world.alice,
        TransactionSearch(account_id=world.usd.account_id, created_to=leg.created_at),
    )

    assert leg.transaction_id in [found.transaction_id for found in at_start.transactions]
    assert leg.transaction_id not in [found.transaction_id for found in before_end.transactions]
    assert len((await statements.search(world.alice, on_account)).transactions) == 2


@pytest.mark.parametrize(
    ("search", "page_size", "cursor", "field"),
    [
        (TransactionSearch(), 0, None, "page_size"),
        (TransactionSearch(), 201, None, "page_size"),
        (TransactionSearch(), None, "!!not-a-cursor", "cursor"),
        (TransactionSearch(created_from=datetime(2026, 1, 1)), None, None, "from"),
        (TransactionSearch(created_to=datetime(2026, 1, 1)), None, None, "to"),
        (
            TransactionSearch(
                created_from=datetime(2026, 2, 1, tzinfo=UTC),
                created_to=datetime(2026, 1, 1, tzinfo=UTC),
            ),
            None,
            None,
            "from",
        ),
        (TransactionSearch(reference_id=""), None, None, "reference_id"),
    ],
)
async def test_bad_lookups_are_refused_by_field(
    core: Core,
    search: TransactionSearch,
    page_size: int | None,
    cursor: str | None,
    field: str,
) -> None:
    world = await make_world(core)
    with pytest.raises(ValidationFailed) as refused:
        await service(core).search(world.alice, search, cursor=cursor, page_size=page_size)
    assert refused.value.field == field


async def _alice_moves(core: Core, world: World) -> list[Transaction]:
    """Alice's USD account: funded 100.00, then -30.00, +12.34 (a credit), -5.00 to Bob."""
    await core.movements.debit(world.alice, request(DEBIT, world.usd, "30.00"))
    await core.movements.credit(world.teller, request(CREDIT, world.usd, "12.34"))
    await core.movements.transfer(
        world.alice, request(TRANSFER, world.usd, "5.00", destination=world.usd_bob)
    )
    with pytest.raises(InsufficientFundsDeclined):  # a failed leg moves nothing
        await core.movements.debit(world.alice, request(DEBIT, world.usd, "500.00"))
    page = await service(core).search(
        world.auditor,
        TransactionSearch(account_id=world.usd.account_id, status=TransactionStatus.COMPLETED),
    )
    return sorted(page.transactions, key=lambda leg: (leg.created_at, leg.transaction_id))


async def test_the_balance_as_of_each_leg_is_the_sum_of_the_legs_up_to_it(core: Core) -> None:
    world = await make_world(core)
    legs = await _alice_moves(core, world)
    statements = service(core)

    for leg in legs:
        expected = sum(signed(other) for other in legs if other.created_at <= leg.created_at)
        balance = await statements.balance_as_of(world.alice, world.usd.account_id, leg.created_at)
        assert balance.current_balance == balance.available_balance == expected
    before = await statements.balance_as_of(
        world.alice, world.usd.account_id, legs[0].created_at - timedelta(microseconds=1)
    )
    now = await statements.balance_as_of(
        world.alice, world.usd.account_id, datetime.now(UTC) + timedelta(days=1)
    )

    assert before.current_balance == Decimal("0.00")
    assert before.version == 1
    assert now.current_balance == (await core.balance(world.usd)).current_balance
    assert now.current_balance == Decimal("77.34")
    assert now.version == (await core.balance(world.usd)).version


async def test_the_balance_as_of_needs_a_zone_and_a_visible_account(core: Core) -> None:
    world = await make_world(core)
    statements = service(core)
    with pytest.raises(ValidationFailed) as refused:
        await statements.balance_as_of(
            world.alice,
            world.usd.account_id,
            datetime(2026, 1, 1),
        )
    assert refused.value.field == "as_of"
    with pytest.raises(AccountNotFound):
        await statements.balance_as_of(world.bob, world.usd.account_id, datetime.now(UTC))


async def test_a_statement_opens_runs_and_closes_on_the_legs(core: Core) -> None:
    world = await make_world(core)
    legs = await _alice_moves(core, world)
    statements = service(core)
    # The period after the funding credit, up to the end: -30.00, +12.34, -5.00.
    since, until = legs[0].created_at, legs[-1].created_at

    statement = await statements.statement(world.alice, world.usd.account_id, since, until)

    assert statement.opening_balance == Decimal("100.00")
    assert [line.leg.transaction_id for line in statement.lines] == [
        leg.transaction_id for leg in legs[1:]
    ]
    assert [line.running_balance for line in statement.lines] == [
        Decimal("70.00"),
        Decimal("82.34"),
        Decimal("77.34"),
    ]
    assert statement.credits_total == Decimal("12.34")
    assert statement.debits_total == Decimal("35.00")
    assert statement.count == 3
    assert statement.closing_balance == Decimal("77.34")
    assert (
        statement.opening_balance + statement.credits_total - statement.debits_total
        == statement.closing_balance
    )
    closing = await statements.balance_as_of(world.alice, world.usd.account_id, until)
    assert closing.current_balance == statement.closing_balance


async def test_an_empty_period_opens_and_closes_on_the_same_balance(core: Core) -> None:
    world = await make_world(core)
    await _alice_moves(core, world)
    later = datetime.now(UTC) + timedelta(days=1)

    statement = await service(core).statement(world.auditor, world.usd.account_id, later, later)

    assert statement.lines == []
    assert statement.opening_balance == statement.closing_balance == Decimal("77.34")
    assert statement.credits_total == statement.debits_total == Decimal("0.00")


async def test_statements_refuse_too_many_legs_bad_periods_and_other_customers(
    core: Core,
) -> None:
    world = await make_world(core)
    await _alice_moves(core, world)
    start = datetime(2000, 1, 1, tzinfo=UTC)
    end = datetime.now(UTC) + timedelta(days=1)

    with pytest.raises(ValidationFailed) as too_many:
        await service(core, legs_max=3).statement(world.alice, world.usd.account_id, start, end)
    assert "more than 3 legs" in str(too_many.value)
    assert (
        await service(core, legs_max=4).statement(world.alice, world.usd.account_id, start, end)
    ).count == 4
    with pytest.raises(ValidationFailed) as backwards:
        await service(core).statement(world.alice, world.usd.account_id, end, start)
    assert backwards.value.field == "from"
    with pytest.raises(ValidationFailed) as naive:
        await service(core).statement(
            world.alice,
            world.usd.account_id,
            datetime(2026, 1, 1),
            end,
        )
    assert naive.value.field == "from"
    with pytest.raises(AccountNotFound):
        await service(core).statement(world.bob, world.usd.account_id, start, end)
