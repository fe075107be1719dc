"""Idempotency with Stripe's semantics: the key is ``(account, reference_id)`` of the
initiating leg. The same request again gets the first answer (declines included) and moves
nothing; other parameters with the same key are ``IDEMPOTENCY_CONFLICT``, naming the fields
that differ; concurrent duplicates apply exactly once."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal

import pytest

from banking.domain.errors import (
    AccountInactiveDeclined,
    BankingError,
    CurrencyMismatch,
    IdempotencyConflict,
    InsufficientFundsDeclined,
)
from banking.domain.records import (
    DebitOrCredit,
    MovementResult,
    TransactionStatus,
    TransactionType,
    TransferRequest,
)
from tests.ledger.world import (
    CREDIT,
    DEBIT,
    KINDS,
    TRANSFER,
    Request,
    World,
    make_world,
    move,
    request,
)
from tests.support.ledger import Core

CONFLICT_MESSAGE = "reference_id was already used with different parameters"


def first_request(world: World, kind: TransactionType, amount: str = "10.00") -> Request:
    return request(kind, world.usd, amount, destination=world.usd_bob, reference_id="key-1")


@pytest.mark.parametrize("kind", KINDS)
async def test_the_same_request_again_replays_the_first_answer(
    core: Core, kind: TransactionType
) -> None:
    world = await make_world(core)
    asked = first_request(world, kind)
    first = await move(core, world.mover(kind), kind, asked)
    books = await core.books()

    again = await move(core, world.mover(kind), kind, asked)

    assert (first.replayed, again.replayed) == (False, True)
    assert again.transaction == first.transaction
    assert await core.books() == books  # no leg, journal entry, event or balance change
    expected = {DEBIT: "90.00", CREDIT: "110.00", TRANSFER: "90.00"}[kind]
    assert await core.available(world.usd) == Decimal(expected)


async def test_a_replay_answers_with_the_balance_of_the_first_time(
    core: Core, world: World
) -> None:
    asked = request(DEBIT, world.usd, "10.00", reference_id="pay-1")
    first = await core.movements.debit(world.alice, asked)
    await core.movements.debit(world.alice, request(DEBIT, world.usd, "50.00"))

    again = await core.movements.debit(world.alice, asked)

    assert again.transaction.available_balance_after == Decimal("90.00")
    assert again.transaction == first.transaction
    assert await core.available(world.usd) == Decimal("40.00")


@pytest.mark.parametrize(
    "change",
    ["funds-are-gone", "account-is-frozen"],
)
async def test_a_replay_of_a_completed_debit_stays_completed(
    core: Core, world: World, change: str
) -> None:
    asked = request(DEBIT, world.usd, "60.00", reference_id="pay-1")
    first = await core.movements.debit(world.alice, asked)
    if change == "funds-are-gone":
        await core.movements.debit(world.alice, request(DEBIT, world.usd, "40.00"))
    else:
        await core.accounts.set_active(world.teller, world.usd.account_id, is_active=False)
    books = await core.books()

    again = await core.movements.debit(world.alice, asked)

    assert again.replayed is True
    assert again.transaction == first.transaction
    assert await core.books() == books


@pytest.mark.parametrize(
    "kind",
    [CREDIT, TRANSFER],
)
async def test_a_replay_of_a_completed_credit_stays_completed_near_the_limit(
    core: Core, world: World, kind: TransactionType
) -> None:
    asked = request(kind, world.usd, "5.00", destination=world.usd_bob, reference_id="key-1")
    receiver = world.usd_bob if kind is TRANSFER else world.usd
    first = await move(core, world.mover(kind), kind, asked)
    # The receiving account fills up to just below the limit afterwards.
    room = Decimal("9999999999999999.99") - await core.available(receiver)
    await core.movements.credit(world.teller, request(CREDIT, receiver, str(room)))
    books = await core.books()

    again = await move(core, world.mover(kind), kind, asked)

    assert again.replayed is True
    assert again.transaction == first.transaction
    assert await core.books() == books


@pytest.mark.parametrize(
    ("reason", "error_class"),
    [("insufficient-funds", InsufficientFundsDeclined), ("inactive", AccountInactiveDeclined)],
)
async def test_a_replayed_decline_stays_declined_after_the_cause_is_gone(
    core: Core, reason: str, error_class: type[BankingError]
) -> None:
    world = await make_world(core)
    amount = "500.00" if reason == "insufficient-funds" else "1.00"
    if reason == "inactive":
        await core.accounts.set_active(world.teller, world.usd.account_id, is_active=False)
    asked = request(DEBIT, world.usd, amount, reference_id="too-much")
    with pytest.raises(error_class) as first:
        await core.movements.debit(world.alice, asked)
    books = await core.books()

    with pytest.raises(error_class) as again:
        await core.movements.debit(world.alice, asked)
    assert await core.books() == books
    # Funds arrive, or the account is opened again: the answer to this key does not change.
    if reason == "inactive":
        await core.accounts.set_active(world.teller, world.usd.account_id, is_active=True)
    else:
        await core.movements.credit(world.teller, request(CREDIT, world.usd, "1000.00"))
    books = await core.books()
    with pytest.raises(error_class) as later:
        await core.movements.debit(world.alice, asked)

    assert first.value.replayed is False
    assert again.value.replayed is True and later.value.replayed is True
    assert first.value.transaction_id is not None
    assert again.value.transaction_id == later.value.transaction_id == first.value.transaction_id
    assert again.value.message == later.value.message == first.value.message
    assert await core.books() == books
    expected = "100.00" if reason == "inactive" else "1100.00"
    assert await core.available(world.usd) == Decimal(expected)


EQUIVALENT = {
    "lower-case-currency": lambda r: replace(r, currency="usd"),
    "more-zeros-in-the-amount": lambda r: replace(r, amount=Decimal("10.000")),
    "fewer-zeros-in-the-amount": lambda r: replace(r, amount=Decimal("10")),
    "empty-description-is-no-description": lambda r: replace(r, description=""),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(EQUIVALENT))
async def test_an_equivalent_request_is_the_same_request(
    core: Core, world: World, kind: TransactionType, name: str
) -> None:
    asked = first_request(world, kind)
    first = await move(core, world.mover(kind), kind, asked)
    books = await core.books()

    again = await move(core, world.mover(kind), kind, EQUIVALENT[name](asked))

    assert again.replayed is True
    assert again.transaction == first.transaction
    assert await core.books() == books


def _debit(
    world: World,
    *,
    amount: str = "10.00",
    currency: str = "USD",
    description: str | None = "rent",
) -> DebitOrCredit:
    return DebitOrCredit(world.usd.account_id, Decimal(amount), currency, description, "key-1")


CONFLICTS: dict[str, tuple[TransactionType, str]] = {
    # name: (kind of the second request, the fields named)
    "amount": (DEBIT, "amount differs"),
    "description": (DEBIT, "description differs"),
    "no-description": (DEBIT, "description differs"),
    "amount-and-description": (DEBIT, "amount, description differ"),
    "credit-after-debit": (CREDIT, "transaction_type differs"),
    "transfer-after-debit": (TRANSFER, "transaction_type, destination_account_id differ"),
}


def conflicting(world: World, name: str) -> Request:
    if name == "amount":
        return _debit(world, amount="11.00")
    if name == "description":
        return _debit(world, description="not rent")
    if name == "no-description":
        return _debit(world, description=None)
    if name == "amount-and-description":
        return _debit(world, amount="1.00", description="other")
    if name == "credit-after-debit":
        return _debit(world)
    return TransferRequest(
        world.usd.account_id, world.usd_bob.account_id, Decimal("10.00"), "USD", "rent", "key-1"
    )


@pytest.mark.parametrize("name", list(CONFLICTS))
async def test_the_same_key_with_other_parameters_is_a_conflict_naming_them(
    core: Core, name: str
) -> None:
    world = await make_world(core)
    first = await core.movements.debit(world.alice, _debit(world))
    books = await core.books()
    kind, differ = CONFLICTS[name]

    with pytest.raises(IdempotencyConflict) as conflict:
        await move(core, world.mover(kind), kind, conflicting(world, name))

    assert conflict.value.code == "IDEMPOTENCY_CONFLICT"
    assert conflict.value.message == f"{CONFLICT_MESSAGE}: {differ}"
    assert conflict.value.details["fields"] == differ.rsplit(" ", 1)[0].split(", ")
    assert conflict.value.transaction_id == first.transaction.transaction_id
    assert await core.books() == books
    assert await core.available(world.usd) == Decimal("90.00")


async def test_a_transfer_with_the_same_key_to_another_destination_is_a_conflict(
    core: Core, world: World
) -> None:
    other = await core.account(world.bob)
    first = await core.movements.transfer(
        world.alice,
        request(TRANSFER, world.usd, "10.00", destination=world.usd_bob, reference_id="key-1"),
    )
    books = await core.books()

    with pytest.raises(IdempotencyConflict) as conflict:
        await core.movements.transfer(
            world.alice,
            request(TRANSFER, world.usd, "10.00", destination=other, reference_id="key-1"),
        )

    assert conflict.value.message == f"{CONFLICT_MESSAGE}: destination_account_id differs"
    assert conflict.value.details["fields"] == ["destination_account_id"]
    assert conflict.value.transaction_id == first.transaction.transaction_id
    assert await core.books() == books


async def test_the_same_key_in_another_currency_is_refused_before_the_key_is_looked_at(
    core: Core, world: World
) -> None:
    """An account holds one currency, so a different currency cannot reach the key: the
    request is a currency mismatch, and nothing changes."""
    await core.movements.debit(world.alice, _debit(world))
    books = await core.books()

    with pytest.raises(CurrencyMismatch) as refused:
        await core.movements.debit(world.alice, _debit(world, currency="EUR"))

    assert refused.value.message == "account holds USD, request is in EUR"
    assert await core.books() == books


async def test_a_declined_key_with_a_smaller_amount_is_a_conflict_not_a_new_try(
    core: Core, world: World
) -> None:
    with pytest.raises(InsufficientFundsDeclined) as declined:
        await core.movements.debit(world.alice, _debit(world, amount="500.00"))
    books = await core.books()

    with pytest.raises(IdempotencyConflict) as conflict:
        await core.movements.debit(world.alice, _debit(world, amount="5.00"))

    assert conflict.value.message == f"{CONFLICT_MESSAGE}: amount differs"
    assert conflict.value.transaction_id == declined.value.transaction_id
    assert await core.books() == books
    assert await core.available(world.usd) == Decimal("100.00")


async def test_the_same_reference_on_different_accounts_are_different_requests(
    core: Core,
) -> None:
    customer = await core.user()
    first, second = await core.account(customer, "10.00"), await core.account(customer, "10.00")

    results = [
        await core.movements.debit(customer, request(DEBIT, account, "1.00", reference_id="x"))
        for account in (first, second)
    ]

    assert [result.replayed for result in results] == [False, False]
    assert results[0].transaction.transaction_id != results[1].transaction.transaction_id
    assert await core.available(first) == await core.available(second) == Decimal("9.00")


async def test_a_received_transfer_does_not_use_up_the_receivers_reference(
    core: Core, world: World
) -> None:
    await core.movements.transfer(
        world.alice,
        request(TRANSFER, world.usd, "5.00", destination=world.usd_bob, reference_id="shared"),
    )

    own = await core.movements.debit(
        world.bob, request(DEBIT, world.usd_bob, "15.00", reference_id="shared")
    )

    assert own.replayed is False
    assert own.transaction.transaction_type is TransactionType.DEBIT
    assert await core.available(world.usd_bob) == Decimal("0.00")


@pytest.mark.parametrize("kind", KINDS)
async def test_concurrent_duplicates_apply_exactly_once(core: Core, kind: TransactionType) -> None:
    world = await make_world(core)
    asked = first_request(world, kind)
    books = await core.books()

    results: list[MovementResult] = await asyncio.gather(
        *[move(core, world.mover(kind), kind, asked) for _ in range(20)]
    )

    assert sorted(result.replayed for result in results) == [False] + [True] * 19
    assert len({result.transaction for result in results}) == 1
    after = await core.books()
    assert len(after.legs) - len(books.legs) == (2 if kind is TRANSFER else 1)
    expected = {DEBIT: "90.00", CREDIT: "110.00", TRANSFER: "90.00"}[kind]
    assert await core.available(world.usd) == Decimal(expected)
    assert (await core.reconcile()).clean


async def test_concurrent_duplicates_of_a_decline_are_declined_once(core: Core) -> None:
    world = await make_world(core)
    asked = request(DEBIT, world.usd, "500.00", reference_id="too-much")
    books = await core.books()

    outcomes = await asyncio.gather(
        *[core.movements.debit(world.alice, asked) for _ in range(10)], return_exceptions=True
    )

    assert all(isinstance(outcome, InsufficientFundsDeclined) for outcome in outcomes)
    errors = [o for o in outcomes if isinstance(o, InsufficientFundsDeclined)]
    assert sorted(error.replayed for error in errors) == [False] + [True] * 9
    assert len({error.transaction_id for error in errors}) == 1
    after = await core.books()
    assert len(after.legs) == len(books.legs) + 1
    assert after.event_types()[len(books.events) :] == ["transaction.failed"]
    assert after.balances == books.balances


async def test_a_sync_retry_of_a_submitted_request_replays_its_leg(
    core: Core, world: World
) -> None:
    asked = request(DEBIT, world.usd, "10.00", reference_id="async-1")
    accepted = await core.movements.submit(world.alice, DEBIT, asked)
    books = await core.books()

    again = await core.movements.debit(world.alice, asked)

    assert again.replayed is True
    assert again.transaction == accepted.transaction
    assert again.transaction.status is TransactionStatus.PENDING
    assert await core.books() == books
