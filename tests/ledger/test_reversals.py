"""Reversals in the core (no database, no door): a reversal is a movement in the opposite
direction linked to the original, decided like any movement (it cannot overdraw), never more
than the original in total, idempotent, staff-only except a customer's refund of a transfer
they received; another customer's movement is not found. The scenarios use the ``Core`` API
only, so ``tests/storage/test_reversals_contract.py`` runs them on SQLite and PostgreSQL too.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID, uuid4

import pytest

from banking.domain.errors import (
    AccountInactiveDeclined,
    Forbidden,
    IdempotencyConflict,
    InsufficientFundsDeclined,
    TransactionNotFound,
    TransactionNotReversible,
    ValidationFailed,
)
from banking.domain.records import (
    MovementResult,
    ReversalRequest,
    Reversals,
    Transaction,
    TransactionStatus,
    TransactionType,
)
from banking.domain.roles import Actor, Role
from banking.ledger.reversals import (
    amount_to_reverse,
    check_reversal,
    fingerprint_of,
    plan_reversal,
    require_may_reverse,
    require_reversible,
)
from tests.ledger.world import CREDIT, DEBIT, TRANSFER, make_world, request
from tests.support.ledger import Books, Core

REASON = "customer dispute 42"


def reversal(
    original: UUID | MovementResult,
    amount: str | None = None,
    *,
    reason: str = REASON,
    reference_id: str | None = None,
) -> ReversalRequest:
    transaction_id = (
        original.transaction.transaction_id if isinstance(original, MovementResult) else original
    )
    return ReversalRequest(
        transaction_id,
        reason,
        None if amount is None else Decimal(amount),
        reference_id,
    )


async def reversed_of(core: Core, actor: Actor, transaction_id: UUID) -> Reversals:
    _, reversals = await core.movements.get_reversals(actor, transaction_id)
    return reversals


async def unchanged(core: Core, books: Books, original: MovementResult) -> None:
    """Nothing moved: no balance, leg, journal entry, event, nor the original's cap."""
    assert await core.books() == books
    auditor = Actor(uuid4(), "inspector", Role.AUDITOR)
    before = books.legs[original.transaction.transaction_id]
    assert (await core.movements.get_transaction(auditor, before.transaction_id)) == before


# --- the three kinds -------------------------------------------------------------------


async def test_reversing_a_debit_credits_it_back_linked_to_the_original(core: Core) -> None:
    world = await make_world(core)
    debit = await core.movements.debit(world.alice, request(DEBIT, world.usd, "30.00"))

    reversed_ = await core.movements.reverse(world.teller, reversal(debit))

    leg = reversed_.transaction
    assert reversed_.replayed is False
    assert leg.transaction_type is TransactionType.CREDIT
    assert (leg.account_id, leg.amount, leg.status) == (
        world.usd.account_id,
        Decimal("30.00"),
        TransactionStatus.COMPLETED,
    )
    assert leg.reverses_transaction_id == debit.transaction.transaction_id
    assert leg.description == REASON
    assert leg.available_balance_after == Decimal("100.00")
    assert await core.available(world.usd) == Decimal("100.00")
    shown = await reversed_of(core, world.alice, debit.transaction.transaction_id)
    assert shown == Reversals(Decimal("30.00"), (leg.transaction_id,))
    assert (await core.reconcile()).clean


async def test_a_credit_is_reversed_in_parts_then_what_is_left(core: Core) -> None:
    world = await make_world(core)
    credit = await core.movements.credit(world.teller, request(CREDIT, world.usd, "50.00"))

    part = await core.movements.reverse(world.teller, reversal(credit, "20.00"))
    rest = await core.movements.reverse(world.admin, reversal(credit))

    assert part.transaction.transaction_type is TransactionType.DEBIT
    assert (part.transaction.amount, rest.transaction.amount) == (
        Decimal("20.00"),
        Decimal("30.00"),
    )
    assert await core.available(world.usd) == Decimal("100.00")
    shown = await reversed_of(core, world.teller, credit.transaction.transaction_id)
    assert shown.reversed_amount == Decimal("50.00")
    assert shown.reversal_ids == (part.transaction.transaction_id, rest.transaction.transaction_id)
    books = await core.books()
    with pytest.raises(ValidationFailed) as refused:
        await core.movements.reverse(world.teller, reversal(credit, "0.01"))
    assert refused.value.field == "amount"
    assert "nothing is left to reverse" in refused.value.message
    await unchanged(core, books, credit)
    assert (await core.reconcile()).clean


async def test_a_transfer_is_reversed_back_from_either_leg(core: Core) -> None:
    world = await make_world(core)
    transfer = await core.movements.transfer(
        world.alice, request(TRANSFER, world.usd, "40.00", destination=world.usd_bob)
    )
    out_id = transfer.transaction.transaction_id
    in_id = transfer.transaction.related_transaction_id
    assert in_id is not None

    # Bob refunds part of what he received (a customer may: the money came into his account).
    refund = await core.movements.reverse(world.bob, reversal(in_id, "15.00"))
    rest = await core.movements.reverse(world.teller, reversal(out_id))

    back = refund.transaction
    assert back.transaction_type is TransactionType.TRANSFER_OUT
    assert (back.account_id, back.counterparty_account_id) == (
        world.usd_bob.account_id,
        world.usd.account_id,
    )
    assert back.reverses_transaction_id == out_id
    assert rest.transaction.amount == Decimal("25.00")
    assert await core.available(world.usd) == Decimal("100.00")
    assert await core.available(world.usd_bob) == Decimal("10.00")
    # Each side sees the reversal legs on its own account.
    alice_side = await reversed_of(core, world.alice, out_id)
    bob_side = await reversed_of(core, world.bob, in_id)
    assert alice_side.reversed_amount == bob_side.reversed_amount == Decimal("40.00")
    assert bob_side.reversal_ids == (back.transaction_id, rest.transaction.transaction_id)
    assert alice_side.reversal_ids == (
        back.related_transaction_id,
        rest.transaction.related_transaction_id,
    )
    books = await core.books()
    in_legs = [books.legs[leg_id] for leg_id in alice_side.reversal_ids]
    assert {leg.transaction_type for leg in in_legs} == {TransactionType.TRANSFER_IN}
    assert {leg.reverses_transaction_id for leg in in_legs} == {out_id}
    assert (await core.reconcile()).clean


async def test_a_reversal_publishes_its_legs_linked_to_the_original(core: Core) -> None:
    world = await make_world(core)
    transfer = await core.movements.transfer(
        world.alice, request(TRANSFER, world.usd, "5.00", destination=world.usd_bob)
    )
    before = len(await core.outbox())

    await core.movements.reverse(world.teller, reversal(transfer))

    published = (await core.outbox())[before:]
    assert [row[2] for row in published] == [
        "transaction.completed",
        "balance.updated",
        "transaction.completed",
        "balance.updated",
    ]
    legs = [row[3] for row in published if row[2] == "transaction.completed"]
    original = str(transfer.transaction.transaction_id)
    assert [leg["reverses_transaction_id"] for leg in legs] == [original, original]
    assert [leg["transaction_type"] for leg in legs] == ["transfer_out", "transfer_in"]


# --- the money must still be there --------------------------------------------------------


async def test_reversing_a_credit_whose_money_is_gone_declines_and_counts_nothing(
    core: Core,
) -> None:
    world = await make_world(core)
    credit = await core.movements.credit(world.teller, request(CREDIT, world.usd_bob, "50.00"))
    await core.movements.debit(world.bob, request(DEBIT, world.usd_bob, "45.00"))

    with pytest.raises(InsufficientFundsDeclined) as declined:
        await core.movements.reverse(world.teller, reversal(credit, reference_id="rv-1"))

    failed_id = declined.value.transaction_id
    assert failed_id is not None
    books = await core.books()
    failed = books.legs[failed_id]
    assert failed.status is TransactionStatus.FAILED
    assert failed.reverses_transaction_id == credit.transaction.transaction_id
    assert await core.available(world.usd_bob) == Decimal("15.00")
    shown = await reversed_of(core, world.teller, credit.transaction.transaction_id)
    assert shown == Reversals(Decimal("0.00"), ())
    # Replayed as the same decline; what is there can still be reversed.
    with pytest.raises(InsufficientFundsDeclined) as again:
        await core.movements.reverse(world.teller, reversal(credit, reference_id="rv-1"))
    assert again.value.replayed and again.value.transaction_id == failed_id
    assert await core.books() == books
    partial = await core.movements.reverse(world.teller, reversal(credit, "15.00"))
    assert partial.transaction.available_balance_after == Decimal("0.00")
    assert (await core.reconcile()).clean


async def test_a_reversal_into_a_frozen_account_declines(core: Core) -> None:
    world = await make_world(core)
    debit = await core.movements.debit(world.alice, request(DEBIT, world.usd, "10.00"))
    await core.accounts.set_active(world.teller, world.usd.account_id, is_active=False)

    with pytest.raises(AccountInactiveDeclined):
        await core.movements.reverse(world.teller, reversal(debit))

    shown = await reversed_of(core, world.teller, debit.transaction.transaction_id)
    assert shown.reversed_amount == Decimal("0.00")
    assert await core.available(world.usd) == Decimal("90.00")


# --- never more than the original -----------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("30.01", "more than what is left to reverse (30.00 of 30.00)"),
        ("0.001", "more than 2 decimal places"),
    ],
)
async def test_more_than_is_left_is_refused_and_changes_nothing(
    core: Core, amount: str, message: str
) -> None:
    world = await make_world(core)
    debit = await core.movements.debit(world.alice, request(DEBIT, world.usd, "30.00"))
    books = await core.books()

    with pytest.raises(ValidationFailed) as refused:
        await core.movements.reverse(world.teller, reversal(debit, amount))

    assert refused.value.field == "amount"
    assert message in refused.value.message
    await unchanged(core, books, debit)


async def test_partial_reversals_stop_at_the_original(core: Core) -> None:
    world = await make_world(core)
    debit = await core.movements.debit(world.alice, request(DEBIT, world.usd, "1.00"))
    outcomes: list[str] = []
    for index in range(12):
        try:
            await core.movements.reverse(
                world.teller, reversal(debit, "0.10", reference_id=f"part-{index}")
            )
            outcomes.append("reversed")
        except ValidationFailed:
            outcomes.append("refused")

    assert outcomes == ["reversed"] * 10 + ["refused"] * 2
    assert await core.available(world.usd) == Decimal("100.00")
    shown = await reversed_of(core, world.teller, debit.transaction.transaction_id)
    assert shown.reversed_amount == Decimal("1.00") and len(shown.reversal_ids) == 10
    assert (await core.reconcile()).clean


# --- what can be reversed -----------------------------------------------------------------


async def test_failed_pending_and_reversal_legs_are_not_reversible(core: Core) -> None:
    world = await make_world(core)
    with pytest.raises(InsufficientFundsDeclined) as declined:
        await core.movements.debit(world.alice, request(DEBIT, world.usd, "500.00"))
    failed_id = declined.value.transaction_id
    pending = await core.movements.submit(world.alice, DEBIT, request(DEBIT, world.usd, "1.00"))
    debit = await core.movements.debit(world.alice, request(DEBIT, world.usd, "2.00"))
    undone = await core.movements.reverse(world.teller, reversal(debit, "1.00"))
    assert failed_id is not None
    books = await core.books()

    answers: dict[str, str] = {}
    for name, leg_id in {
        "failed": failed_id,
        "pending": pending.transaction.transaction_id,
        "reversal": undone.transaction.transaction_id,
    }.items():
        with pytest.raises(TransactionNotReversible) as refused:
            await core.movements.reverse(world.teller, reversal(leg_id))
        assert refused.value.transaction_id == leg_id
        answers[name] = refused.value.message

    assert answers == {
        "failed": "only a completed movement can be reversed; this one is failed",
        "pending": "only a completed movement can be reversed; this one is pending",
        "reversal": "a reversal cannot be reversed",
    }
    with pytest.raises(TransactionNotFound):
        await core.movements.reverse(world.teller, reversal(uuid4()))
    assert await core.books() == books


# --- who may ----------------------------------------------------------------------------


async def test_who_may_reverse_what(core: Core) -> None:
    world = await make_world(core)
    debit = await core.movements.debit(world.alice, request(DEBIT, world.usd, "10.00"))
    credit = await core.movements.credit(world.teller, request(CREDIT, world.usd, "10.00"))
    sent = await core.movements.transfer(
        world.alice, request(TRANSFER, world.usd, "10.00", destination=world.usd_bob)
    )
    received_id = sent.transaction.related_transaction_id
    assert received_id is not None
    books = await core.books()

    refusals = {
        # her own debit, credit and outgoing transfer: staff only
        "own-debit": (world.alice, debit.transaction.transaction_id, Forbidden),
        "own-credit": (world.alice, credit.transaction.transaction_id, Forbidden),
        "own-transfer-out": (world.alice, sent.transaction.transaction_id, Forbidden),
        # another customer's movements, by any leg of theirs: not found, as if missing
        "other-debit": (world.bob, debit.transaction.transaction_id, TransactionNotFound),
        "other-out-leg": (world.bob, sent.transaction.transaction_id, TransactionNotFound),
        "other-received": (world.alice, received_id, TransactionNotFound),
        "auditor": (world.auditor, debit.transaction.transaction_id, Forbidden),
    }
    for name, (actor, leg_id, error) in refusals.items():
        with pytest.raises(error):
            await core.movements.reverse(actor, reversal(leg_id))
        assert await core.books() == books, name
    with pytest.raises(TransactionNotFound):
        await core.movements.get_reversals(world.bob, debit.transaction.transaction_id)

    for actor, original in ((world.teller, debit), (world.admin, credit)):
        done = await core.movements.reverse(actor, reversal(original))
        assert done.transaction.reverses_transaction_id == original.transaction.transaction_id
    refund = await core.movements.reverse(world.bob, reversal(received_id))
    assert refund.transaction.account_id == world.usd_bob.account_id
    assert (await core.reconcile()).clean


# --- idempotency --------------------------------------------------------------------------


async def test_the_same_reversal_again_replays_and_other_parameters_conflict(core: Core) -> None:
    world = await make_world(core)
    debit = await core.movements.debit(world.alice, request(DEBIT, world.usd, "10.00"))
    other = await core.movements.debit(world.alice, request(DEBIT, world.usd, "10.00"))
    first = await core.movements.reverse(world.teller, reversal(debit, reference_id="rv-key"))
    books = await core.books()

    # Everything is reversed now, and still the same request is answered as the first time.
    again = await core.movements.reverse(world.teller, reversal(debit, reference_id="rv-key"))

    assert (first.replayed, again.replayed) == (False, True)
    assert again.transaction == first.transaction
    assert await core.books() == books
    conflicts = {
        "amount": reversal(debit, "10.00", reference_id="rv-key"),
        "reason": reversal(debit, reason="another reason", reference_id="rv-key"),
        "transaction_id": reversal(other, reference_id="rv-key"),
    }
    for field, asked in conflicts.items():
        with pytest.raises(IdempotencyConflict) as conflict:
            await core.movements.reverse(world.teller, asked)
        assert conflict.value.details["fields"] == [field]
        assert conflict.value.transaction_id == first.transaction.transaction_id
    with pytest.raises(IdempotencyConflict):  # the key of a credit on the same account
        await core.movements.credit(
            world.teller, request(CREDIT, world.usd, "10.00", reference_id="rv-key")
        )
    assert await core.books() == books


async def test_either_leg_of_a_transfer_names_the_same_reversal(core: Core) -> None:
    world = await make_world(core)
    sent = await core.movements.transfer(
        world.alice, request(TRANSFER, world.usd, "10.00", destination=world.usd_bob)
    )
    in_id = sent.transaction.related_transaction_id
    assert in_id is not None
    first = await core.movements.reverse(world.teller, reversal(sent, "4.00", reference_id="k"))

    again = await core.movements.reverse(world.teller, reversal(in_id, "4.00", reference_id="k"))

    assert again.replayed and again.transaction == first.transaction
    assert await core.available(world.usd_bob) == Decimal("16.00")


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"reason": ""}, "reason"),
        ({"reason": "x" * 501}, "reason"),
        ({"reason": "line\nbreak"}, "reason"),
        ({"amount": Decimal("0")}, "amount"),
        ({"amount": Decimal("-1.00")}, "amount"),
        ({"amount": Decimal("10000000000000000")}, "amount"),
        ({"reference_id": ""}, "reference_id"),
        ({"reference_id": "k" * 256}, "reference_id"),
    ],
)
async def test_bad_input_is_refused_and_changes_nothing(
    core: Core, changes: dict[str, object], field: str
) -> None:
    world = await make_world(core)
    debit = await core.movements.debit(world.alice, request(DEBIT, world.usd, "10.00"))
    books = await core.books()

    with pytest.raises(ValidationFailed) as refused:
        await core.movements.reverse(world.teller, replace(reversal(debit), **changes))  # type: ignore[arg-type]

    assert refused.value.field == field
    await unchanged(core, books, debit)


# --- the decision, without a store ----------------------------------------------------------

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
A, B = uuid4(), uuid4()


def leg(kind: TransactionType, **changes: object) -> Transaction:
    base = Transaction(
        transaction_id=uuid4(),
        account_id=A,
        transaction_type=kind,
        amount=Decimal("10.00"),
        currency="USD",
        description=None,
        reference_id="r",
        status=TransactionStatus.COMPLETED,
        created_at=NOW,
        related_transaction_id=uuid4() if kind is TRANSFER else None,
        counterparty_account_id=B if kind is TRANSFER else None,
        failure_code=None,
        failure_reason=None,
        available_balance_after=None,
        balance_version_after=None,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_the_opposite_movement_of_each_kind() -> None:
    plans = {kind: plan_reversal(leg(kind)) for kind in (DEBIT, CREDIT, TRANSFER)}

    assert {
        kind: (plan.kind, plan.account_id, plan.counterparty_id) for kind, plan in plans.items()
    } == {
        DEBIT: (CREDIT, A, None),
        CREDIT: (DEBIT, A, None),
        TRANSFER: (TRANSFER, B, A),
    }
    assert plans[TRANSFER].account_ids == sorted([A, B])


def test_what_is_left_bounds_the_amount() -> None:
    original = leg(DEBIT)
    assert amount_to_reverse(None, original, Decimal("2.50")) == Decimal("7.50")
    assert amount_to_reverse(Decimal("7.5"), original, Decimal("2.50")) == Decimal("7.50")
    with pytest.raises(ValidationFailed, match=r"\(7\.50 of 10\.00\)"):
        amount_to_reverse(Decimal("7.51"), original, Decimal("2.50"))
    with pytest.raises(ValidationFailed, match="nothing is left"):
        amount_to_reverse(None, original, Decimal("10.00"))
    jpy = replace(original, currency="JPY", amount=Decimal("1000"))
    with pytest.raises(ValidationFailed, match="decimal places for JPY"):
        amount_to_reverse(Decimal("0.5"), jpy, Decimal("0"))


def test_who_may_reverse_without_a_store() -> None:
    customer = Actor(uuid4(), "c", Role.CUSTOMER)
    received = leg(TRANSFER)
    require_may_reverse(customer, received, destination_owner=customer.user_id)
    for role in (Role.TELLER, Role.ADMIN):
        require_may_reverse(Actor(uuid4(), "s", role), leg(CREDIT), destination_owner=None)
    refused = [
        (customer, received, uuid4()),
        (customer, leg(DEBIT), None),
        (customer, leg(CREDIT), None),
        (Actor(uuid4(), "a", Role.AUDITOR), leg(DEBIT), None),
    ]
    for actor, original, owner in refused:
        with pytest.raises(Forbidden):
            require_may_reverse(actor, original, destination_owner=owner)


def test_only_completed_movements_that_are_no_reversals() -> None:
    require_reversible(leg(DEBIT))
    for changes in (
        {"status": TransactionStatus.FAILED},
        {"status": TransactionStatus.PENDING},
        {"reverses_transaction_id": uuid4()},
    ):
        with pytest.raises(TransactionNotReversible):
            require_reversible(leg(DEBIT, **changes))


def test_the_fingerprint_is_the_original_the_amount_asked_and_the_reason() -> None:
    original = uuid4()
    asked = check_reversal(ReversalRequest(original, REASON, None, "k"))
    same = fingerprint_of(original, check_reversal(ReversalRequest(original, REASON, None, "k2")))
    assert fingerprint_of(original, asked) == same
    others = {
        fingerprint_of(uuid4(), asked),
        fingerprint_of(original, replace(asked, amount=Decimal("1.00"))),
        fingerprint_of(original, replace(asked, reason="other")),
    }
    assert fingerprint_of(original, asked) not in others and len(others) == 3


def test_a_request_without_a_key_gets_one_of_its_own() -> None:
    first = check_reversal(ReversalRequest(uuid4(), REASON))
    second = check_reversal(ReversalRequest(first.transaction_id, REASON))
    assert first.reference_id != second.reference_id
