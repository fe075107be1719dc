"""Group commit seen from the REST door (``GROUP_COMMIT=true``): concurrent requests are
decided in shared transactions, and every client still gets exactly the answer it would have
had alone: its own balance after, its decline, its replay, with the books kept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from banking.domain.roles import Role
from banking.ledger.reconcile import reconcile
from tests.conftest import Bank, make_settings, running_bank


@pytest.fixture
async def grouped_bank(database_url: str) -> AsyncIterator[Bank]:
    settings = make_settings(database_url, group_commit=True, group_commit_window_seconds=0.005)
    async with running_bank(settings) as running:
        yield running


def _groups(bank: Bank) -> tuple[float, float]:
    """(groups decided, movements in them) from the group-size histogram."""
    metric = bank.container.metrics.group_commit_items
    samples = {s.name: s.value for family in metric.collect() for s in family.samples}
    return samples["banking_group_commit_items_count"], samples["banking_group_commit_items_sum"]


async def test_concurrent_debits_share_commits_and_each_gets_its_own_answer(
    grouped_bank: Bank,
) -> None:
    bank = grouped_bank
    _, staff = await bank.user(Role.TELLER)
    customer_id, customer = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, staff, funded="100.00")
    groups_before, movements_before = _groups(bank)

    async def debit(index: int, key: str) -> tuple[int, dict[str, object]]:
        response = await bank.client.post(
            "/api/v1/transactions/debit",
            json={
                "account_id": account_id,
                "amount": "10.00",
                "currency": "USD",
                "reference_id": key,
            },
            headers=customer,
        )
        return response.status_code, response.json()

    # 15 distinct keys for 10 debits' worth of money, and key-0 sent three times at once
    answers = await asyncio.gather(
        *[debit(index, f"key-{index}") for index in range(15)],
        debit(100, "key-0"),
        debit(101, "key-0"),
    )

    approved = [body for status, body in answers if status == 200]
    declined = [body for status, body in answers if status == 422]
    assert len(declined) == 5
    assert {body["error"]["code"] for body in declined} == {"INSUFFICIENT_FUNDS"}
    assert len({body["transaction_id"] for body in approved}) == 10  # key-0's copies share one
    # each approved caller saw the balance its own debit left: every value once
    after = sorted({Decimal(str(body["available_balance"])) for body in approved})
    assert after == [Decimal(f"{n}0.00") for n in range(10)]
    assert await bank.balance(account_id, customer) == Decimal("0.00")
    groups, movements = _groups(bank)
    assert movements - movements_before == 17
    assert groups - groups_before < 17  # some requests shared a transaction
    report = await reconcile(bank.container.unit_of_work)
    assert report.clean, report.problems
