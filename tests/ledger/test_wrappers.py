"""The cross-cutting wrappers of the movement service (same ``Movements`` Protocol), on the
in-memory core: metrics count each outcome once, the cache drops exactly the balances a commit
changed, the account locks serialize and time out without moving money."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from decimal import Decimal
from uuid import UUID

import pytest

from banking.cache.invalidation import InvalidatingMovements
from banking.cache.locks import LockedMovements, MemoryAccountLocks
from banking.domain.errors import AccountBusy, InsufficientFundsDeclined
from banking.domain.records import Command, DebitOrCredit, TransactionType, TransferRequest
from banking.observability.metrics import Metrics
from banking.observability.movements import MeasuredMovements
from tests.support.ledger import Core
from tests.support.memory_store import MemoryUnitOfWork


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.dropped: list[list[UUID]] = []

    def movement(self, kind: str, status: str, currency: str, amount: Decimal) -> None:
        self.calls.append(("movement", kind, status, str(amount)))

    def declined(self, kind: str, reason: str) -> None:
        self.calls.append(("declined", kind, reason))

    def replayed(self, kind: str) -> None:
        self.calls.append(("replayed", kind))

    async def invalidate_many(self, account_ids: Iterable[UUID]) -> None:
        self.dropped.append(list(account_ids))


async def test_metrics_count_completed_declined_and_replayed_once(core: Core) -> None:
    customer = await core.user()
    account = await core.account(customer, "50.00")
    recorder = Recorder()
    measured = MeasuredMovements(core.movements, recorder)
    debit = DebitOrCredit(account.account_id, Decimal("20.00"), "USD", reference_id="m1")

    await measured.debit(customer, debit)
    await measured.debit(customer, debit)  # a retry
    with pytest.raises(InsufficientFundsDeclined):
        await measured.debit(
            customer, DebitOrCredit(account.account_id, Decimal("99.00"), "USD", reference_id="m2")
        )
    with pytest.raises(InsufficientFundsDeclined):
        await measured.debit(
            customer, DebitOrCredit(account.account_id, Decimal("99.00"), "USD", reference_id="m2")
        )

    assert recorder.calls == [
        ("movement", "debit", "completed", "20.00"),
        ("replayed", "debit"),
        ("movement", "debit", "failed", "99.00"),
        ("declined", "debit", "INSUFFICIENT_FUNDS"),
        ("replayed", "debit"),
    ]
    assert await core.available(account) == Decimal("30.00")


async def test_metrics_of_commands_count_rejections_and_redeliveries(core: Core) -> None:
    customer = await core.user()
    account = await core.account(customer, "10.00")
    recorder = Recorder()
    measured = MeasuredMovements(core.movements, recorder)
    request = DebitOrCredit(account.account_id, Decimal("4.00"), "USD", reference_id="c1")
    accepted = await measured.submit(customer, TransactionType.DEBIT, request)
    command = Command(accepted.transaction.transaction_id, TransactionType.DEBIT, request, customer)

    await measured.apply_command(command)
    await measured.apply_command(command)  # Kafka delivered it twice
    # A customer's credit command is refused as a whole (FORBIDDEN), with no leg.
    forged = Command(
        UUID(int=1),
        TransactionType.CREDIT,
        request,
        customer,
    )
    rejected = await measured.apply_command(forged)

    assert rejected.rejected_code == "FORBIDDEN" and rejected.leg is None
    assert recorder.calls == [
        ("movement", "debit", "pending", "4.00"),
        ("movement", "debit", "completed", "4.00"),
        ("replayed", "debit"),
        ("declined", "credit", "FORBIDDEN"),
    ]
    assert await core.available(account) == Decimal("6.00")


async def test_the_cache_drops_exactly_the_balances_a_commit_changed(core: Core) -> None:
    alice, bob = await core.user(), await core.user()
    source = await core.account(alice, "30.00")
    destination = await core.account(bob)
    recorder = Recorder()
    invalidating = InvalidatingMovements(core.movements, recorder)
    transfer = TransferRequest(
        source.account_id, destination.account_id, Decimal("10.00"), "USD", None, "t1"
    )

    await invalidating.transfer(alice, transfer)
    await invalidating.transfer(alice, transfer)  # replayed: nothing changed
    with pytest.raises(InsufficientFundsDeclined):
        await invalidating.debit(
            alice, DebitOrCredit(source.account_id, Decimal("99.00"), "USD", reference_id="d1")
        )

    assert recorder.dropped == [[source.account_id, destination.account_id]]


async def test_locks_serialize_one_account_and_a_busy_one_moves_nothing(
    memory: MemoryUnitOfWork, core: Core
) -> None:
    customer = await core.user()
    account = await core.account(customer, "10.00")
    locks = MemoryAccountLocks(wait_seconds=0.05, metrics=Metrics())
    locked = LockedMovements(core.movements, locks)
    legs_before = len(memory.books.legs)

    async with locks.hold([account.account_id]):  # someone else holds the account
        with pytest.raises(AccountBusy):
            await locked.debit(customer, DebitOrCredit(account.account_id, Decimal("1.00"), "USD"))
    assert len(memory.books.legs) == legs_before
    results = await asyncio.gather(
        *[
            locked.debit(customer, DebitOrCredit(account.account_id, Decimal("1.00"), "USD"))
            for _ in range(5)
        ]
    )
    assert [r.transaction.balance_version_after for r in results] == [3, 4, 5, 6, 7]
    assert await core.available(account) == Decimal("5.00")
