"""Movements decided together (``banking.ledger.groups``): a batch's items and a group commit's
requests share one unit of work and one commit, and each keeps the outcome it would have had
alone: a decline is stored as a failed leg, a refusal stores nothing and fails no other item,
a used key replays, and an atomic batch stores everything or nothing."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from uuid import uuid4

import pytest

from banking.domain.errors import (
    AccountNotFound,
    BankingError,
    BatchItemFailed,
    CurrencyMismatch,
    Forbidden,
    IdempotencyConflict,
    InsufficientFundsDeclined,
    ValidationFailed,
)
from banking.domain.records import BatchItem, MovementResult, TransactionStatus
from banking.ledger.groups import GroupCommit
from banking.ledger.movements import BATCH_KEY_LENGTH_MAX, MovementService, keyed_batch
from tests.ledger.world import CREDIT, DEBIT, TRANSFER, World, make_world, request
from tests.support.ledger import Core


def item(kind: object, *args: object, **kwargs: object) -> BatchItem:
    asked = request(kind, *args, **kwargs)  # type: ignore[call-overload]
    return BatchItem(kind, asked)  # type: ignore[arg-type]


def completed(result: object) -> MovementResult:
    assert isinstance(result, MovementResult), result
    assert result.transaction.status is TransactionStatus.COMPLETED
    return result


async def test_each_item_of_a_batch_has_its_own_outcome(core: Core) -> None:
    world = await make_world(core)
    items = [
        item(DEBIT, world.usd, "30.00", reference_id="b-1"),
        item(DEBIT, world.usd, "500.00", reference_id="b-2"),  # declined: 70.00 left
        item(TRANSFER, world.usd, "5.00", destination=uuid4(), reference_id="b-3"),  # unknown
        item(DEBIT, world.usd_bob, "1.00", reference_id="b-4"),  # Bob's: not Alice's to see
        item(DEBIT, world.usd, "1.00", currency="JPY", reference_id="b-5"),
        item(TRANSFER, world.usd, "20.00", destination=world.usd_bob, reference_id="b-6"),
    ]

    results = await core.movements.batch(world.alice, items, atomic=False)

    assert completed(results[0]).transaction.available_balance_after == Decimal("70.00")
    assert isinstance(results[1], InsufficientFundsDeclined)
    assert results[1].transaction_id is not None  # the decline is stored
    assert isinstance(results[2], AccountNotFound)
    assert isinstance(results[3], AccountNotFound)
    assert isinstance(results[4], CurrencyMismatch)
    assert completed(results[5]).transaction.available_balance_after == Decimal("50.00")
    assert await core.available(world.usd) == Decimal("50.00")
    assert await core.available(world.usd_bob) == Decimal("30.00")
    books = await core.books()
    stored = {leg.reference_id: leg.status for leg in books.legs.values()}
    assert stored["b-1"] is TransactionStatus.COMPLETED
    assert stored["b-2"] is TransactionStatus.FAILED
    assert {"b-3", "b-4", "b-5"}.isdisjoint(stored)
    assert (await core.reconcile()).clean


async def test_an_invalid_item_is_refused_alone_and_a_customer_credit_is_forbidden(
    core: Core,
) -> None:
    world = await make_world(core)
    items = [
        item(DEBIT, world.usd, "0.001", reference_id="v-1"),  # too many decimals for USD
        item(CREDIT, world.usd, "5.00", reference_id="v-2"),  # a customer may not credit
        item(DEBIT, world.usd, "5.00", reference_id="v-3"),
    ]

    results = await core.movements.batch(world.alice, items, atomic=False)

    assert isinstance(results[0], ValidationFailed)
    assert isinstance(results[1], Forbidden)
    completed(results[2])
    assert await core.available(world.usd) == Decimal("95.00")


async def test_two_items_with_one_key_apply_once_and_a_changed_one_conflicts(core: Core) -> None:
    world = await make_world(core)
    same = item(DEBIT, world.usd, "10.00", reference_id="dup")
    changed = item(DEBIT, world.usd, "11.00", reference_id="dup")

    results = await core.movements.batch(world.alice, [same, same, changed], atomic=False)

    first, again = completed(results[0]), completed(results[1])
    assert (first.replayed, again.replayed) == (False, True)
    assert again.transaction == first.transaction
    assert isinstance(results[2], IdempotencyConflict)
    assert results[2].details["fields"] == ["amount"]
    assert await core.available(world.usd) == Decimal("90.00")


async def test_a_batch_sent_again_replays_every_item(core: Core) -> None:
    world = await make_world(core)
    items = [
        item(DEBIT, world.usd, "10.00", reference_id="again-1"),
        item(TRANSFER, world.usd, "200.00", destination=world.usd_bob, reference_id="again-2"),
    ]
    first = await core.movements.batch(world.alice, items, atomic=False)
    books = await core.books()

    again = await core.movements.batch(world.alice, items, atomic=False)

    assert completed(again[0]).replayed
    assert completed(again[0]).transaction == completed(first[0]).transaction
    assert isinstance(first[1], InsufficientFundsDeclined)
    assert isinstance(again[1], InsufficientFundsDeclined) and again[1].replayed
    assert again[1].transaction_id == first[1].transaction_id
    assert await core.books() == books


async def test_an_atomic_batch_that_cannot_complete_stores_nothing(core: Core) -> None:
    world = await make_world(core)
    books = await core.books()
    items = [
        item(DEBIT, world.usd, "30.00", reference_id="a-1"),
        item(TRANSFER, world.usd, "20.00", destination=world.usd_bob, reference_id="a-2"),
        item(DEBIT, world.usd, "60.00", reference_id="a-3"),  # 50.00 left: declined
        item(DEBIT, world.usd, "1.00", reference_id="a-4"),
    ]

    with pytest.raises(BatchItemFailed) as failed:
        await core.movements.batch(world.alice, items, atomic=True)

    assert failed.value.index == 2
    assert isinstance(failed.value.error, InsufficientFundsDeclined)
    assert failed.value.error.transaction_id is None  # the decline was not stored either
    assert await core.books() == books


async def test_an_atomic_batch_with_an_invalid_item_stores_nothing(core: Core) -> None:
    world = await make_world(core)
    books = await core.books()
    items = [
        item(DEBIT, world.usd, "1.00", reference_id="i-1"),
        item(DEBIT, world.usd, "-1.00", reference_id="i-2"),
    ]

    with pytest.raises(BatchItemFailed) as failed:
        await core.movements.batch(world.alice, items, atomic=True)

    assert failed.value.index == 1
    assert isinstance(failed.value.error, ValidationFailed)
    assert await core.books() == books


async def test_an_atomic_batch_completes_together_and_replays_together(core: Core) -> None:
    world = await make_world(core)
    items = [
        item(DEBIT, world.usd, "30.00", reference_id="t-1"),
        item(TRANSFER, world.usd, "70.00", destination=world.usd_bob, reference_id="t-2"),
        item(TRANSFER, world.usd_bob, "80.00", destination=world.usd, reference_id="t-3"),
    ]

    results = await core.movements.batch(world.admin, items, atomic=True)
    books = await core.books()
    again = await core.movements.batch(world.admin, items, atomic=True)

    assert [completed(r).replayed for r in results] == [False, False, False]
    assert [completed(r).replayed for r in again] == [True, True, True]
    assert await core.available(world.usd) == Decimal("80.00")
    assert await core.available(world.usd_bob) == Decimal("0.00")
    assert await core.books() == books


async def test_a_batch_needs_items_and_has_a_limit(core: Core) -> None:
    world = await make_world(core)
    books = await core.books()
    too_many = [item(DEBIT, world.usd, "0.01")] * 1001

    for items in ([], too_many):
        with pytest.raises(ValidationFailed) as refused:
            await core.movements.batch(world.alice, items, atomic=False)
        assert refused.value.field == "items"
    assert await core.books() == books


async def test_a_groups_events_follow_its_items_per_account(core: Core) -> None:
    world = await make_world(core)
    before = len((await core.books()).events)
    items = [
        item(TRANSFER, world.usd, "1.00", destination=world.usd_bob, reference_id="o-1"),
        item(TRANSFER, world.usd_bob, "2.00", destination=world.usd, reference_id="o-2"),
        item(DEBIT, world.usd, "3.00", reference_id="o-3"),
    ]

    await core.movements.batch(world.admin, items, atomic=False)

    events = (await core.books()).events[before:]
    versions = [
        (key, payload["version"])
        for _topic, key, kind, payload in events
        if kind == "balance.updated"
    ]
    for account in (world.usd, world.usd_bob):
        mine = [version for key, version in versions if key == str(account.account_id)]
        assert mine == sorted(mine) and len(mine) == len(set(mine))
    usd_references = [
        payload["reference_id"]
        for _topic, key, kind, payload in events
        if kind == "transaction.completed" and key == str(world.usd.account_id)
    ]
    assert usd_references == ["o-1", "o-2", "o-3"]


async def test_group_commit_answers_each_request_with_its_own_outcome(core: Core) -> None:
    world: World = await make_world(core)
    group_commit = GroupCommit(core.unit_of_work, window_seconds=0.01, max_items=50)
    movements = MovementService(core.unit_of_work, group_commit=group_commit)
    runs_before = getattr(core.unit_of_work, "runs", None)

    async def debit(amount: str, key: str) -> MovementResult | BankingError:
        try:
            return await movements.debit(
                world.alice, request(DEBIT, world.usd, amount, reference_id=key)
            )
        except BankingError as error:
            return error

    results = await asyncio.gather(
        debit("40.00", "g-1"),
        debit("40.00", "g-1"),  # the same key in the same group: one application
        debit("50.00", "g-2"),
        debit("30.00", "g-3"),  # declined: 10.00 left after g-1 and g-2
        movements.transfer(
            world.alice,
            request(TRANSFER, world.usd, "1.00", destination=uuid4(), reference_id="g-4"),
        ),
        return_exceptions=True,
    )

    first, again = completed(results[0]), completed(results[1])
    assert again.replayed and again.transaction == first.transaction
    assert completed(results[2]).transaction.available_balance_after == Decimal("10.00")
    assert isinstance(results[3], InsufficientFundsDeclined)
    assert isinstance(results[4], AccountNotFound)
    assert await core.available(world.usd) == Decimal("10.00")
    if runs_before is not None:  # the in-memory store counts its units of work
        assert core.unit_of_work.runs == runs_before + 1
    assert (await core.reconcile()).clean


async def test_a_batch_key_names_the_items_without_their_own_key(core: Core) -> None:
    world = await make_world(core)
    items = [
        item(DEBIT, world.usd, "1.00"),
        item(DEBIT, world.usd, "2.00", reference_id="mine"),
    ]

    keyed = keyed_batch(items, "payroll")
    results = await core.movements.batch(world.alice, keyed, atomic=False)

    assert [completed(r).transaction.reference_id for r in results] == ["payroll:0", "mine"]
    books = await core.books()
    for bad in ("", "x" * (BATCH_KEY_LENGTH_MAX + 1), "tab\there"):
        with pytest.raises(ValidationFailed) as refused:
            keyed_batch(items, bad)
        assert refused.value.field == "idempotency_key"
    assert await core.books() == books
