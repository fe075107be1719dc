"""Movement metrics, as a wrapper of the movement service (same ``Movements`` Protocol):
movements by type and outcome, amounts moved, declines by reason, idempotent replays."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from decimal import Decimal
from typing import Protocol
from uuid import UUID

from banking.domain.errors import BankingError, Declined
from banking.domain.records import (
    BatchItem,
    Command,
    CommandOutcome,
    DebitOrCredit,
    MovementResult,
    ReversalRequest,
    ReviewDecision,
    Transaction,
    TransactionStatus,
    TransactionType,
    TransferRequest,
)
from banking.domain.roles import Actor
from banking.ledger.groups import ItemResult
from banking.ledger.ports import Movements, MovementsDecorator

# The kind label of a declined reversal (its leg's type is not in the error it raises).
REVERSAL_KIND = "reversal"
_NONE = Decimal("0.00")


class MovementMetrics(Protocol):
    """What is counted (``banking.observability.metrics.Metrics`` implements it)."""

    def movement(self, kind: str, status: str, currency: str, amount: Decimal) -> None: ...
    def declined(self, kind: str, reason: str) -> None: ...
    def replayed(self, kind: str) -> None: ...


class MeasuredMovements(MovementsDecorator):
    """``Movements`` that count every outcome. A replay is counted as a replay only, so a
    retried request never counts its money twice."""

    def __init__(self, inner: Movements, metrics: MovementMetrics) -> None:
        super().__init__(inner)
        self._metrics = metrics

    async def debit(
        self, actor: Actor, request: DebitOrCredit, *, trace_id: str | None = None
    ) -> MovementResult:
        call = self._inner.debit(actor, request, trace_id=trace_id)
        return await self._measure(TransactionType.DEBIT, request.amount, call)

    async def credit(
        self, actor: Actor, request: DebitOrCredit, *, trace_id: str | None = None
    ) -> MovementResult:
        call = self._inner.credit(actor, request, trace_id=trace_id)
        return await self._measure(TransactionType.CREDIT, request.amount, call)

    async def transfer(
        self, actor: Actor, request: TransferRequest, *, trace_id: str | None = None
    ) -> MovementResult:
        call = self._inner.transfer(actor, request, trace_id=trace_id)
        return await self._measure(TransactionType.TRANSFER_OUT, request.amount, call)

    async def submit(
        self,
        actor: Actor,
        kind: TransactionType,
        request: DebitOrCredit | TransferRequest,
        *,
        trace_id: str | None = None,
    ) -> MovementResult:
        call = self._inner.submit(actor, kind, request, trace_id=trace_id)
        return await self._measure(kind, request.amount, call)

    async def apply_command(self, command: Command) -> CommandOutcome:
        outcome = await self._inner.apply_command(command)
        kind = command.kind.value
        if outcome.rejected_code is not None:
            self._metrics.declined(kind, outcome.rejected_code)
        elif outcome.already_done:
            self._metrics.replayed(kind)
        elif outcome.leg is not None:
            self._count(outcome.leg)
        return outcome

    async def review(
        self,
        actor: Actor,
        transaction_id: UUID,
        decision: ReviewDecision,
        *,
        trace_id: str | None = None,
    ) -> MovementResult:
        """A released command's outcome is counted like any movement's (a rejected one as a
        decline); a repeated review is not counted again."""
        result = await self._inner.review(actor, transaction_id, decision, trace_id=trace_id)
        if not result.replayed:
            self._count(result.transaction)
        return result

    async def reverse(
        self, actor: Actor, request: ReversalRequest, *, trace_id: str | None = None
    ) -> MovementResult:
        """A reversal is counted as the movement it is (a credit, a debit or a transfer back);
        a decline, whose kind the error does not carry, under the kind ``reversal``."""
        try:
            result = await self._inner.reverse(actor, request, trace_id=trace_id)
        except BankingError as error:
            if error.replayed:
                self._metrics.replayed(REVERSAL_KIND)
            elif isinstance(error, Declined):
                self._metrics.movement(REVERSAL_KIND, TransactionStatus.FAILED.value, "", _NONE)
                self._metrics.declined(REVERSAL_KIND, error.code)
            raise
        if result.replayed:
            self._metrics.replayed(result.transaction.transaction_type.value)
        else:
            self._count(result.transaction)
        return result

    async def batch(
        self,
        actor: Actor,
        items: Sequence[BatchItem],
        *,
        atomic: bool,
        trace_id: str | None = None,
    ) -> list[ItemResult]:
        """Each item's outcome counted as a single movement's; an atomic batch that failed
        stored nothing, so it counts nothing."""
        results = await self._inner.batch(actor, items, atomic=atomic, trace_id=trace_id)
        for item, result in zip(items, results, strict=True):
            self._outcome(item.kind, item.request.amount, result)
        return results

    async def _measure(
        self, kind: TransactionType, amount: Decimal, call: Awaitable[MovementResult]
    ) -> MovementResult:
        try:
            result = await call
        except BankingError as error:
            self._outcome(kind, amount, error)
            raise
        self._outcome(kind, amount, result)
        return result

    def _outcome(self, kind: TransactionType, amount: Decimal, result: ItemResult) -> None:
        if result.replayed:
            self._metrics.replayed(kind.value)
        elif isinstance(result, MovementResult):
            self._count(result.transaction)
        elif isinstance(result, Declined):
            self._metrics.movement(kind.value, TransactionStatus.FAILED.value, "", amount)
            self._metrics.declined(kind.value, result.code)

    def _count(self, leg: Transaction) -> None:
        kind = leg.transaction_type.value
        self._metrics.movement(kind, leg.status.value, leg.currency, leg.amount)
        if leg.failure_code is not None:
            self._metrics.declined(kind, leg.failure_code)
