"""The movement service: debits, credits, transfers and asynchronous commands, as use cases.

This module only composes: the rules are in ``checks`` (validation), ``decisions`` (applied,
declined or refused), ``recording`` (legs, journal, events), ``idempotency`` (replays and
conflicts), ``commands`` (the asynchronous path), ``review`` (held commands) and
``reversals`` (a movement that undoes another). Each
movement is one unit of work.
Locks, metrics and cache invalidation wrap this service with the same ``Movements`` Protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from uuid import UUID

from banking.domain.errors import (
    AccountNotFound,
    BankingError,
    BatchItemFailed,
    TransactionNotFound,
    ValidationFailed,
)
from banking.domain.records import (
    BatchItem,
    Command,
    CommandOutcome,
    DebitOrCredit,
    FraudScore,
    MovementResult,
    ReversalRequest,
    Reversals,
    ReviewDecision,
    Transaction,
    TransactionType,
    TransferRequest,
)
from banking.domain.roles import Actor
from banking.ledger import commands, reversals, review
from banking.ledger.access import require_visible
from banking.ledger.checks import REFERENCE_ID_LENGTH_MAX, check_movement, require_may_move
from banking.ledger.groups import GroupCommit, GroupItem, ItemResult, run_atomic, run_group
from banking.ledger.idempotency import outcome
from banking.ledger.ports import LedgerStore, UnitOfWork

# The most items one batch may hold (the doors may allow fewer: BATCH_ITEMS_MAX).
BATCH_ITEMS_MAX = 1000
# A batch's idempotency key makes each item's key "<key>:<index>": short enough that the
# longest (index 999) is still a valid reference_id.
BATCH_KEY_LENGTH_MAX = REFERENCE_ID_LENGTH_MAX - len(f":{BATCH_ITEMS_MAX - 1}")


def keyed_batch(items: Sequence[BatchItem], key: str | None) -> list[BatchItem]:
    """``items`` under a batch's idempotency key: an item without its own ``reference_id``
    gets ``<key>:<index>``, so the same batch sent again with the same key replays every item.
    ``ValidationFailed`` (field ``idempotency_key``) for a key that is not 1 to
    ``BATCH_KEY_LENGTH_MAX`` printable characters."""
    if key is None:
        return list(items)
    check_idempotency_key(key)
    return [
        item
        if item.request.reference_id is not None
        else replace(item, request=replace(item.request, reference_id=f"{key}:{index}"))
        for index, item in enumerate(items)
    ]


def check_idempotency_key(key: str) -> None:
    """An ``Idempotency-Key`` of a batch or of a creation: 1 to ``BATCH_KEY_LENGTH_MAX``
    printable characters, else ``ValidationFailed`` (field ``idempotency_key``)."""
    if not key or len(key) > BATCH_KEY_LENGTH_MAX or not key.isprintable():
        raise ValidationFailed(
            f"the idempotency key must be 1 to {BATCH_KEY_LENGTH_MAX} printable characters",
            field="idempotency_key",
        )


class MovementService:
    """Implements ``banking.ledger.ports.Movements`` on a unit of work. With ``group_commit``
    a synchronous movement is decided together with the others that arrive with it
    (``groups.GroupCommit``); without, in a unit of work of its own."""

    def __init__(
        self, unit_of_work: UnitOfWork, *, group_commit: GroupCommit | None = None
    ) -> None:
        self._unit_of_work = unit_of_work
        self._group_commit = group_commit

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

    async def batch(
        self,
        actor: Actor,
        items: Sequence[BatchItem],
        *,
        atomic: bool,
        trace_id: str | None = None,
    ) -> list[ItemResult]:
        if not items:
            raise ValidationFailed("a batch needs at least one item", field="items")
        if len(items) > BATCH_ITEMS_MAX:
            raise ValidationFailed(f"a batch has at most {BATCH_ITEMS_MAX} items", field="items")
        results: list[ItemResult | None] = [None] * len(items)
        group: list[GroupItem] = []
        positions: list[int] = []
        for index, item in enumerate(items):
            try:
                require_may_move(actor, item.kind)
                checked = check_movement(item.kind, item.request)
            except BankingError as error:
                if atomic:
                    raise BatchItemFailed(index, error) from None
                results[index] = error
                continue
            group.append(GroupItem(actor, checked, trace_id))
            positions.append(index)
        if atomic:
            decided: list[ItemResult] = list(await run_atomic(self._unit_of_work, group))
        else:
            decided = await run_group(self._unit_of_work, group)
        for index, result in zip(positions, decided, strict=True):
            results[index] = _as_answered(result)
        return [result for result in results if result is not None]

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

    async def reverse(
        self, actor: Actor, request: ReversalRequest, *, trace_id: str | None = None
    ) -> MovementResult:
        return await reversals.reverse(self._unit_of_work, actor, request, trace_id=trace_id)

    async def get_reversals(
        self, actor: Actor, transaction_id: UUID
    ) -> tuple[Transaction, Reversals]:
        return await reversals.reversals_of(self._unit_of_work, actor, transaction_id)

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
        item = GroupItem(actor, check_movement(kind, request), trace_id)
        if self._group_commit is not None:
            result = await self._group_commit.run(item)
        else:
            (result,) = await run_group(self._unit_of_work, [item])
        if isinstance(result, BankingError):
            raise result
        return outcome(result)


def _as_answered(result: ItemResult) -> ItemResult:
    """A batch item's result as a single request would answer it: a declined leg is its
    error (naming the stored leg)."""
    if isinstance(result, BankingError):
        return result
    try:
        return outcome(result)
    except BankingError as error:
        return error
