"""The contract of the ledger's store port: the same scenarios, through the core, on the
in-memory fake (what ``tests/ledger`` trusts), SQLite and PostgreSQL. Balances, legs, declines,
replays and the outbox rows must be the same on all three.

``SCENARIOS`` are tests of ``tests/ledger`` that use the ``Core`` API only (no
``memory.books``): each runs here once per store, with the parameters given.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from _pytest.mark import ParameterSet
from sqlalchemy import func, select

from banking.domain.errors import IdempotencyConflict, InsufficientFundsDeclined
from banking.domain.records import Command, DebitOrCredit, TransactionStatus, TransferRequest
from banking.domain.roles import Role
from banking.ledger.ports import UnitOfWork
from banking.storage.ledger_store import SqlLedgerStore
from banking.storage.tables import transaction_logs
from tests.ledger import test_accounts as accounts
from tests.ledger import test_authorization as authorization
from tests.ledger import test_commands as commands
from tests.ledger import test_credits as credits
from tests.ledger import test_debits as debits
from tests.ledger import test_declines as declines
from tests.ledger import test_groups as groups
from tests.ledger import test_history as history
from tests.ledger import test_holds as holds
from tests.ledger import test_idempotency as idempotency
from tests.ledger import test_overdraft as overdraft
from tests.ledger import test_reconcile as reconciliation
from tests.ledger import test_review as review
from tests.ledger import test_transfers as transfers
from tests.ledger.world import CREDIT, DEBIT, TRANSFER
from tests.support.ledger import Core

Scenario = Callable[..., Awaitable[None]]


def scenario(function: Scenario, *, label: str | None = None, **params: Any) -> ParameterSet:
    """``function`` (a test of ``tests/ledger``) with ``params``, shown as
    ``module:test[label]`` (the label defaults to the parameters)."""
    module = function.__module__.rsplit(".", 1)[-1].removeprefix("test_")
    name = function.__name__.removeprefix("test_")
    shown = label or ",".join(str(getattr(value, "value", value)) for value in params.values())
    return pytest.param(function, params, id=f"{module}:{name}" + (f"[{shown}]" if shown else ""))


SCENARIOS = [
    *[
        scenario(review.test_a_held_command_moves_nothing_and_waits_with_its_reason, kind=kind)
        for kind in (DEBIT, CREDIT, TRANSFER)
    ],
    scenario(review.test_a_redelivered_command_does_not_apply_a_held_leg),
    scenario(review.test_release_applies_the_command_with_the_usual_decisions, kind=TRANSFER),
    scenario(review.test_release_of_a_command_that_cannot_be_paid_declines_it),
    scenario(review.test_reject_fails_the_leg_with_fraud_rejected_and_moves_nothing),
    *[
        scenario(
            review.test_a_review_is_idempotent_and_the_other_decision_is_refused,
            decision=decision,
        )
        for decision in (review.RELEASED, review.REJECTED)
    ],
    scenario(review.test_customers_get_not_found_and_auditors_forbidden, decision=review.RELEASED),
    scenario(review.test_a_movement_that_was_never_held_cannot_be_reviewed),
    scenario(review.test_the_queue_lists_held_commands_oldest_first_for_staff_only),
    scenario(debits.test_a_debit_takes_the_amount_and_answers_with_its_leg),
    scenario(debits.test_debits_without_a_reference_are_each_a_new_movement),
    scenario(credits.test_a_teller_credit_adds_the_amount),
    scenario(credits.test_crediting_a_tenth_ten_times_gives_exactly_one),
    scenario(credits.test_a_credit_up_to_the_limit_is_taken_one_cent_more_is_refused),
    scenario(transfers.test_a_transfer_moves_money_and_links_its_two_legs),
    scenario(transfers.test_a_transfer_into_a_full_account_is_refused_and_takes_nothing),
    *[
        scenario(
            declines.test_a_decline_is_a_failed_leg_that_moves_no_money,
            label=name,
            decline=declines.DECLINES[name],
        )
        for name in (
            "debit-insufficient-funds",
            "transfer-insufficient-funds",
            "credit-inactive-account",
            "transfer-inactive-source",
            "transfer-inactive-destination",
        )
    ],
    scenario(declines.test_concurrent_debits_never_overdraw),
    *[
        scenario(idempotency.test_the_same_request_again_replays_the_first_answer, kind=kind)
        for kind in (DEBIT, CREDIT, TRANSFER)
    ],
    scenario(
        idempotency.test_a_replayed_decline_stays_declined_after_the_cause_is_gone,
        label="insufficient-funds",
        reason="insufficient-funds",
        error_class=InsufficientFundsDeclined,
    ),
    *[
        scenario(
            idempotency.test_the_same_key_with_other_parameters_is_a_conflict_naming_them, name=name
        )
        for name in ("amount", "no-description", "transfer-after-debit")
    ],
    scenario(idempotency.test_the_same_reference_on_different_accounts_are_different_requests),
    scenario(idempotency.test_concurrent_duplicates_apply_exactly_once, kind=DEBIT),
    scenario(idempotency.test_concurrent_duplicates_apply_exactly_once, kind=TRANSFER),
    scenario(idempotency.test_concurrent_duplicates_of_a_decline_are_declined_once),
    scenario(
        commands.test_submit_stores_a_pending_leg_and_a_command_and_moves_nothing, kind=TRANSFER
    ),
    *[
        scenario(commands.test_applying_a_command_completes_its_pending_leg_in_place, kind=kind)
        for kind in (DEBIT, TRANSFER)
    ],
    scenario(commands.test_a_redelivered_command_is_already_done, kind=CREDIT),
    scenario(commands.test_concurrent_deliveries_of_one_command_apply_it_once),
    scenario(commands.test_a_command_without_a_leg_runs_like_a_synchronous_request, kind=DEBIT),
    scenario(authorization.test_another_customers_account_reads_as_a_missing_one, read="history"),
    scenario(authorization.test_another_customers_transaction_reads_as_a_missing_one),
    scenario(authorization.test_an_auditor_reads_everything),
    scenario(
        authorization.test_tellers_and_admins_move_money_on_any_account,
        kind=TRANSFER,
        role=Role.ADMIN,
    ),
    scenario(
        accounts.test_a_customer_opens_their_own_account_with_a_zero_balance, account_type="savings"
    ),
    scenario(accounts.test_the_owner_must_be_an_active_customer, owner="inactive-customer"),
    scenario(accounts.test_staff_freeze_an_account_and_it_moves_no_money, role=Role.TELLER),
    scenario(history.test_pages_visit_every_leg_once_newest_first, page_size=2),
    scenario(history.test_a_history_holds_only_its_accounts_legs),
    scenario(history.test_a_leg_in_the_history_is_the_leg_that_was_answered),
    scenario(reconciliation.test_the_books_balance_after_random_movements, seed=7, operations=80),
    # Overdraft limits: the conditional debit, the group function and a limit change.
    scenario(overdraft.test_staff_set_a_limit_and_the_account_may_go_down_to_it, role=Role.TELLER),
    scenario(overdraft.test_a_limit_can_be_lowered_to_what_the_account_uses_but_not_below),
    scenario(overdraft.test_a_change_is_audited_and_the_same_limit_again_changes_nothing),
    scenario(overdraft.test_credits_and_transfers_into_an_overdrawn_account_repay_it),
    scenario(overdraft.test_a_batch_uses_the_limit_item_by_item),
    scenario(overdraft.test_a_command_applied_later_uses_the_limit_of_then),
    scenario(overdraft.test_concurrent_debits_stop_exactly_at_the_limit),
    scenario(overdraft.test_lowering_the_limit_while_debits_race_never_leaves_a_balance_below_it),
    # Groups: what PostgreSQL decides in one call must match the reference decisions.
    *[
        scenario(getattr(groups, name))
        for name in dir(groups)
        if name.startswith("test_") and callable(getattr(groups, name))
    ],
    # Holds: authorize, capture, void, expiry, idempotency and who may, on every store.
    *[
        scenario(getattr(holds, name))
        for name in dir(holds)
        if name.startswith("test_") and inspect.iscoroutinefunction(getattr(holds, name))
    ],
]


async def count_sql_journal(unit_of_work: UnitOfWork) -> int:
    async with unit_of_work.read() as store:
        if not isinstance(store, SqlLedgerStore):
            raise TypeError(f"not a SQL store: {store!r}")
        result = await store.connection.execute(select(func.count()).select_from(transaction_logs))
        return int(result.scalar_one())


@pytest.fixture
def contract_core(any_core: Core) -> Core:
    """``any_core``, able to count journal entries on the SQL stores too (for ``books``)."""
    if any_core.count_journal is None:
        unit_of_work = any_core.unit_of_work

        async def count_journal() -> int:
            return await count_sql_journal(unit_of_work)

        any_core.count_journal = count_journal
    return any_core


@pytest.mark.parametrize(("run", "params"), SCENARIOS)
async def test_scenario(contract_core: Core, run: Scenario, params: dict[str, Any]) -> None:
    await run(contract_core, **params)


async def test_debit_decline_and_replay_agree(any_core: Core) -> None:
    core = any_core
    customer = await core.user()
    account = await core.account(customer, "100.00")
    debit = DebitOrCredit(account.account_id, Decimal("30.00"), "USD", reference_id="k1")

    first = await core.movements.debit(customer, debit)
    again = await core.movements.debit(customer, debit)
    with pytest.raises(InsufficientFundsDeclined) as declined:
        await core.movements.debit(
            customer, DebitOrCredit(account.account_id, Decimal("71.00"), "USD", reference_id="k2")
        )
    with pytest.raises(IdempotencyConflict):
        await core.movements.debit(
            customer, DebitOrCredit(account.account_id, Decimal("31.00"), "USD", reference_id="k1")
        )

    assert first.replayed is False and again.replayed is True
    assert again.transaction == first.transaction
    assert declined.value.replayed is False
    assert await core.available(account) == Decimal("70.00")
    assert (await core.balance(account)).version == 3
    assert [(row[2], row[3].get("amount")) for row in await core.outbox()] == [
        ("transaction.completed", "100.00"),
        ("balance.updated", None),
        ("transaction.completed", "30.00"),
        ("balance.updated", None),
        ("transaction.failed", "71.00"),
    ]
    assert (await core.reconcile()).clean


async def test_transfer_and_async_command_agree(any_core: Core) -> None:
    core = any_core
    alice, bob = await core.user(), await core.user()
    source = await core.account(alice, "50.00")
    destination = await core.account(bob)

    moved = await core.movements.transfer(
        alice,
        TransferRequest(source.account_id, destination.account_id, Decimal("20.00"), "USD"),
    )
    accepted = await core.movements.submit(
        alice,
        moved.transaction.transaction_type,
        TransferRequest(
            source.account_id, destination.account_id, Decimal("5.00"), "USD", None, "a1"
        ),
    )
    assert accepted.transaction.status is TransactionStatus.PENDING

    outcome = await core.movements.apply_command(
        Command(
            accepted.transaction.transaction_id,
            accepted.transaction.transaction_type,
            TransferRequest(
                source.account_id, destination.account_id, Decimal("5.00"), "USD", None, "a1"
            ),
            alice,
        )
    )

    assert outcome.leg is not None and outcome.leg.status is TransactionStatus.COMPLETED
    assert await core.available(source) == Decimal("25.00")
    assert await core.available(destination) == Decimal("25.00")
    assert [row[2] for row in await core.outbox()][-5:] == [
        "transaction.submitted",
        "transaction.completed",
        "balance.updated",
        "transaction.completed",
        "balance.updated",
    ]
    assert (await core.reconcile()).clean
