"""The store methods of reversals (``get_reversed_amount``, ``add_reversed_amount``,
``reversal_legs``) and the reversal's unit of work hold to one contract on the in-memory fake,
SQLite and PostgreSQL: the scenarios of ``tests/ledger/test_reversals`` run here once per
store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal

import pytest
from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError

from banking.domain.clock import utc_now
from banking.domain.records import HistoryFilter, Owner
from banking.domain.roles import Role
from banking.events.outbox import outbox_rows
from banking.ledger.ports import LedgerStore
from banking.storage.database import Database, create_engine
from banking.storage.ledger_store import SqlLedgerStore, SqlUnitOfWork
from banking.storage.tables import transactions, users
from tests.conftest import make_settings
from tests.ledger import test_reversals as reversals
from tests.storage.test_store_contract import count_sql_journal
from tests.support.ledger import AddOwner, Core, OutboxRow

SCENARIOS: list[Callable[[Core], Awaitable[None]]] = [
    reversals.test_reversing_a_debit_credits_it_back_linked_to_the_original,
    reversals.test_a_credit_is_reversed_in_parts_then_what_is_left,
    reversals.test_a_transfer_is_reversed_back_from_either_leg,
    reversals.test_a_reversal_publishes_its_legs_linked_to_the_original,
    reversals.test_reversing_a_credit_whose_money_is_gone_declines_and_counts_nothing,
    reversals.test_a_reversal_into_a_frozen_account_declines,
    reversals.test_partial_reversals_stop_at_the_original,
    reversals.test_failed_pending_and_reversal_legs_are_not_reversible,
    reversals.test_who_may_reverse_what,
    reversals.test_the_same_reversal_again_replays_and_other_parameters_conflict,
    reversals.test_either_leg_of_a_transfer_names_the_same_reversal,
]


@pytest.fixture
def contract_core(any_core: Core) -> Core:
    """``any_core``, able to count journal entries on the SQL stores too (for ``books``)."""
    if any_core.count_journal is None:
        unit_of_work = any_core.unit_of_work

        async def count_journal() -> int:
            return await count_sql_journal(unit_of_work)

        any_core.count_journal = count_journal
    return any_core


@pytest.mark.parametrize("run", SCENARIOS, ids=[run.__name__ for run in SCENARIOS])
async def test_scenario(contract_core: Core, run: Callable[[Core], Awaitable[None]]) -> None:
    await run(contract_core)


async def test_more_than_is_left_is_refused_on_every_store(contract_core: Core) -> None:
    await reversals.test_more_than_is_left_is_refused_and_changes_nothing(
        contract_core, "30.01", "more than what is left to reverse (30.00 of 30.00)"
    )


@pytest.mark.parametrize("over", ["0.01", "-10.01"])
async def test_the_database_refuses_a_reversed_amount_outside_the_leg(
    database_url: str, over: str
) -> None:
    """The CHECK of migration 0011 (``0 <= reversed_amount <= amount``), under the
    conditional update: a write that skipped the cap is refused and changes nothing."""
    database = Database(create_engine(make_settings(database_url)))
    core = Core(SqlUnitOfWork(database, outbox_rows), _add_owner(database), _no_outbox)
    try:
        account = await core.account(await core.user(Role.CUSTOMER), "10.00")
        async with core.unit_of_work.read() as store:
            (leg,) = await store.list_transactions(
                account.account_id, HistoryFilter(), after=None, limit=1
            )

        async def skip_the_cap(store: LedgerStore) -> None:
            if not isinstance(store, SqlLedgerStore):
                raise TypeError("a SQL store")
            await store.connection.execute(
                update(transactions)
                .where(transactions.c.transaction_id == leg.transaction_id)
                .values(reversed_amount=transactions.c.amount + Decimal(over))
            )

        with pytest.raises(IntegrityError):
            await core.unit_of_work.run(skip_the_cap)

        async def cap(store: LedgerStore) -> tuple[Decimal | None, Decimal | None]:
            refused = await store.add_reversed_amount(leg.transaction_id, Decimal("10.01"))
            return refused, await store.get_reversed_amount(leg.transaction_id)

        assert await core.unit_of_work.run(cap) == (None, Decimal("0.00"))
    finally:
        await database.dispose()


def _add_owner(database: Database) -> AddOwner:
    async def add_owner(owner: Owner, username: str) -> None:
        async with database.unit_of_work() as connection:
            await connection.execute(
                insert(users).values(
                    user_id=owner.user_id,
                    username=username,
                    password_hash="!",
                    email=f"{username}@example.test",
                    role=owner.role.value,
                    is_active=owner.is_active,
                    created_at=utc_now(),
                )
            )

    return add_owner


async def _no_outbox() -> list[OutboxRow]:
    return []
