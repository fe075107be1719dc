"""The fraud detector on the event stream (DESIGN.md section 10).

- ``FraudWorker`` (``banking worker fraud``, or in-process in ``banking serve``) scores every
  completed or failed leg after commit, from features it keeps per account: each account's
  state is rebuilt from the ledger the first time the worker sees it (so a restart loses
  nothing) and then kept up to date from the stream. The score is stored once per leg (a
  redelivered event is recognised by the leg's stored score and not scored again); a score at
  or above the alert threshold writes a ``fraud.alert`` event to the outbox in the same
  transaction (``banking.fraud.alerts``, keyed by account). An event that cannot be read goes
  to the permanent dead-letter topic and the worker goes on.
- ``CommandScreening`` is what the transaction processor asks before it applies an
  asynchronous command: it scores the command's pending leg from the account's history as
  the ledger has it now; at or above the hold threshold the command is held for review
  (``ledger.review``) instead of applied. Synchronous movements are never held: they are
  scored after commit, and alert only.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final, Protocol, TypeVar
from uuid import UUID, uuid4

from banking.config import Settings
from banking.domain.clock import utc_now
from banking.domain.records import (
    Command,
    FraudAlert,
    FraudScore,
    Transaction,
    TransactionStatus,
)
from banking.events.envelope import read_headers
from banking.events.outbox import EVENT_TRANSACTION_COMPLETED, EVENT_TRANSACTION_FAILED
from banking.events.serialization import JSON_CONTENT_TYPE, UndecodableEvent, decode
from banking.events.transport import Message, handle_one_by_one
from banking.fraud.assessment import Assessment, FraudDecision, Movement, Thresholds
from banking.fraud.detector import RULES_ONLY, Detector
from banking.fraud.features import HISTORY_DAYS, HISTORY_LIMIT, FeatureBook
from banking.fraud.model import ModelSource
from banking.ledger.ports import LedgerStore, UnitOfWork
from banking.observability import context
from banking.observability.logging import get_logger
from banking.storage.database import is_outage
from banking.workers.dead_letters import DeadLetters

log = get_logger(__name__)
T = TypeVar("T")

SCORED_EVENT_TYPES: Final = frozenset({EVENT_TRANSACTION_COMPLETED, EVENT_TRANSACTION_FAILED})
OUTAGE_WAIT_SECONDS_MAX: Final = 10.0
_BACKOFF_SECONDS: Final = 0.2
_BACKOFF_SECONDS_MAX: Final = 2.0


class FraudObserver(Protocol):
    """What is measured (``observability.metrics.Metrics`` implements it)."""

    def fraud_scored(self, score: Decimal, seconds: float) -> None: ...
    def fraud_alerted(self, pattern: str) -> None: ...
    def fraud_held(self, pattern: str) -> None: ...
    def fraud_model_loaded(self, version: str) -> None: ...
    def fraud_review_queue(self, held: int) -> None: ...


class _Unobserved:
    def fraud_scored(self, score: Decimal, seconds: float) -> None:
        pass

    def fraud_alerted(self, pattern: str) -> None:
        pass

    def fraud_held(self, pattern: str) -> None:
        pass

    def fraud_model_loaded(self, version: str) -> None:
        pass

    def fraud_review_queue(self, held: int) -> None:
        pass


class PoisonEvent(ValueError):
    """An event this worker can never score (unreadable, or about a leg that is not there)."""


def build_detector(settings: Settings) -> Detector:
    """The detector of FRAUD_* settings: the newest model of FRAUD_MODEL_DIR (re-read at most
    every FRAUD_MODEL_RELOAD_SECONDS), the rules alone until a model exists."""
    models = ModelSource(settings.effective_fraud_model_dir, settings.fraud_model_reload_seconds)
    thresholds = Thresholds(settings.fraud_alert_threshold, settings.fraud_hold_threshold)
    return Detector(models, thresholds)


def stored_score(
    leg: Transaction, assessment: Assessment, *, event_id: UUID | None, decision: FraudDecision
) -> FraudScore:
    return FraudScore(
        transaction_id=leg.transaction_id,
        account_id=leg.account_id,
        event_id=event_id,
        score=assessment.score,
        reasons=assessment.reasons,
        features={name: round(value, 6) for name, value in assessment.features.items()},
        model_version=assessment.model_version,
        decision=decision.value,
        scored_at=utc_now(),
    )


async def account_history(store: LedgerStore, leg: Transaction) -> list[Movement]:
    """The account's finished legs before ``leg`` (what its features are rebuilt from)."""
    legs = await store.account_legs(
        leg.account_id,
        since=leg.created_at - timedelta(days=HISTORY_DAYS),
        until=leg.created_at,
        limit=HISTORY_LIMIT,
    )
    return [
        Movement.of_leg(other)
        for other in legs
        if other.transaction_id != leg.transaction_id
        and other.status is not TransactionStatus.PENDING
    ]


async def waiting_out_outages(call: Callable[[], Awaitable[T]], *, what: str) -> T:
    """``call()``, again with backoff while the database is unavailable (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + OUTAGE_WAIT_SECONDS_MAX
    attempt = 0
    while True:
        try:
            return await call()
        except Exception as error:
            remaining = deadline - loop.time()
            if not is_outage(error) or remaining <= 0:
                raise
            attempt += 1
            ceiling = min(_BACKOFF_SECONDS_MAX, _BACKOFF_SECONDS * 2**attempt)
            delay = min(remaining, random.uniform(0, ceiling))  # noqa: S311 - jitter
            log.warning(f"{what}_waiting_for_database", attempt=attempt, retry_in=round(delay, 3))
            await asyncio.sleep(delay)


class FraudWorker:
    """Scores every finished leg once, after commit; alerts above the threshold."""

    def __init__(
        self,
        unit_of_work: UnitOfWork,
        detector: Detector,
        dead_letters: DeadLetters,
        *,
        book: FeatureBook | None = None,
        observer: FraudObserver | None = None,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._detector = detector
        self._dead_letters = dead_letters
        self.book = book or FeatureBook()
        # The newest leg time seen per account (a late event is scored from the ledger).
        self._newest: dict[UUID, datetime] = {}
        self._observer: FraudObserver = observer or _Unobserved()
        self._model_version: str | None = None
        model = detector.model()
        self._note_model(model.version if model is not None else RULES_ONLY)

    async def handle(self, message: Message) -> None:
        context.clear()
        headers = read_headers(message.headers)
        context.bind(trace_id=headers.trace_id, event_id=headers.event_id)
        if headers.event_type not in SCORED_EVENT_TYPES:
            return  # rejections of commands without a leg, schema announcements...
        try:
            await waiting_out_outages(lambda: self._score(message), what="fraud")
        except PoisonEvent as error:
            log.error("fraud_event_unreadable", error=str(error)[:300], offset=message.offset)
            await self._dead_letters.give_up(message, error, attempts=1)

    async def handle_batch(self, messages: Sequence[Message]) -> None:
        """``handle`` each of ``messages`` (in order): the legs read in one read view, the
        scores and alerts written in one transaction. Unreadable events go to the dead-letter
        topic as there; when a step fails for a reason that is not an outage, the events are
        scored again one at a time, so that only the one at fault fails."""
        scored = [m for m in messages if read_headers(m.headers).event_type in SCORED_EVENT_TYPES]
        if not scored:
            return
        try:
            assessed, poisoned = await waiting_out_outages(
                lambda: self._assess_all(scored), what="fraud"
            )
        except Exception as error:
            if is_outage(error):
                raise
            await self._one_by_one(scored, error)
            return
        for message, poison in poisoned:
            _bind(message)
            log.error("fraud_event_unreadable", error=str(poison)[:300], offset=message.offset)
            await self._dead_letters.give_up(message, poison, attempts=1)
        context.clear()
        if not assessed:
            return
        try:
            inserted = await waiting_out_outages(
                lambda: self._unit_of_work.run(lambda store: _store_scores(store, assessed)),
                what="fraud",
            )
        except Exception as error:
            if is_outage(error):
                raise
            await self._one_by_one([item.message for item in assessed], error)
            return
        for item, was_new in zip(assessed, inserted, strict=True):
            _bind(item.message)
            context.bind(transaction_id=str(item.leg.transaction_id))
            self._scored(item, inserted=was_new)
        context.clear()

    async def _one_by_one(self, messages: Sequence[Message], error: Exception) -> None:
        log.warning(
            "fraud_batch_scored_one_by_one",
            events=len(messages),
            error_type=type(error).__name__,
            error=str(error)[:300],
        )
        await handle_one_by_one(self.handle, messages, raise_at_once=is_outage)

    async def _assess_all(
        self, messages: Sequence[Message]
    ) -> tuple[list[_Assessed], list[tuple[Message, PoisonEvent]]]:
        """Each message's assessment (in order, in one read view), and the unreadable ones.
        Each leg joins its account's state as it is assessed, so the next leg of the same
        account in the batch is scored with it (as it would be one message at a time)."""
        assessed: list[_Assessed] = []
        poisoned: list[tuple[Message, PoisonEvent]] = []
        async with self._unit_of_work.read() as store:
            for message in messages:
                try:
                    item = await self._assess(store, message)
                except PoisonEvent as error:
                    poisoned.append((message, error))
                    continue
                if not item.late:
                    self.book.observe(item.movement)
                assessed.append(item)
        return assessed, poisoned

    async def _score(self, message: Message) -> None:
        # One read: the account's legs up to this one (a redelivered event is recognised by
        # its stored score when it is written: a leg is scored once, by its primary key).
        async with self._unit_of_work.read() as store:
            item = await self._assess(store, message)
        inserted = await self._unit_of_work.run(lambda store: _store_scores(store, [item]))
        if not item.late:
            self.book.observe(item.movement)
        self._scored(item, inserted=inserted[0])

    async def _assess(self, store: LedgerStore, message: Message) -> _Assessed:
        """The score of the leg ``message`` is about (PoisonEvent if it names none)."""
        headers = read_headers(message.headers)
        transaction_id, account_id, created_at = _leg_of_event(message)
        context.bind(transaction_id=str(transaction_id))
        leg, source, late = await self._state_before(store, transaction_id, account_id, created_at)
        movement = Movement.of_leg(leg)
        started = time.perf_counter()
        features = source.features(movement)
        assessment = self._detector.assess(features)
        seconds = time.perf_counter() - started
        self._note_model(assessment.model_version)
        # After commit a movement can only be alerted on: holding is for commands not applied.
        decision = min(assessment.decision, FraudDecision.ALERT, key=_DECISION_ORDER.__getitem__)
        score = stored_score(leg, assessment, event_id=_uuid(headers.event_id), decision=decision)
        return _Assessed(message, headers.trace_id, leg, movement, late, assessment, score, seconds)

    def _scored(self, item: _Assessed, *, inserted: bool) -> None:
        """Count and log one stored score (after its transaction committed)."""
        if not inserted:
            return
        self._observer.fraud_scored(item.score.score, item.seconds)
        if item.score.decision == FraudDecision.ALERT.value:
            self._observer.fraud_alerted(item.assessment.pattern)
            log.info(
                "fraud_alert",
                score=str(item.score.score),
                reasons=",".join(item.score.reasons),
                model_version=item.score.model_version,
            )

    async def _state_before(
        self, store: LedgerStore, transaction_id: UUID, account_id: UUID, created_at: datetime
    ) -> tuple[Transaction, FeatureBook, bool]:
        """The leg, its account's feature state just before it, and whether it is late.

        The ledger is the truth and the stream its notification: completed and failed legs
        travel on two topics, so an account's events can arrive out of creation order. The
        first time an account is seen its state is loaded from the ledger; after that each
        event first catches up with the account's legs created since the newest one seen
        (the same indexed read), so a leg is scored with every leg created before it. A leg
        older than that (redelivered after a restart or a rebalance) is scored from the
        ledger as it was then, and the account's state is left as it is."""
        newest = self._newest.get(account_id) if self.book.known(account_id) else None
        late = newest is not None and created_at < newest
        since = newest if newest is not None and not late else None
        legs = await store.account_legs(
            account_id,
            since=since or created_at - timedelta(days=HISTORY_DAYS),
            until=created_at,
            limit=HISTORY_LIMIT,
        )
        leg = next(
            (other for other in reversed(legs) if other.transaction_id == transaction_id), None
        )
        if leg is None:
            raise PoisonEvent(f"no leg {transaction_id} of account {account_id} in the ledger")
        before = [
            Movement.of_leg(other)
            for other in legs
            if other.transaction_id != transaction_id
            and other.status is not TransactionStatus.PENDING
        ]
        if late:
            then = FeatureBook(max_accounts=1)
            then.load(account_id, before)
            return leg, then, True
        if since is None:
            self.book.load(account_id, before)
        else:
            for movement in before:
                self.book.observe(movement)
        if len(self._newest) > 2 * len(self.book) + 1000:  # forget accounts the book let go
            self._newest = {a: t for a, t in self._newest.items() if self.book.known(a)}
        self._newest[account_id] = created_at
        return leg, self.book, False

    def _note_model(self, version: str) -> None:
        if version != self._model_version:
            self._model_version = version
            self._observer.fraud_model_loaded(version)
            log.info("fraud_model_in_use", model_version=version)


_DECISION_ORDER: Final = {FraudDecision.ALLOW: 0, FraudDecision.ALERT: 1, FraudDecision.HOLD: 2}


@dataclass(frozen=True, slots=True)
class _Assessed:
    """One event's leg, scored, before the score is stored."""

    message: Message
    trace_id: str | None
    leg: Transaction
    movement: Movement
    late: bool
    assessment: Assessment
    score: FraudScore
    seconds: float


async def _store_scores(store: LedgerStore, items: Sequence[_Assessed]) -> list[bool]:
    """Store each score once (per leg); an alert event for each new one that alerts. Per
    item, whether its score was new."""
    inserted = []
    alerts = []
    for item in items:
        new = await store.insert_fraud_score(item.score)
        inserted.append(new)
        if new and item.score.decision == FraudDecision.ALERT.value:
            alerts.append(
                FraudAlert(
                    alert_id=uuid4(),
                    leg=item.leg,
                    score=item.score.score,
                    reasons=item.score.reasons,
                    model_version=item.score.model_version,
                    decision=item.score.decision,
                    created_at=item.score.scored_at,
                    trace_id=item.trace_id,
                )
            )
    if alerts:
        await store.add_events(alerts)
    return inserted


def _bind(message: Message) -> None:
    context.clear()
    headers = read_headers(message.headers)
    context.bind(trace_id=headers.trace_id, event_id=headers.event_id)


class CommandScreening:
    """Scores an asynchronous command's pending leg before it is applied; the hold, if the
    score reaches the hold threshold."""

    def __init__(
        self,
        unit_of_work: UnitOfWork,
        detector: Detector,
        *,
        observer: FraudObserver | None = None,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._detector = detector
        self._observer: FraudObserver = observer or _Unobserved()

    async def hold_for(self, command: Command) -> FraudScore | None:
        """The score to hold ``command`` with, or None to apply it. A command without a
        pending leg (from another service), or whose leg is finished or held, is not
        screened here (it is scored after commit like any movement)."""
        async with self._unit_of_work.read() as store:
            leg = await store.get_transaction(command.transaction_id)
            if leg is None or leg.status is not TransactionStatus.PENDING or leg.hold_reason:
                return None
            history = await account_history(store, leg)
        book = FeatureBook(max_accounts=1)
        book.load(leg.account_id, history)
        started = time.perf_counter()
        assessment = self._detector.assess(book.features(Movement.of_leg(leg)))
        seconds = time.perf_counter() - started
        if assessment.decision is not FraudDecision.HOLD:
            return None
        self._observer.fraud_scored(assessment.score, seconds)
        self._observer.fraud_held(assessment.pattern)
        log.warning(
            "command_held_for_review",
            score=str(assessment.score),
            reasons=",".join(assessment.reasons),
            model_version=assessment.model_version,
        )
        return stored_score(leg, assessment, event_id=None, decision=FraudDecision.HOLD)

    async def queue_changed(self) -> None:
        """Report how many held commands wait for review (after one was held)."""
        async with self._unit_of_work.read() as store:
            self._observer.fraud_review_queue(await store.count_held())


def _leg_of_event(message: Message) -> tuple[UUID, UUID, datetime]:
    """The leg id, account and creation time a transaction event names."""
    headers = read_headers(message.headers)
    try:
        fields = decode(
            message.value,
            content_type=headers.content_type or JSON_CONTENT_TYPE,
            event_type=headers.event_type or EVENT_TRANSACTION_COMPLETED,
            schema_version=headers.schema_version,
        )
        created_at = fields["timestamp"]
        if not isinstance(created_at, datetime) or created_at.tzinfo is None:
            raise ValueError("the event has no time with a zone")
        return UUID(str(fields["transaction_id"])), UUID(str(fields["account_id"])), created_at
    except (UndecodableEvent, KeyError, ValueError) as error:
        raise PoisonEvent(f"not a readable transaction event: {error}") from error


def _uuid(value: str | None) -> UUID | None:
    try:
        return UUID(value) if value else None
    except ValueError:
        return None
