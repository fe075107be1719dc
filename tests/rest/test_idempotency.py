"""Idempotency with Stripe semantics (DESIGN.md section 4), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from banking.domain.roles import Role
from tests.conftest import Bank


async def test_same_key_sent_twenty_times_concurrently_applies_once(
    bank: Bank, staff: dict[str, str]
) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, staff, funded="100.00")
    body = {
        "account_id": account_id,
        "amount": "10.00",
        "currency": "USD",
        "reference_id": "pay-invoice-42",
    }

    responses = await asyncio.gather(
        *[
            bank.client.post("/api/v1/transactions/debit", json=body, headers=customer)
            for _ in range(20)
        ]
    )

    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1, "every response must be identical"
    replayed = [r for r in responses if r.headers.get("Idempotent-Replayed") == "true"]
    assert len(replayed) == 19
    assert await bank.balance(account_id, customer) == Decimal("90.00")
    history = await bank.client.get(
        f"/api/v1/accounts/{account_id}/transactions", params={"type": "debit"}, headers=customer
    )
    assert len(history.json()["transactions"]) == 1


async def test_idempotency_key_header_replays_like_reference_id(
    bank: Bank, staff: dict[str, str]
) -> None:
    customer_id, _ = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, staff)
    body = {"account_id": account_id, "amount": "5.00", "currency": "USD"}
    headers = {**staff, "Idempotency-Key": "deposit-7"}
    first = await bank.client.post("/api/v1/transactions/credit", json=body, headers=headers)
    again = await bank.client.post("/api/v1/transactions/credit", json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert first.json()["reference_id"] == "deposit-7"
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert await bank.balance(account_id, staff) == Decimal("5.00")


async def test_same_key_with_different_parameters_is_a_conflict(
    bank: Bank, staff: dict[str, str]
) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, staff, funded="100.00")
    body = {"account_id": account_id, "amount": "10.00", "currency": "USD", "reference_id": "k-1"}
    assert (
        await bank.client.post("/api/v1/transactions/debit", json=body, headers=customer)
    ).status_code == 200
    before = await bank.snapshot()

    conflict = await bank.client.post(
        "/api/v1/transactions/debit", json=body | {"amount": "11.00"}, headers=customer
    )

    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "IDEMPOTENCY_CONFLICT"
    assert await bank.snapshot() == before
    assert await bank.balance(account_id, customer) == Decimal("90.00")


async def test_replayed_decline_stays_declined_after_funds_arrive(
    bank: Bank, staff: dict[str, str]
) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, staff, funded="5.00")
    body = {
        "account_id": account_id,
        "amount": "50.00",
        "currency": "USD",
        "reference_id": "too-much",
    }
    declined = await bank.client.post("/api/v1/transactions/debit", json=body, headers=customer)
    assert declined.status_code == 422
    assert declined.json()["error"]["code"] == "INSUFFICIENT_FUNDS"
    failed_id = declined.json()["error"]["transaction_id"]

    credit = await bank.client.post(
        "/api/v1/transactions/credit",
        json={"account_id": account_id, "amount": "100.00", "currency": "USD"},
        headers=staff,
    )
    assert credit.status_code == 200
    replay = await bank.client.post("/api/v1/transactions/debit", json=body, headers=customer)

    assert replay.status_code == 422
    assert replay.json()["error"]["code"] == "INSUFFICIENT_FUNDS"
    assert replay.json()["error"]["transaction_id"] == failed_id
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert await bank.balance(account_id, customer) == Decimal("105.00")


async def test_transfer_retry_moves_money_once(bank: Bank, staff: dict[str, str]) -> None:
    alice_id, alice = await bank.user(Role.CUSTOMER)
    bob_id, _ = await bank.user(Role.CUSTOMER)
    source = await bank.account(alice_id, staff, funded="100.00")
    destination = await bank.account(bob_id, staff)
    body = {
        "source_account_id": source,
        "destination_account_id": destination,
        "amount": "30.00",
        "currency": "USD",
        "reference_id": "t-1",
    }
    responses = await asyncio.gather(
        *[
            bank.client.post("/api/v1/transactions/transfer", json=body, headers=alice)
            for _ in range(5)
        ]
    )
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    assert await bank.balance(source, alice) == Decimal("70.00")
    assert await bank.balance(destination, staff) == Decimal("30.00")


async def test_same_reference_on_different_accounts_are_different_requests(
    bank: Bank, staff: dict[str, str]
) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    first = await bank.account(customer_id, staff, funded="10.00")
    second = await bank.account(customer_id, staff, funded="10.00")
    for account_id in (first, second):
        response = await bank.client.post(
            "/api/v1/transactions/debit",
            json={
                "account_id": account_id,
                "amount": "1.00",
                "currency": "USD",
                "reference_id": "shared",
            },
            headers=customer,
        )
        assert response.status_code == 200
        assert "Idempotent-Replayed" not in response.headers
    assert await bank.balance(first, customer) == Decimal("9.00")
    assert await bank.balance(second, customer) == Decimal("9.00")
