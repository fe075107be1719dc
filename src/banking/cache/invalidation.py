"""Cache invalidation on commit, as a wrapper of the movement service (same ``Movements``).

After a movement that changed balances commits, and before its caller is answered, the
balance cache drops those accounts, so a client never reads its own write stale. It must not
raise: the money has already moved (the caches log and retry their own failures).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol
from uuid import UUID

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
    TransferRequest,
)
from banking.domain.roles import Actor
from banking.ledger.groups import ItemResult
from banking.ledger.ports import Movements, MovementsDecorator


class Invalidates(Protocol):
    async def invalidate_many(self, account_ids: Iterable[UUID]) -> None: ...


def changed_accounts(leg: Transaction | None) -> list[UUID]:
    """The accounts whose balance a finished leg changed (none unless it completed)."""
    if leg is None or leg.status is not TransactionStatus.COMPLETED:
        return []
    if leg.counterparty_account_id is None:
        return [leg.account_id]
    return [leg.account_id, leg.counterparty_account_id]


class InvalidatingMovements(MovementsDecorator):
    """``Movements`` that drop the changed balances from the cache after every commit."""

    def __init__(self, inner: Movements, cache: Invalidates) -> None:
        super().__init__(inner)
        self._cache = cache

    async def debit(
        self, actor: Actor, request: DebitOrCredit, *, trace_id: str | None = None
    ) -> MovementResult:
        return await self._after(await self._inner.debit(actor, request, trace_id=trace_id))

    async def credit(
        self, actor: Actor, request: DebitOrCredit, *, trace_id: str | None = None
    ) -> MovementResult:
        return await self._after(await self._inner.credit(actor, request, trace_id=trace_id))

    async def transfer(
        self, actor: Actor, request: TransferRequest, *, trace_id: str | None = None
    ) -> MovementResult:
        return await self._after(await self._inner.transfer(actor, request, trace_id=trace_id))

    async def apply_command(self, command: Command) -> CommandOutcome:
        outcome = await self._inner.apply_command(command)
        if not outcome.already_done:
            await self._drop(changed_accounts(outcome.leg))
        return outcome

    async def review(
        self,
        actor: Actor,
        transaction_id: UUID,
        decision: ReviewDecision,
        *,
        trace_id: str | None = None,
    ) -> MovementResult:
        call = self._inner.review(actor, transaction_id, decision, trace_id=trace_id)
        return await self._after(await call)

    async def reverse(
        self, actor: Actor, request: ReversalRequest, *, trace_id: str | None = None
    ) -> MovementResult:
        return await self._after(await self._inner.reverse(actor, request, trace_id=trace_id))

    async def batch(
        self,
        actor: Actor,
        items: Sequence[BatchItem],
        *,
        atomic: bool,
        trace_id: str | None = None,
    ) -> list[ItemResult]:
        """One drop for every account a completed item changed (a batch commits once)."""
        results = await self._inner.batch(actor, items, atomic=atomic, trace_id=trace_id)
        changed = {
            account_id
            for result in results
            if isinstance(result, MovementResult) and not result.replayed
            for account_id in changed_accounts(result.transaction)
        }
        await self._drop(sorted(changed))
        return results

    async def _after(self, result: MovementResult) -> MovementResult:
        if not result.replayed:
            await self._drop(changed_accounts(result.transaction))
        return result

    async def _drop(self, account_ids: list[UUID]) -> None:
        if account_ids:
            await self._cache.invalidate_many(account_ids)
