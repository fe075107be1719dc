"""Concurrency on the real PostgreSQL: no overdraft, no deadlock reaches a client, books balance."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal

import pytest

from banking.domain.roles import Role
from banking.ledger.reconcile import reconcile
from tests.conftest import Bank

pytestmark = pytest.mark.postgres


async def test_200_concurrent_debits_of_10_on_1000_exactly_100_succeed(pg_bank: Bank) -> None:
    _, staff = await pg_bank.user(Role.TELLER)
    customer_id, customer = await pg_bank.user(Role.CUSTOMER)
    account_id = await pg_bank.account(customer_id, staff, funded="1000.00")

    async def debit(index: int) -> tuple[int, str]:
        response = await pg_bank.client.post(
            "/api/v1/transactions/debit",
            json={
                "account_id": account_id,
                "amount": "10.00",
                "currency": "USD",
                "reference_id": f"debit-{index}",
            },
            headers=customer,
        )
        code = response.json()["error"]["code"] if response.status_code != 200 else "OK"
        if response.status_code == 200:
            assert Decimal(response.json()["available_balance"]) >= 0
        return response.status_code, code

    outcomes = await asyncio.gather(*[debit(index) for index in range(200)])

    assert outcomes.count((200, "OK")) == 100
    assert outcomes.count((422, "INSUFFICIENT_FUNDS")) == 100
    assert await pg_bank.balance(account_id, customer) == Decimal("0.00")
    report = await reconcile(pg_bank.container.unit_of_work)
    assert report.clean, report.problems


async def test_500_concurrent_random_transfers_keep_the_books(pg_bank: Bank) -> None:
    _, staff = await pg_bank.user(Role.TELLER)
    _, admin = await pg_bank.user(Role.ADMIN)
    owner_id, _ = await pg_bank.user(Role.CUSTOMER)
    accounts = [await pg_bank.account(owner_id, staff, funded="100.00") for _ in range(10)]
    rng = random.Random(7)
    pairs = [tuple(rng.sample(accounts, 2)) for _ in range(500)]

    async def transfer(index: int, source: str, destination: str) -> int:
        response = await pg_bank.client.post(
            "/api/v1/transactions/transfer",
            json={
                "source_account_id": source,
                "destination_account_id": destination,
                "amount": f"{rng.randint(1, 3000) / 100:.2f}",
                "currency": "USD",
                "reference_id": f"transfer-{index}",
            },
            headers=admin,
        )
        assert response.status_code in (200, 422), response.text
        if response.status_code == 422:
            assert response.json()["error"]["code"] == "INSUFFICIENT_FUNDS"
        return response.status_code

    statuses = await asyncio.gather(
        *[transfer(index, source, destination) for index, (source, destination) in enumerate(pairs)]
    )

    assert statuses.count(200) > 250  # most succeed; the rest are honest declines, never errors
    total = sum([await pg_bank.balance(account, staff) for account in accounts], Decimal(0))
    assert total == Decimal("1000.00")
    for account in accounts:
        assert await pg_bank.balance(account, staff) >= 0
    report = await reconcile(pg_bank.container.unit_of_work)
    assert report.clean, report.problems
