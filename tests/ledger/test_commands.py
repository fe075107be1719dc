"""Asynchronous movements: ``submit`` accepts at once (a pending leg and a
``transaction.submitted`` event, after the same checks as a synchronous request); applying
the command finishes that leg in place, exactly once; a command that can never succeed is
rejected (its leg fails with the error's code, or a rejection event says so)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal
from uuid import uuid4

import pytest

from banking.domain.errors import (
    AccountNotFound,
    BankingError,
    CurrencyMismatch,
    Forbidden,
    InsufficientFundsDeclined,
)
from banking.domain.records import (
    Command,
    CommandOutcome,
    DebitOrCredit,
    TransactionStatus,
    TransactionType,
)
from tests.ledger.world import (
    CREDIT,
    DEBIT,
    KINDS,
    TRANSFER,
    Request,
    World,
    last_command,
    make_world,
    move,
    request,
)
from tests.support.ledger import Core
from tests.support.memory_store import MemoryUnitOfWork

MOVED = {DEBIT: "90.00", CREDIT: "110.00", TRANSFER: "90.00"}  # Alice's USD after 10.00


async def submit(core: Core, world: World, kind: TransactionType, amount: str = "10.00") -> Command:
    """Submit ``kind`` of ``amount`` on Alice's USD account; the command as the processor
    reads it from the outbox."""
    asked = request(kind, world.usd, amount, destination=world.usd_bob, reference_id="cmd-1")
    await core.movements.submit(world.mover(kind), kind, asked)
    return await last_command(core)


# --- submit -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_submit_stores_a_pending_leg_and_a_command_and_moves_nothing(
    core: Core, kind: TransactionType
) -> None:
    world = await make_world(core)
    before = await core.books()
    asked = request(
        kind,
        world.usd,
        "10.00",
        destination=world.usd_bob,
        description="later",
        reference_id="cmd-1",
    )

    accepted = await core.movements.submit(world.mover(kind), kind, asked)

    leg = accepted.transaction
    assert accepted.replayed is False
    assert leg.status is TransactionStatus.PENDING
    assert leg.transaction_type is kind
    assert (leg.amount, leg.currency, leg.description, leg.reference_id) == (
        Decimal("10.00"),
        "USD",
        "later",
        "cmd-1",
    )
    assert leg.available_balance_after is None and leg.failure_code is None
    after = await core.books()
    assert after.balances == before.balances
    assert set(after.legs) - set(before.legs) == {leg.transaction_id}
    assert after.journal_entries == before.journal_entries + 1
    [(topic, key, event_type, payload)] = after.events[len(before.events) :]
    assert (topic, key, event_type) == (
        "banking.transactions.submitted",
        str(world.usd.account_id),
        "transaction.submitted",
    )
    assert payload["transaction_id"] == str(leg.transaction_id)
    assert payload["command"] == {DEBIT: "debit", CREDIT: "credit", TRANSFER: "transfer"}[kind]
    assert (payload["amount"], payload["currency"], payload["reference_id"]) == (
        "10.00",
        "USD",
        "cmd-1",
    )
    assert payload["requested_by"]["user_id"] == str(world.mover(kind).user_id)
    command = await last_command(core)
    assert (command.transaction_id, command.kind, command.actor) == (
        leg.transaction_id,
        kind,
        world.mover(kind),
    )


async def test_submit_is_journaled_as_pending(
    core: Core, world: World, memory: MemoryUnitOfWork
) -> None:
    entries = len(memory.books.journal)

    accepted = await core.movements.submit(world.alice, DEBIT, request(DEBIT, world.usd, "2.00"))

    [entry] = memory.books.journal[entries:]
    assert (entry.transaction_id, entry.event_type) == (
        accepted.transaction.transaction_id,
        "pending",
    )
    assert entry.created_by == world.alice.username


@pytest.mark.parametrize(
    ("name", "error_class", "code"),
    [
        ("unknown-account", AccountNotFound, "ACCOUNT_NOT_FOUND"),
        ("another-customers-account", AccountNotFound, "ACCOUNT_NOT_FOUND"),
        ("customer-credit", Forbidden, "FORBIDDEN"),
        ("auditor", Forbidden, "FORBIDDEN"),
        ("currency-mismatch", CurrencyMismatch, "CURRENCY_MISMATCH"),
        ("unknown-destination", AccountNotFound, "ACCOUNT_NOT_FOUND"),
        ("destination-in-another-currency", CurrencyMismatch, "CURRENCY_MISMATCH"),
    ],
)
async def test_submit_refuses_at_once_what_could_never_succeed(
    core: Core, world: World, name: str, error_class: type[BankingError], code: str
) -> None:
    kind: TransactionType = DEBIT
    actor = world.alice
    asked: Request = request(DEBIT, world.usd, "1.00")
    if name == "unknown-account":
        asked = request(DEBIT, uuid4(), "1.00")
    elif name == "another-customers-account":
        asked = request(DEBIT, world.usd_bob, "1.00")
    elif name == "customer-credit":
        kind = CREDIT
    elif name == "auditor":
        actor = world.auditor
    elif name == "currency-mismatch":
        asked = request(DEBIT, world.usd, "1.00", currency="EUR")
    elif name == "unknown-destination":
        kind, asked = TRANSFER, request(TRANSFER, world.usd, "1.00", destination=uuid4())
    else:
        kind, asked = TRANSFER, request(TRANSFER, world.usd, "1.00", destination=world.jpy_bob)
    before = await core.books()

    with pytest.raises(error_class) as refused:
        await core.movements.submit(actor, kind, asked)

    assert refused.value.code == code
    assert await core.books() == before


@pytest.mark.parametrize("cause", ["short-of-funds", "account-frozen"])
async def test_submit_accepts_what_only_the_books_can_decide(
    core: Core, world: World, cause: str
) -> None:
    """Funds and activity are decided when the command is applied, not when it is accepted."""
    amount = "500.00" if cause == "short-of-funds" else "1.00"
    if cause == "account-frozen":
        await core.accounts.set_active(world.teller, world.usd.account_id, is_active=False)

    accepted = await core.movements.submit(world.alice, DEBIT, request(DEBIT, world.usd, amount))

    assert accepted.transaction.status is TransactionStatus.PENDING


# --- apply --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_applying_a_command_completes_its_pending_leg_in_place(
    core: Core, kind: TransactionType
) -> None:
    world = await make_world(core)
    command = await submit(core, world, kind)
    before = await core.books()

    outcome = await core.movements.apply_command(command)

    assert outcome.rejected_code is None and outcome.already_done is False
    assert outcome.leg is not None
    assert outcome.leg.transaction_id == command.transaction_id
    assert outcome.leg.status is TransactionStatus.COMPLETED
    stored = await core.movements.get_transaction(world.teller, command.transaction_id)
    assert stored.status is TransactionStatus.COMPLETED
    assert stored.available_balance_after == Decimal(MOVED[kind])
    assert stored.created_at == before.legs[command.transaction_id].created_at
    assert await core.available(world.usd) == Decimal(MOVED[kind])
    after = await core.books()
    new_legs = set(after.legs) - set(before.legs)
    if kind is TRANSFER:
        assert new_legs == {stored.related_transaction_id}
        assert await core.available(world.usd_bob) == Decimal("20.00")
    else:
        assert new_legs == set()
    assert after.event_types()[len(before.events) :] == [
        "transaction.completed",
        "balance.updated",
    ] * (2 if kind is TRANSFER else 1)
    assert (await core.reconcile()).clean


@pytest.mark.parametrize("cause", ["short-of-funds", "account-frozen-after-submit"])
async def test_a_command_the_books_refuse_fails_its_leg_in_place(
    core: Core, world: World, cause: str
) -> None:
    command = await submit(core, world, DEBIT, "500.00" if cause == "short-of-funds" else "1.00")
    if cause == "account-frozen-after-submit":
        await core.accounts.set_active(world.teller, world.usd.account_id, is_active=False)
    before = await core.books()

    outcome = await core.movements.apply_command(command)

    code = "INSUFFICIENT_FUNDS" if cause == "short-of-funds" else "ACCOUNT_INACTIVE"
    assert outcome.leg is not None and outcome.leg.status is TransactionStatus.FAILED
    assert outcome.leg.failure_code == code
    assert outcome.rejected_code is None  # a decline, not a rejection
    after = await core.books()
    assert after.balances == before.balances
    assert set(after.legs) == set(before.legs)
    assert after.legs[command.transaction_id].status is TransactionStatus.FAILED
    assert after.journal_entries == before.journal_entries + 1
    assert after.event_types()[len(before.events) :] == ["transaction.failed"]


async def apply_once_then_again(core: Core, command: Command) -> tuple[CommandOutcome, ...]:
    first = await core.movements.apply_command(command)
    books = await core.books()
    again = await core.movements.apply_command(command)
    assert await core.books() == books  # a redelivery changes nothing
    return first, again


@pytest.mark.parametrize("kind", KINDS)
async def test_a_redelivered_command_is_already_done(core: Core, kind: TransactionType) -> None:
    world = await make_world(core)
    command = await submit(core, world, kind)

    first, again = await apply_once_then_again(core, command)

    assert first.already_done is False and again.already_done is True
    assert again.leg == first.leg
    assert await core.available(world.usd) == Decimal(MOVED[kind])


@pytest.mark.parametrize("outcome", ["declined", "rejected"])
async def test_a_redelivered_finished_command_stays_finished(
    core: Core, world: World, outcome: str
) -> None:
    command = await submit(core, world, DEBIT, "500.00")
    if outcome == "rejected":
        command = replace(command, actor=world.auditor)

    first, again = await apply_once_then_again(core, command)

    assert first.leg is not None and first.leg.status is TransactionStatus.FAILED
    assert again.already_done is True
    assert again.leg == first.leg
    assert await core.available(world.usd) == Decimal("100.00")


async def test_concurrent_deliveries_of_one_command_apply_it_once(core: Core) -> None:
    world = await make_world(core)
    command = await submit(core, world, TRANSFER)

    outcomes = await asyncio.gather(*[core.movements.apply_command(command) for _ in range(5)])

    assert sorted(outcome.already_done for outcome in outcomes) == [False] + [True] * 4
    assert len({outcome.leg for outcome in outcomes}) == 1
    assert await core.available(world.usd) == Decimal("90.00")
    assert await core.available(world.usd_bob) == Decimal("20.00")
    assert (await core.reconcile()).clean


# --- reject ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        ("actor-is-an-auditor", "FORBIDDEN"),
        ("description-with-a-control-character", "VALIDATION_ERROR"),
        ("balance-limit-reached-meanwhile", "VALIDATION_ERROR"),
    ],
)
async def test_a_bad_command_fails_its_leg_with_the_errors_code(
    core: Core, world: World, bad: str, code: str
) -> None:
    command = await submit(core, world, CREDIT if bad.startswith("balance") else DEBIT)
    if bad == "actor-is-an-auditor":
        command = replace(command, actor=world.auditor)
    elif bad == "description-with-a-control-character":
        command = replace(command, request=replace(command.request, description="a\x00b"))
    else:
        await core.movements.credit(world.teller, request(CREDIT, world.usd, "9999999999999899.99"))
    before = await core.books()

    outcome = await core.movements.apply_command(command)

    assert outcome.rejected_code == code
    assert outcome.leg is not None
    assert outcome.leg.transaction_id == command.transaction_id
    assert outcome.leg.status is TransactionStatus.FAILED
    assert outcome.leg.failure_code == code
    assert outcome.leg.failure_reason
    after = await core.books()
    assert after.balances == before.balances
    assert after.legs[command.transaction_id] == outcome.leg
    assert after.journal_entries == before.journal_entries + 1
    assert after.event_types()[len(before.events) :] == ["transaction.failed"]


async def test_a_rejected_command_answers_a_retry_of_its_key_with_the_same_error(
    core: Core, world: World
) -> None:
    command = await submit(core, world, DEBIT)
    rejected = await core.movements.apply_command(replace(command, actor=world.auditor))
    books = await core.books()

    with pytest.raises(Forbidden) as retried:
        await move(core, world.alice, DEBIT, command.request)

    assert rejected.leg is not None
    assert retried.value.replayed is True
    assert retried.value.transaction_id == command.transaction_id
    assert retried.value.message == rejected.leg.failure_reason == "role auditor cannot move money"
    assert await core.books() == books
    assert await core.available(world.usd) == Decimal("100.00")


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        ("unknown-account", "ACCOUNT_NOT_FOUND"),
        ("currency-mismatch", "CURRENCY_MISMATCH"),
        ("customer-credit", "FORBIDDEN"),
        ("reference-too-long", "VALIDATION_ERROR"),
    ],
)
async def test_a_bad_command_without_a_leg_is_rejected_by_an_event(
    core: Core, world: World, bad: str, code: str
) -> None:
    asked = DebitOrCredit(world.usd.account_id, Decimal("1.00"), "USD", None, "no-leg")
    kind = DEBIT
    if bad == "unknown-account":
        asked = replace(asked, account_id=uuid4())
    elif bad == "currency-mismatch":
        asked = replace(asked, currency="EUR")
    elif bad == "customer-credit":
        kind = CREDIT
    else:
        asked = replace(asked, reference_id="r" * 256)
    command = Command(uuid4(), kind, asked, world.alice)
    before = await core.books()

    outcome = await core.movements.apply_command(command)

    assert (outcome.leg, outcome.rejected_code) == (None, code)
    after = await core.books()
    assert (after.balances, after.legs, after.journal_entries) == (
        before.balances,
        before.legs,
        before.journal_entries,
    )
    [(topic, _key, event_type, payload)] = after.events[len(before.events) :]
    assert (topic, event_type) == ("banking.transactions.failed", "transaction.rejected")
    assert payload["transaction_id"] == str(command.transaction_id)
    assert payload["failure_code"] == code
    assert payload["failure_reason"]


# --- a command with no pending leg (from another service) ------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_a_command_without_a_leg_runs_like_a_synchronous_request(
    core: Core, kind: TransactionType
) -> None:
    world = await make_world(core)
    asked = request(kind, world.usd, "10.00", destination=world.usd_bob, reference_id="ext-1")
    command = Command(uuid4(), kind, asked, world.mover(kind))

    first = await core.movements.apply_command(command)
    books = await core.books()
    again = await core.movements.apply_command(command)

    assert first.leg is not None and first.leg.status is TransactionStatus.COMPLETED
    assert first.leg.transaction_id == command.transaction_id
    assert (first.already_done, again.already_done) == (False, True)
    assert again.leg == first.leg
    assert await core.books() == books
    assert await core.available(world.usd) == Decimal(MOVED[kind])


async def test_a_command_without_a_leg_is_declined_like_a_synchronous_request(
    core: Core, world: World
) -> None:
    command = Command(uuid4(), DEBIT, request(DEBIT, world.usd, "500.00"), world.alice)
    before = await core.books()

    outcome = await core.movements.apply_command(command)

    assert outcome.rejected_code is None
    assert outcome.leg is not None and outcome.leg.failure_code == "INSUFFICIENT_FUNDS"
    after = await core.books()
    assert after.balances == before.balances
    assert after.legs[command.transaction_id].status is TransactionStatus.FAILED
    assert after.event_types()[len(before.events) :] == ["transaction.failed"]


async def test_a_command_whose_reference_was_used_by_the_same_request_is_already_done(
    core: Core, world: World
) -> None:
    asked = request(DEBIT, world.usd, "10.00", reference_id="paid-1")
    paid = await core.movements.debit(world.alice, asked)
    books = await core.books()

    outcome = await core.movements.apply_command(Command(uuid4(), DEBIT, asked, world.alice))

    assert outcome.already_done is True
    assert outcome.leg == paid.transaction
    assert await core.books() == books


async def test_a_command_whose_reference_was_used_by_another_request_is_rejected(
    core: Core, world: World
) -> None:
    await core.movements.debit(world.alice, request(DEBIT, world.usd, "10.00", reference_id="k"))
    books = await core.books()
    command = Command(
        uuid4(), DEBIT, request(DEBIT, world.usd, "20.00", reference_id="k"), world.alice
    )

    outcome = await core.movements.apply_command(command)

    assert (outcome.leg, outcome.rejected_code) == (None, "IDEMPOTENCY_CONFLICT")
    after = await core.books()
    assert after.balances == books.balances and after.legs == books.legs
    assert after.event_types()[len(books.events) :] == ["transaction.rejected"]
    assert await core.available(world.usd) == Decimal("90.00")


async def test_a_synchronous_retry_after_apply_replays_the_finished_leg(
    core: Core, world: World
) -> None:
    command = await submit(core, world, DEBIT)
    applied = await core.movements.apply_command(command)

    again = await move(core, world.alice, DEBIT, command.request)

    assert again.replayed is True
    assert again.transaction == applied.leg
    assert again.transaction.status is TransactionStatus.COMPLETED
    assert await core.available(world.usd) == Decimal("90.00")


async def test_a_synchronous_retry_after_a_declined_apply_is_declined(
    core: Core, world: World
) -> None:
    command = await submit(core, world, DEBIT, "500.00")
    await core.movements.apply_command(command)

    with pytest.raises(InsufficientFundsDeclined) as declined:
        await move(core, world.alice, DEBIT, command.request)

    assert declined.value.replayed is True
    assert declined.value.transaction_id == command.transaction_id
