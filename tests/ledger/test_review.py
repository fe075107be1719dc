"""Fraud review of held asynchronous commands: a held command moves nothing, is never applied
by a redelivery, and waits for staff; release applies it with the same decisions as any
command, reject fails it with ``FRAUD_REJECTED``; both are idempotent, journaled with who
decided, staff-only (a customer gets "not found", an auditor "forbidden")."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from uuid import uuid4

import pytest

from banking.domain.errors import Forbidden, TransactionNotFound, TransactionNotHeld
from banking.domain.records import (
    Command,
    FraudScore,
    ReviewDecision,
    TransactionStatus,
    TransactionType,
)
from banking.ledger.review import ReviewService
from tests.ledger.world import DEBIT, KINDS, TRANSFER, World, last_command, make_world, request
from tests.support.ledger import Core
from tests.support.memory_store import MemoryUnitOfWork

RELEASED, REJECTED = ReviewDecision.RELEASED, ReviewDecision.REJECTED
MOVED = {DEBIT: "90.00", TransactionType.CREDIT: "110.00", TRANSFER: "90.00"}


def _score(command: Command) -> FraudScore:
    return FraudScore(
        transaction_id=command.transaction_id,
        account_id=command.request.account_id
        if command.kind is not TRANSFER
        else command.request.source_account_id,  # type: ignore[union-attr]
        event_id=None,
        score=Decimal("0.9500"),
        reasons=("new_counterparty", "night_time"),
        features={"amount": 2.0},
        model_version="test-model",
        decision="hold",
        scored_at=datetime.now(UTC),
    )


async def _held(core: Core, world: World, kind: TransactionType = DEBIT) -> Command:
    asked = request(kind, world.usd, "10.00", destination=world.usd_bob, reference_id="held-1")
    await core.movements.submit(world.mover(kind), kind, asked)
    command = await last_command(core)
    outcome = await core.movements.hold_command(command, _score(command))
    assert outcome.held and outcome.leg is not None
    return command


@pytest.mark.parametrize("kind", KINDS)
async def test_a_held_command_moves_nothing_and_waits_with_its_reason(
    core: Core, kind: TransactionType
) -> None:
    world = await make_world(core)
    before = await core.books()
    command = await _held(core, world, kind)
    after = await core.books()
    assert after.balances == before.balances
    leg = after.legs[command.transaction_id]
    assert leg.status is TransactionStatus.PENDING
    assert leg.hold_reason == "held for fraud review"  # no score: customers read it
    assert after.event_types()[-1] == "transaction.held"
    topic, key, _, payload = after.events[-1]
    assert (topic, key) == ("banking.transactions.held", str(world.usd.account_id))
    assert payload["amount"] == "10.00" and payload["score"] == "0.9500"


async def test_a_redelivered_command_does_not_apply_a_held_leg(core: Core) -> None:
    world = await make_world(core)
    command = await _held(core, world)
    before = await core.books()
    outcome = await core.movements.apply_command(command)
    assert outcome.already_done
    assert await core.books() == before
    again = await core.movements.hold_command(command, _score(command))
    assert again.already_done and await core.books() == before


@pytest.mark.parametrize("kind", KINDS)
async def test_release_applies_the_command_with_the_usual_decisions(
    core: Core, kind: TransactionType
) -> None:
    world = await make_world(core)
    command = await _held(core, world, kind)
    result = await core.movements.review(world.teller, command.transaction_id, RELEASED)
    assert not result.replayed
    assert result.transaction.status is TransactionStatus.COMPLETED
    assert result.transaction.hold_reason is not None  # the leg still says it was held
    assert await core.available(world.usd) == Decimal(MOVED[kind])
    assert (await core.reconcile()).clean


async def test_release_of_a_command_that_cannot_be_paid_declines_it(core: Core) -> None:
    world = await make_world(core)
    asked = request(DEBIT, world.usd, "500.00", reference_id="too-much")
    await core.movements.submit(world.alice, DEBIT, asked)
    command = await last_command(core)
    await core.movements.hold_command(command, _score(command))
    result = await core.movements.review(world.admin, command.transaction_id, RELEASED)
    assert result.transaction.status is TransactionStatus.FAILED
    assert result.transaction.failure_code == "INSUFFICIENT_FUNDS"
    assert await core.available(world.usd) == Decimal("100.00")


async def test_reject_fails_the_leg_with_fraud_rejected_and_moves_nothing(core: Core) -> None:
    world = await make_world(core)
    command = await _held(core, world, TRANSFER)
    before = await core.books()
    result = await core.movements.review(world.teller, command.transaction_id, REJECTED)
    after = await core.books()
    assert result.transaction.status is TransactionStatus.FAILED
    assert result.transaction.failure_code == "FRAUD_REJECTED"
    assert after.balances == before.balances
    # the failed leg, and the reviewer's decision for the audit trail
    assert after.event_types()[-2:] == ["transaction.failed", "staff.hold_rejected"]
    assert (await core.reconcile()).clean


@pytest.mark.parametrize("decision", [RELEASED, REJECTED])
async def test_a_review_is_idempotent_and_the_other_decision_is_refused(
    core: Core, decision: ReviewDecision
) -> None:
    world = await make_world(core)
    command = await _held(core, world)
    first = await core.movements.review(world.teller, command.transaction_id, decision)
    books = await core.books()
    again = await core.movements.review(world.admin, command.transaction_id, decision)
    assert again.replayed and again.transaction == first.transaction
    other = REJECTED if decision is RELEASED else RELEASED
    with pytest.raises(TransactionNotHeld, match=f"already {decision.value}"):
        await core.movements.review(world.teller, command.transaction_id, other)
    assert await core.books() == books


async def test_reviews_are_journaled_with_who_decided_and_labelled(
    core: Core, world: World, memory: MemoryUnitOfWork
) -> None:
    command = await _held(core, world)
    await core.movements.review(world.teller, command.transaction_id, REJECTED)
    entries = [e for e in memory.books.journal if e.transaction_id == command.transaction_id]
    assert [(e.event_type, e.created_by) for e in entries] == [
        ("pending", world.alice.username),
        ("held", "fraud-detector"),
        ("failed", world.teller.username),
    ]
    assert entries[-1].metadata["review"] == "rejected"
    score = memory.books.fraud_scores[command.transaction_id]
    assert score.review_decision is REJECTED and score.reviewed_by == world.teller.user_id


@pytest.mark.parametrize("decision", [RELEASED, REJECTED])
async def test_customers_get_not_found_and_auditors_forbidden(
    core: Core, decision: ReviewDecision
) -> None:
    world = await make_world(core)
    command = await _held(core, world)
    before = await core.books()
    with pytest.raises(TransactionNotFound):
        await core.movements.review(world.alice, command.transaction_id, decision)
    with pytest.raises(Forbidden):
        await core.movements.review(world.auditor, command.transaction_id, decision)
    assert await core.books() == before


async def test_a_movement_that_was_never_held_cannot_be_reviewed(core: Core) -> None:
    world = await make_world(core)
    asked = request(DEBIT, world.usd, "10.00", reference_id="plain")
    done = await core.movements.debit(world.alice, asked)  # type: ignore[arg-type]
    before = await core.books()
    with pytest.raises(TransactionNotHeld, match="not held"):
        await core.movements.review(world.teller, done.transaction.transaction_id, RELEASED)
    with pytest.raises(TransactionNotFound):
        await core.movements.review(world.teller, uuid4(), REJECTED)
    assert await core.books() == before


async def test_the_queue_lists_held_commands_oldest_first_for_staff_only(core: Core) -> None:
    world = await make_world(core)
    review = ReviewService(core.unit_of_work, page_size_max=10)
    held = []
    for n in range(3):
        asked = request(DEBIT, world.usd, "1.00", reference_id=f"q-{n}")
        await core.movements.submit(world.alice, DEBIT, asked)
        command = await last_command(core)
        await core.movements.hold_command(command, _score(command))
        held.append(command.transaction_id)
    first = await review.queue(world.auditor, cursor=None, page_size=2)
    assert [leg.transaction_id for leg, _ in first.items] == held[:2]
    assert all(score is not None and score.decision == "hold" for _, score in first.items)
    rest = await review.queue(world.teller, cursor=first.next_cursor, page_size=2)
    assert [leg.transaction_id for leg, _ in rest.items] == held[2:] and rest.next_cursor is None
    await core.movements.review(world.teller, held[0], RELEASED)
    assert await review.held_count() == 2
    with pytest.raises(Forbidden):
        await review.queue(world.alice, cursor=None, page_size=2)
    assert await review.score_of(world.alice, held[1]) is None
    assert (await review.score_of(world.auditor, held[1])) is not None
