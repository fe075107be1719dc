"""Movements decided together in one unit of work and one commit: a group commit's requests
and a batch's items.

Each item keeps its own outcome. An item that is declined is stored as a failed leg, like any
decline; an item that is refused (not found, forbidden, another currency, over the balance
limit) leaves nothing behind and does not fail the others: the store decides each item in a
savepoint (``LedgerStore.decide_movements``). The balance rows of every account of a group are
locked first, in account-id order, so two groups never wait for each other in a cycle; the
items are decided in their order, so an account's legs, journal and outbox rows follow it. A
database error fails the whole group, or retries it when safe: the unit of work runs it again
from the start.

An item whose idempotency key is already held (an earlier request, a concurrent duplicate, or
an earlier item of the same group) is replayed: the stored leg if it was made from the same
parameters, ``IDEMPOTENCY_CONFLICT`` otherwise, exactly as a single request's retry.

An atomic group (``run_atomic``, a batch with ``atomic: true``) commits only when every item
completes (a replay of a completed leg counts); otherwise nothing is stored, declines
included, and ``BatchItemFailed`` names the first item that did not complete.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from uuid import UUID

from banking.domain.errors import (
    BankingError,
    BatchItemFailed,
    ReferenceAlreadyUsed,
    error_for_failure,
)
from banking.domain.records import MovementResult, Transaction, TransactionStatus
from banking.domain.roles import Actor
from banking.ledger.checks import CheckedMovement
from banking.ledger.decisions import DECISIONS
from banking.ledger.idempotency import matching_leg, run_once
from banking.ledger.ports import LedgerStore, UnitOfWork


@dataclass(frozen=True, slots=True)
class GroupItem:
    """One movement of a group: who asks, the checked request, and its trace."""

    actor: Actor
    checked: CheckedMovement
    trace_id: str | None = None

    @property
    def account_ids(self) -> tuple[UUID, ...]:
        checked = self.checked
        if checked.counterparty_id is None:
            return (checked.account_id,)
        return (checked.account_id, checked.counterparty_id)


# What the store decided for an item: its initiating leg as stored (completed, or failed when
# declined), or the error that refused it (nothing of it was stored). ``ReferenceAlreadyUsed``
# means its key is held: the caller replays it.
Decided = Transaction | BankingError
# What the caller of an item gets: the movement's result (a replay included), or the error.
ItemResult = MovementResult | BankingError


def group_account_ids(items: Sequence[GroupItem]) -> list[UUID]:
    """Every account of the group, in the one lock order."""
    return sorted({account_id for item in items for account_id in item.account_ids})


async def decide_each(store: LedgerStore, items: Sequence[GroupItem]) -> list[Decided]:
    """``LedgerStore.decide_movements`` with the ledger's own decisions (``decisions``), one
    item after the other: what every store does unless it decides a group in one call of its
    own, and what such a store must match (the store contract tests run both).

    A single item needs no savepoint: when it is refused the unit of work is rolled back
    (``run_group``), and a used key surfaces from the unit of work itself."""
    if len(items) == 1:
        try:
            return [await _decide(store, items[0])]
        except ReferenceAlreadyUsed:
            raise
        except BankingError as error:
            return [error]
    await store.lock_balances(group_account_ids(items))
    decided: list[Decided] = []
    for item in items:
        try:
            async with store.savepoint():
                decided.append(await _decide(store, item))
        except BankingError as error:
            decided.append(error)
    return decided


async def _decide(store: LedgerStore, item: GroupItem) -> Transaction:
    decide = DECISIONS[item.checked.kind]
    return await decide(store, item.actor, item.checked, None, item.trace_id)


class _RolledBack(Exception):
    """Raised inside the unit of work to roll it back, carrying what the caller is told."""

    def __init__(self, error: BankingError) -> None:
        super().__init__(error.message)
        self.error = error


async def run_group(unit_of_work: UnitOfWork, items: Sequence[GroupItem]) -> list[ItemResult]:
    """Decide ``items`` in one unit of work and commit once: each item's result, in order."""
    if len(items) == 1:
        return [await _run_single(unit_of_work, items[0], atomic=False)]
    if not items:
        return []

    async def work(store: LedgerStore) -> list[ItemResult]:
        decided = await store.decide_movements(items)
        return [
            await _result(store, item, outcome)
            for item, outcome in zip(items, decided, strict=True)
        ]

    return await unit_of_work.run(work)


async def run_atomic(unit_of_work: UnitOfWork, items: Sequence[GroupItem]) -> list[MovementResult]:
    """Decide ``items`` in one unit of work, all or nothing: committed when every item
    completed (or replays a completed leg); otherwise rolled back and ``BatchItemFailed``
    raised for the first item that did not."""
    if len(items) == 1:
        result = await _run_single(unit_of_work, items[0], atomic=True)
        if isinstance(result, BankingError):
            raise BatchItemFailed(0, result)
        return [result]

    async def work(store: LedgerStore) -> list[MovementResult]:
        decided = await store.decide_movements(items)
        results: list[MovementResult] = []
        for index, (item, outcome) in enumerate(zip(items, decided, strict=True)):
            result = await _result(store, item, outcome)
            failure = _failure(result)
            if failure is not None:
                raise _RolledBack(BatchItemFailed(index, failure))
            if isinstance(result, MovementResult):
                results.append(result)
        return results

    try:
        return await unit_of_work.run(work)
    except _RolledBack as rolled_back:
        raise rolled_back.error from None


async def _run_single(unit_of_work: UnitOfWork, item: GroupItem, *, atomic: bool) -> ItemResult:
    """One item in its own unit of work: a refusal (or, when ``atomic``, a decline) rolls it
    back; a used key, which PostgreSQL reports by aborting the transaction, is replayed in a
    read of its own."""

    async def work(store: LedgerStore) -> Transaction:
        (outcome,) = await store.decide_movements([item])
        if isinstance(outcome, BankingError):
            raise _RolledBack(outcome)
        failure = _failure(MovementResult(outcome, replayed=False)) if atomic else None
        if failure is not None:
            raise _RolledBack(failure)
        return outcome

    try:
        return await run_once(unit_of_work, item.checked, work)
    except _RolledBack as rolled_back:
        return rolled_back.error
    except BankingError as error:  # the replay's: another request's parameters
        return error


async def _result(store: LedgerStore, item: GroupItem, outcome: Decided) -> ItemResult:
    """An item's result inside the group's unit of work: a used key is replayed there."""
    if isinstance(outcome, ReferenceAlreadyUsed):
        try:
            return MovementResult(await matching_leg(store, item.checked), replayed=True)
        except BankingError as error:
            return error
    if isinstance(outcome, BankingError):
        return outcome
    return MovementResult(outcome, replayed=False)


def _failure(result: ItemResult) -> BankingError | None:
    """Why an item of an atomic group did not complete, or None when it did. A decline's
    leg is not stored (the group rolls back), so its error names no transaction."""
    if isinstance(result, BankingError):
        return result
    leg = result.transaction
    if leg.status is TransactionStatus.COMPLETED:
        return None
    error = error_for_failure(
        leg.failure_code, leg.failure_reason, transaction_id=leg.transaction_id
    )
    if not result.replayed:
        error.transaction_id = None
    return error


class GroupCommit:
    """Group commit: concurrent movements of this process are decided in one unit of work and
    one commit, each answered with its own result (``run_group``).

    A group forms from the movements that arrive within ``window_seconds`` of the first, at most
    ``max_items``. At most ``in_flight_max`` groups run at once: what arrives while they run
    waits and forms the next group as soon as one finishes (no window then), so the busier the
    process, the larger its groups, and its own groups do not wait for each other's row locks.
    Groups lock their accounts in the one order, so groups of several processes never
    deadlock."""

    def __init__(
        self,
        unit_of_work: UnitOfWork,
        *,
        window_seconds: float,
        max_items: int,
        in_flight_max: int = 1,
        on_group: Callable[[int], None] | None = None,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._window_seconds = window_seconds
        self._max_items = max_items
        self._in_flight_max = in_flight_max
        self._on_group = on_group  # told each group's size (a metric)
        self._waiting: list[tuple[GroupItem, asyncio.Future[ItemResult]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def run(self, item: GroupItem) -> ItemResult:
        """``item``'s result, decided with whatever else arrives in the window."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ItemResult] = loop.create_future()
        self._waiting.append((item, future))
        if len(self._running) < self._in_flight_max:
            if len(self._waiting) >= self._max_items:
                self._flush()
            elif self._timer is None:
                self._timer = loop.call_later(self._window_seconds, self._flush)
        # A caller that goes away (a cancelled request) does not cancel its group.
        return await asyncio.shield(future)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting and len(self._running) < self._in_flight_max:
            waiting = self._waiting[: self._max_items]
            del self._waiting[: self._max_items]
            if self._on_group is not None:
                self._on_group(len(waiting))
            task = asyncio.get_running_loop().create_task(self._decide(waiting))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._flush()  # what waited while the groups ran is the next group, at once

    async def _decide(self, waiting: list[tuple[GroupItem, asyncio.Future[ItemResult]]]) -> None:
        try:
            results = await run_group(self._unit_of_work, [item for item, _ in waiting])
        except Exception as error:  # noqa: BLE001 - the group's database error is every item's
            for _, future in waiting:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), result in zip(waiting, results, strict=True):
            if not future.done():
                future.set_result(result)
