"""A first check that the in-memory core moves money (the full rules are in the other files)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from banking.domain.errors import InsufficientFundsDeclined
from banking.domain.records import DebitOrCredit, LegsRecorded
from tests.support.ledger import Core
from tests.support.memory_store import MemoryUnitOfWork


async def test_debit_then_decline_keeps_the_books(core: Core, memory: MemoryUnitOfWork) -> None:
    customer = await core.user()
    account = await core.account(customer, "100.00")

    result = await core.movements.debit(
        customer, DebitOrCredit(account.account_id, Decimal("30.00"), "USD", reference_id="r1")
    )
    with pytest.raises(InsufficientFundsDeclined):
        await core.movements.debit(
            customer, DebitOrCredit(account.account_id, Decimal("80.00"), "USD", reference_id="r2")
        )

    assert result.transaction.available_balance_after == Decimal("70.00")
    assert await core.available(account) == Decimal("70.00")
    assert (await core.reconcile()).clean
    assert [type(e) for e in memory.books.events] == [LegsRecorded] * 3
    assert [row[2] for row in await core.outbox()] == [
        "transaction.completed",
        "balance.updated",
        "transaction.completed",
        "balance.updated",
        "transaction.failed",
    ]
