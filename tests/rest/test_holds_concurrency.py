"""Holds under concurrency on the real PostgreSQL: captures of one hold never exceed it, and
holds, captures and debits racing on one account never take its available balance below
minus its overdraft limit; ``banking reconcile`` is clean after each run."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal
from typing import Any

import pytest

from banking.domain.roles import Role
from banking.ledger.reconcile import reconcile
from tests.conftest import Bank

pytestmark = pytest.mark.postgres
HOLDS = "/api/v1/holds"


async def balances_of(
    bank: Bank, account_id: str, headers: dict[str, str]
) -> tuple[Decimal, Decimal]:
    response = await bank.client.get(f"/api/v1/accounts/{account_id}/balance", headers=headers)
    body = response.json()
    return Decimal(body["current_balance"]), Decimal(body["available_balance"])


async def test_200_concurrent_captures_of_one_hold_capture_exactly_the_held_amount(
    pg_bank: Bank,
) -> None:
    _, staff = await pg_bank.user(Role.TELLER)
    customer_id, customer = await pg_bank.user(Role.CUSTOMER)
    account_id = await pg_bank.account(customer_id, staff, funded="150.00")
    held = await pg_bank.client.post(
        HOLDS,
        json={"account_id": account_id, "amount": "100.00", "currency": "USD"},
        headers=customer,
    )
    assert held.status_code == 201, held.text
    hold_id = held.json()["hold_id"]

    async def capture(index: int) -> tuple[int, str]:
        response = await pg_bank.client.post(
            f"{HOLDS}/{hold_id}/capture",
            json={"amount": "1.00", "reference_id": f"capture-{index}"},
            headers=customer,
        )
        if response.status_code == 200:
            return 200, "OK"
        return response.status_code, response.json()["error"]["code"]

    outcomes = await asyncio.gather(*[capture(index) for index in range(200)])

    assert outcomes.count((200, "OK")) == 100
    assert outcomes.count((409, "HOLD_NOT_OPEN")) == 100
    hold = (await pg_bank.client.get(f"{HOLDS}/{hold_id}", headers=customer)).json()
    assert (hold["status"], hold["captured_amount"]) == ("captured", "100.00")
    assert await balances_of(pg_bank, account_id, customer) == (Decimal("50.00"),) * 2
    report = await reconcile(pg_bank.container.unit_of_work)
    assert report.clean, report.problems


async def test_holds_captures_and_debits_racing_never_pass_the_overdraft_limit(
    pg_bank: Bank,
) -> None:
    _, staff = await pg_bank.user(Role.TELLER)
    customer_id, customer = await pg_bank.user(Role.CUSTOMER)
    account_id = await pg_bank.account(customer_id, staff, funded="100.00")
    limit = await pg_bank.client.put(
        f"/api/v1/accounts/{account_id}/overdraft-limit",
        json={"overdraft_limit": "20.00"},
        headers=staff,
    )
    assert limit.status_code == 200, limit.text
    rng = random.Random(15)
    amounts = [f"{rng.randint(100, 900) / 100:.2f}" for _ in range(120)]
    declined: list[int] = []

    async def hold_then_settle(index: int, amount: str) -> Decimal:
        """Hold ``amount``; then capture it, part of it, or void it. What left the account."""
        response = await pg_bank.client.post(
            HOLDS,
            json={"account_id": account_id, "amount": amount, "currency": "USD"},
            headers=customer,
        )
        if response.status_code != 201:
            assert response.json()["error"]["code"] == "INSUFFICIENT_FUNDS", response.text
            declined.append(index)
            return Decimal("0")
        hold = response.json()
        assert Decimal(await _available(pg_bank, account_id, customer)) >= Decimal("-20.00")
        choice = index % 3
        if choice == 2:
            voided = await pg_bank.client.post(f"{HOLDS}/{hold['hold_id']}/void", headers=customer)
            assert voided.status_code == 200, voided.text
            return Decimal("0")
        body: dict[str, Any] = {} if choice == 0 else {"amount": "1.00", "final": True}
        captured = await pg_bank.client.post(
            f"{HOLDS}/{hold['hold_id']}/capture", json=body, headers=customer
        )
        assert captured.status_code == 200, captured.text
        assert Decimal(captured.json()["capture"]["available_balance"]) >= Decimal("-20.00")
        return Decimal(captured.json()["capture"]["amount"])

    async def debit(index: int, amount: str) -> Decimal:
        response = await pg_bank.client.post(
            "/api/v1/transactions/debit",
            json={"account_id": account_id, "amount": amount, "currency": "USD"},
            headers=customer,
        )
        if response.status_code != 200:
            assert response.json()["error"]["code"] == "INSUFFICIENT_FUNDS", response.text
            declined.append(index)
            return Decimal("0")
        assert Decimal(response.json()["available_balance"]) >= Decimal("-20.00")
        return Decimal(response.json()["amount"])

    taken = await asyncio.gather(
        *[
            (hold_then_settle if index % 2 else debit)(index, amount)
            for index, amount in enumerate(amounts)
        ]
    )

    current, available = await balances_of(pg_bank, account_id, customer)
    assert current == available == Decimal("100.00") - sum(taken, Decimal("0"))
    assert available >= Decimal("-20.00")
    # More was asked for than the account and its overdraft hold: some were declined.
    assert declined
    report = await reconcile(pg_bank.container.unit_of_work)
    assert report.clean, report.problems


async def test_concurrent_duplicate_authorizations_hold_once(pg_bank: Bank) -> None:
    _, staff = await pg_bank.user(Role.TELLER)
    customer_id, customer = await pg_bank.user(Role.CUSTOMER)
    account_id = await pg_bank.account(customer_id, staff, funded="100.00")

    async def authorize() -> tuple[int, str, str | None]:
        response = await pg_bank.client.post(
            HOLDS,
            json={
                "account_id": account_id,
                "amount": "10.00",
                "currency": "USD",
                "reference_id": "same-order",
            },
            headers=customer,
        )
        assert response.status_code == 201, response.text
        return (
            response.status_code,
            response.json()["hold_id"],
            response.headers.get("Idempotent-Replayed"),
        )

    results = await asyncio.gather(*[authorize() for _ in range(20)])

    assert len({hold_id for _, hold_id, _ in results}) == 1
    assert [replayed for *_, replayed in results].count(None) == 1
    assert await balances_of(pg_bank, account_id, customer) == (Decimal("100.00"), Decimal("90.00"))
    report = await reconcile(pg_bank.container.unit_of_work)
    assert report.clean, report.problems


async def _available(bank: Bank, account_id: str, headers: dict[str, str]) -> str:
    response = await bank.client.get(f"/api/v1/accounts/{account_id}/balance", headers=headers)
    available: str = response.json()["available_balance"]
    return available
