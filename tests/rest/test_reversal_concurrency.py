"""Reversals under concurrency on the real PostgreSQL: a reversal racing a debit on the same
account never overdraws it, many concurrent partial reversals of one movement never exceed
it in total, concurrent duplicates apply once; no deadlock reaches a client, and
``banking reconcile`` is clean after each."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from banking.domain.roles import Role
from banking.ledger.reconcile import reconcile
from tests.conftest import Bank

pytestmark = pytest.mark.postgres


async def _post(bank: Bank, path: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    return await bank.client.post(f"/api/v1/transactions/{path}", json=body, headers=headers)


def _outcome(response: Any) -> str:
    if response.status_code == 200:
        return "OK"
    return str(response.json()["error"]["code"])


async def _clean(bank: Bank) -> None:
    report = await reconcile(bank.container.unit_of_work)
    assert report.clean, report.problems


async def test_a_reversal_of_a_credit_racing_a_debit_never_overdraws(pg_bank: Bank) -> None:
    _, staff = await pg_bank.user(Role.TELLER)
    customer_id, customer = await pg_bank.user(Role.CUSTOMER)
    accounts = [await pg_bank.account(customer_id, staff) for _ in range(10)]
    credits = [
        (
            await _post(
                pg_bank, "credit", {"account_id": a, "amount": "100.00", "currency": "USD"}, staff
            )
        ).json()
        for a in accounts
    ]

    async def race(account_id: str, credit: dict[str, Any]) -> tuple[str, str]:
        debit = _post(
            pg_bank,
            "debit",
            {"account_id": account_id, "amount": "60.00", "currency": "USD"},
            customer,
        )
        reversal = _post(
            pg_bank, f"{credit['transaction_id']}/reverse", {"reason": "chargeback"}, staff
        )
        debited, reversed_ = await asyncio.gather(debit, reversal)
        return _outcome(debited), _outcome(reversed_)

    outcomes = await asyncio.gather(
        *[race(account, credit) for account, credit in zip(accounts, credits, strict=True)]
    )

    # 100.00 cannot pay both 60.00 and 100.00: exactly one of each pair went through.
    assert set(outcomes) <= {("OK", "INSUFFICIENT_FUNDS"), ("INSUFFICIENT_FUNDS", "OK")}
    for account_id, credit, (debited, _) in zip(accounts, credits, outcomes, strict=True):
        balance = await pg_bank.balance(account_id, staff)
        assert balance == (Decimal("40.00") if debited == "OK" else Decimal("0.00"))
        view = await pg_bank.client.get(
            f"/api/v1/transactions/{credit['transaction_id']}", headers=staff
        )
        assert view.json()["reversed_amount"] == ("0.00" if debited == "OK" else "100.00")
    await _clean(pg_bank)


async def test_many_concurrent_partial_reversals_never_exceed_the_original(
    pg_bank: Bank,
) -> None:
    _, staff = await pg_bank.user(Role.TELLER)
    customer_id, customer = await pg_bank.user(Role.CUSTOMER)
    account_id = await pg_bank.account(customer_id, staff, funded="100.00")
    debit = (
        await _post(
            pg_bank,
            "debit",
            {"account_id": account_id, "amount": "20.00", "currency": "USD"},
            customer,
        )
    ).json()

    async def part(index: int) -> str:
        response = await _post(
            pg_bank,
            f"{debit['transaction_id']}/reverse",
            {"reason": "partial refund", "amount": "1.00", "reference_id": f"part-{index}"},
            staff,
        )
        if response.status_code == 422:
            assert response.json()["error"]["details"] == [{"field": "amount"}]
        return _outcome(response)

    outcomes = await asyncio.gather(*[part(index) for index in range(50)])

    assert outcomes.count("OK") == 20
    assert outcomes.count("VALIDATION_ERROR") == 30
    assert await pg_bank.balance(account_id, customer) == Decimal("100.00")
    view = await pg_bank.client.get(
        f"/api/v1/transactions/{debit['transaction_id']}", headers=staff
    )
    assert view.json()["reversed_amount"] == "20.00"
    assert len(view.json()["reversals"]) == 20
    await _clean(pg_bank)


async def test_concurrent_duplicates_of_a_reversal_apply_once(pg_bank: Bank) -> None:
    _, staff = await pg_bank.user(Role.TELLER)
    customer_id, customer = await pg_bank.user(Role.CUSTOMER)
    account_id = await pg_bank.account(customer_id, staff, funded="100.00")
    debit = (
        await _post(
            pg_bank,
            "debit",
            {"account_id": account_id, "amount": "20.00", "currency": "USD"},
            customer,
        )
    ).json()

    responses = await asyncio.gather(
        *[
            _post(
                pg_bank,
                f"{debit['transaction_id']}/reverse",
                {"reason": "duplicate", "reference_id": "once"},
                staff,
            )
            for _ in range(20)
        ]
    )

    assert [response.status_code for response in responses] == [200] * 20
    assert len({response.json()["transaction_id"] for response in responses}) == 1
    replayed = [response.headers.get("Idempotent-Replayed") for response in responses]
    assert replayed.count("true") == 19
    assert await pg_bank.balance(account_id, customer) == Decimal("100.00")
    await _clean(pg_bank)
