"""The movement service: debits, credits, transfers and asynchronous commands, as use cases.

This module only composes: the rules are in ``checks`` (validation), ``decisions`` (applied,
declined or refused), ``recording`` (legs, journal, events), ``idempotency`` (replays and
conflicts), ``commands`` (the asynchronous path) and ``review`` (held commands). Each
movement is one unit of work.
Locks, metrics and cache invalidation wrap this service with the same ``Movements`` Protocol.
"""

from __future__ import annotations

from uuid import UUID

from banking.domain.errors import AccountNotFound, TransactionNotFound
from banking.domain.records import (
    Command,
    CommandOutcome,
    DebitOrCredit,
    FraudScore,
    MovementResult,
    ReviewDecision,
    Transaction,
    TransactionType,
    TransferRequest,
)
from banking.domain.roles import Actor
from banking.ledger import commands, review
from banking.ledger.access import require_visible
from banking.ledger.checks import check_movement, require_may_move
from banking.ledger.decisions import DECISIONS
from banking.ledger.idempotency import outcome, run_once
from banking.ledger.ports import LedgerStore, UnitOfWork


class MovementService:
    """Implements ``banking.ledger.ports.Movements`` on a unit of work."""

    def __init__(self, unit_of_work: UnitOfWork) -> None:
        self._unit_of_work = unit_of_work

    async def debit(
        self, actor: Actor, request: DebitOrCredit, *, trace_id: str | None = None
    ) -> MovementResult:
        return await self._move(TransactionType.DEBIT, actor, request, trace_id)

    async def credit(
        self, actor: Actor, request: DebitOrCredit, *, trace_id: str | None = None
    ) -> MovementResult:
        return await self._move(TransactionType.CREDIT, actor, request, trace_id)

    async def transfer(
        self, actor: Actor, request: TransferRequest, *, trace_id: str | None = None
    ) -> MovementResult:
        return await self._move(TransactionType.TRANSFER_OUT, actor, request, trace_id)

    async def submit(
        self,
        actor: Actor,
        kind: TransactionType,
        request: DebitOrCredit | TransferRequest,
        *,
        trace_id: str | None = None,
    ) -> MovementResult:
        return await commands.submit(self._unit_of_work, actor, kind, request, trace_id=trace_id)

    async def apply_command(self, command: Command) -> CommandOutcome:
        return await commands.apply_command(self._unit_of_work, command)

    async def hold_command(self, command: Command, score: FraudScore) -> CommandOutcome:
        return await review.hold_command(self._unit_of_work, command, score)

    async def review(
        self,
        actor: Actor,
        transaction_id: UUID,
        decision: ReviewDecision,
        *,
        trace_id: str | None = None,
    ) -> MovementResult:
        decide = review.release if decision is ReviewDecision.RELEASED else review.reject
        return await decide(self._unit_of_work, actor, transaction_id, trace_id=trace_id)

    async def get_transaction(self, actor: Actor, transaction_id: UUID) -> Transaction:
        async def read(store: LedgerStore) -> Transaction:
            leg = await store.get_transaction(transaction_id)
            if leg is None:
                raise TransactionNotFound("transaction not found")
            try:
                require_visible(actor, await store.get_account(leg.account_id))
            except AccountNotFound as error:
                raise TransactionNotFound("transaction not found") from error
            return leg

        # A lookup may be slightly behind (a replica), never behind the caller's own writes.
        return await self._unit_of_work.read_may_lag(actor.user_id, read)

    async def _move(
        self,
        kind: TransactionType,
        actor: Actor,
        request: DebitOrCredit | TransferRequest,
        trace_id: str | None,
    ) -> MovementResult:
        require_may_move(actor, kind)
        checked = check_movement(kind, request)
        decide = DECISIONS[kind]

        async def work(store: LedgerStore) -> Transaction:
            return await decide(store, actor, checked, None, trace_id)

        return outcome(await run_once(self._unit_of_work, checked, work))
