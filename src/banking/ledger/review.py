"""Fraud review: an asynchronous command the fraud detector held waits, its leg ``pending``
with a ``hold_reason``, until staff decide.

- **hold** (the command processor, on the detector's decision): the leg is marked held, the
  score is stored, a ``held`` journal entry and a ``transaction.held`` event are written; no
  money moves. A held leg is never applied by a redelivered command.
- **release** (teller or admin): the command is applied now by the same decisions as any
  command, for the user who requested it (as the users table says now); it may still decline.
- **reject** (teller or admin): the leg fails with ``FRAUD_REJECTED``; no money moves.

Both reviews are idempotent (the same decision again answers the same leg, replayed) and
journaled with the reviewer's name; the decision is stored with the score, as the label
``banking fraud train`` learns from. Customers get "not found"; auditors read the queue but
cannot decide.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Final
from uuid import UUID, uuid4

from banking.domain.clock import utc_now
from banking.domain.errors import (
    BankingError,
    DeclineReason,
    Forbidden,
    TransactionNotFound,
    TransactionNotHeld,
)
from banking.domain.records import (
    Command,
    CommandHeld,
    CommandOutcome,
    FraudScore,
    JournalEntry,
    LegsRecorded,
    MovementResult,
    ReviewDecision,
    StaffAction,
    StaffActionType,
    Transaction,
    TransactionStatus,
    request_of,
)
from banking.domain.roles import Actor, Role
from banking.ledger.checks import check_movement
from banking.ledger.commands import current_actor, reject_command
from banking.ledger.decisions import DECISIONS
from banking.ledger.history import decode_cursor, encode_cursor, page_size_within
from banking.ledger.ports import LedgerStore, UnitOfWork
from banking.ledger.recording import failed, journal_entry

FRAUD_DETECTOR_NAME = "fraud-detector"
REJECTED_MESSAGE = "rejected by a fraud reviewer"


HOLD_REASON: Final = "held for fraud review"
_REVIEW_ACTIONS: Final = {
    ReviewDecision.RELEASED: StaffActionType.HOLD_RELEASED,
    ReviewDecision.REJECTED: StaffActionType.HOLD_REJECTED,
}


def hold_reason_of(score: FraudScore) -> str:
    """What the leg says while it waits (customers see it): no score and no reasons, which
    are for staff (``fraud_scores``, shown as ``fraud``)."""
    return HOLD_REASON


def is_held(leg: Transaction) -> bool:
    return leg.status is TransactionStatus.PENDING and leg.hold_reason is not None


async def hold_command(
    unit_of_work: UnitOfWork, command: Command, score: FraudScore
) -> CommandOutcome:
    """Hold ``command`` for review instead of applying it. A command without a pending leg,
    or whose leg was finished or held already, is left alone (``already_done``)."""

    async def work(store: LedgerStore) -> CommandOutcome:
        pending = await store.get_transaction(command.transaction_id, for_update=True)
        if pending is None or pending.status is not TransactionStatus.PENDING or is_held(pending):
            return CommandOutcome(command, pending, already_done=True)
        reason = hold_reason_of(score)
        await store.hold_pending_leg(pending.transaction_id, reason)
        held = replace(pending, hold_reason=reason)
        await store.insert_fraud_score(score)
        metadata: dict[str, Any] = {
            "score": str(score.score),
            "reasons": list(score.reasons),
            "model_version": score.model_version,
            "trace_id": command.trace_id,
        }
        await store.add_journal([_entry(held, "held", FRAUD_DETECTOR_NAME, metadata)])
        await store.add_events(
            [CommandHeld(held, score.score, score.reasons, score.model_version, command.trace_id)]
        )
        return CommandOutcome(command, held, held=True)

    return await unit_of_work.run(work)


def require_reviewer(actor: Actor) -> None:
    """Tellers and admins decide; auditors may only look; customers do not know it exists."""
    if actor.role is Role.CUSTOMER:
        raise TransactionNotFound("transaction not found")
    if not actor.moves_any_account:
        raise Forbidden("reviewing held transactions needs the teller or admin role")


def require_queue_reader(actor: Actor) -> None:
    if not actor.reads_everything:
        raise Forbidden("the review queue is for staff")


async def release(
    unit_of_work: UnitOfWork, actor: Actor, transaction_id: UUID, *, trace_id: str | None
) -> MovementResult:
    """Apply a held command now, for the user who requested it."""
    require_reviewer(actor)
    refused: list[BankingError] = []

    async def work(store: LedgerStore) -> MovementResult:
        leg = await _held_or_reviewed(store, transaction_id, "released")
        if not is_held(leg):
            return MovementResult(leg, replayed=True)
        command = command_of(leg, await store.get_requester(leg.transaction_id), actor, trace_id)
        checked = replace(
            check_movement(command.kind, command.request), transaction_id=leg.transaction_id
        )
        try:
            requester = await current_actor(store, command.actor)
            finished = await DECISIONS[command.kind](store, requester, checked, leg, trace_id)
        except BankingError as error:
            refused.append(error)
            raise
        await _record_review(store, actor, leg, "released", trace_id)
        return MovementResult(replace(finished, hold_reason=leg.hold_reason), replayed=False)

    try:
        return await unit_of_work.run(work)
    except BankingError as error:
        if not refused or refused[0] is not error:
            raise
    # The command cannot succeed any more (its requester is gone, an account was closed...):
    # its leg fails with that error, as the processor would have failed it.
    async with unit_of_work.read() as store:
        leg = await store.get_transaction(transaction_id)
        requester_id = await store.get_requester(transaction_id)
    if leg is None:
        raise TransactionNotFound("transaction not found")
    command = command_of(leg, requester_id, actor, trace_id)
    outcome = await reject_command(unit_of_work, command, refused[0], reviewed=True)
    finished_leg = outcome.leg or leg

    async def note(store: LedgerStore) -> None:
        await _record_review(store, actor, finished_leg, "released", trace_id)

    await unit_of_work.run(note)
    return MovementResult(finished_leg, replayed=False)


async def reject(
    unit_of_work: UnitOfWork, actor: Actor, transaction_id: UUID, *, trace_id: str | None
) -> MovementResult:
    """Fail a held command with ``FRAUD_REJECTED``: no money moves."""
    require_reviewer(actor)

    async def work(store: LedgerStore) -> MovementResult:
        leg = await _held_or_reviewed(store, transaction_id, "rejected")
        if not is_held(leg):
            return MovementResult(leg, replayed=True)
        rejected = failed(leg, DeclineReason.FRAUD_REJECTED.value, REJECTED_MESSAGE)
        await store.finish_pending_leg(rejected)
        entry = journal_entry(rejected, actor, trace_id)
        await store.add_journal([replace(entry, metadata={**entry.metadata, "review": "rejected"})])
        await store.add_events([LegsRecorded((rejected,), trace_id)])
        await _record_review(store, actor, rejected, "rejected", trace_id, journal=False)
        return MovementResult(rejected, replayed=False)

    return await unit_of_work.run(work)


async def _held_or_reviewed(store: LedgerStore, transaction_id: UUID, decision: str) -> Transaction:
    """The held leg (locked), or the leg already reviewed with ``decision`` (a repeat).
    Anything else is not held: 409 ``TRANSACTION_NOT_HELD``."""
    leg = await store.get_transaction(transaction_id, for_update=True)
    if leg is None:
        raise TransactionNotFound("transaction not found")
    if is_held(leg):
        return leg
    score = await store.get_fraud_score(transaction_id)
    previous = score.review_decision if score else None
    if previous is not None and previous.value == decision:
        return leg
    if previous is not None:
        raise TransactionNotHeld(
            f"transaction {transaction_id} was already {previous.value}",
            transaction_id=transaction_id,
        )
    raise TransactionNotHeld(
        f"transaction {transaction_id} is not held for review", transaction_id=transaction_id
    )


async def _record_review(
    store: LedgerStore,
    reviewer: Actor,
    leg: Transaction,
    decision: str,
    trace_id: str | None,
    *,
    journal: bool = True,
) -> None:
    now = utc_now()
    await store.review_fraud_score(
        leg.transaction_id, ReviewDecision(decision), reviewer=reviewer.user_id, at=now
    )
    if journal:
        metadata = {"review": decision, "trace_id": trace_id, "status": leg.status.value}
        await store.add_journal([_entry(leg, decision, reviewer.username, metadata, at=now)])
    # The decision is a staff action of its own on the audit trail (the movement's events,
    # if any, are the ledger's).
    await store.add_events(
        [
            StaffAction(
                action_id=uuid4(),
                action=_REVIEW_ACTIONS[ReviewDecision(decision)],
                actor=reviewer,
                created_at=now,
                trace_id=trace_id,
                account_id=leg.account_id,
                transaction_id=leg.transaction_id,
                details={
                    "decision": decision,
                    "status": leg.status.value,
                    "failure_code": leg.failure_code,
                },
            )
        ]
    )


def _entry(
    leg: Transaction,
    event_type: str,
    created_by: str,
    metadata: dict[str, Any],
    *,
    at: datetime | None = None,
) -> JournalEntry:
    return JournalEntry(
        log_id=uuid4(),
        transaction_id=leg.transaction_id,
        event_type=event_type,
        metadata=metadata,
        created_at=at or utc_now(),
        created_by=created_by,
    )


def command_of(
    leg: Transaction, requester_id: UUID | None, reviewer: Actor, trace_id: str | None
) -> Command:
    """The command a pending leg stands for; its requester is the user who submitted it
    (re-read from the users table when it is applied)."""
    # Only the id is taken from the leg: the name and role are read again when it is applied.
    requester = Actor(requester_id, "", Role.CUSTOMER) if requester_id else reviewer
    return Command(leg.transaction_id, leg.transaction_type, request_of(leg), requester, trace_id)


@dataclass(frozen=True, slots=True)
class HeldPage:
    """The review queue: held legs oldest first, each with its score."""

    items: list[tuple[Transaction, FraudScore | None]]
    next_cursor: str | None


class ReviewService:
    """Reads for reviewers: the queue of held commands and a movement's fraud score."""

    def __init__(self, unit_of_work: UnitOfWork, *, page_size_max: int) -> None:
        self._unit_of_work = unit_of_work
        self.page_size_max = page_size_max

    async def queue(self, actor: Actor, *, cursor: str | None, page_size: int) -> HeldPage:
        require_queue_reader(actor)
        page_size_within(page_size, default=page_size, maximum=self.page_size_max)
        after = decode_cursor(cursor) if cursor else None
        async with self._unit_of_work.read() as store:
            legs = await store.held_legs(after=after, limit=page_size + 1)
            items = [(leg, await store.get_fraud_score(leg.transaction_id)) for leg in legs]
        has_more = len(items) > page_size
        items = items[:page_size]
        next_cursor = encode_cursor(items[-1][0]) if has_more and items else None
        return HeldPage(items, next_cursor)

    async def score_of(self, actor: Actor, transaction_id: UUID) -> FraudScore | None:
        """The fraud score of a movement, for staff only (customers never see scores)."""
        if not actor.reads_everything:
            return None
        async with self._unit_of_work.read() as store:
            return await store.get_fraud_score(transaction_id)

    async def held_count(self) -> int:
        async with self._unit_of_work.read() as store:
            return await store.count_held()


def score_decimal(score_bp: int) -> Decimal:
    return (Decimal(score_bp) / Decimal(10_000)).quantize(Decimal("0.0001"))
