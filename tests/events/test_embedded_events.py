"""The embedded event log: async commands and consumers in-process, no Kafka (both databases)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from banking.domain.roles import Role
from banking.storage.tables import outbox
from banking.workers.runtime import EmbeddedEvents
from tests.conftest import Bank

SETTLE_TIMEOUT_SECONDS = 20


@pytest.fixture
async def events(bank: Bank) -> AsyncIterator[EmbeddedEvents]:
    embedded = EmbeddedEvents(bank.container)
    await embedded.start()
    yield embedded
    await embedded.stop()


async def settled(bank: Bank, location: str, headers: dict[str, str]) -> dict[str, object]:
    """Poll a transaction until it is no longer pending (bounded)."""
    deadline = asyncio.get_running_loop().time() + SETTLE_TIMEOUT_SECONDS
    while True:
        body: dict[str, object] = (await bank.client.get(location, headers=headers)).json()
        if body["status"] != "pending":
            return body
        assert asyncio.get_running_loop().time() < deadline, f"still pending: {body}"
        await asyncio.sleep(0.05)


async def test_async_debit_is_accepted_then_applied(
    bank: Bank, staff: dict[str, str], events: EmbeddedEvents
) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, staff, funded="100.00")
    body = {"account_id": account_id, "amount": "30.00", "currency": "USD", "reference_id": "a-1"}

    accepted = await bank.client.post(
        "/api/v1/transactions/debit", json=body, headers={**customer, "Prefer": "respond-async"}
    )

    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["status"] == "pending"
    assert accepted.headers["Preference-Applied"] == "respond-async"
    location = accepted.headers["Location"]
    assert location == f"/api/v1/transactions/{accepted.json()['transaction_id']}"
    final = await settled(bank, location, customer)
    assert final["status"] == "completed"
    assert await bank.balance(account_id, customer) == Decimal("70.00")

    again = await bank.client.post(
        "/api/v1/transactions/debit", json=body, headers={**customer, "Prefer": "respond-async"}
    )
    assert again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["transaction_id"] == accepted.json()["transaction_id"]
    assert again.json()["status"] == "completed"
    assert await bank.balance(account_id, customer) == Decimal("70.00")


async def test_async_transfer_without_funds_ends_failed(
    bank: Bank, staff: dict[str, str], events: EmbeddedEvents
) -> None:
    alice_id, alice = await bank.user(Role.CUSTOMER)
    bob_id, bob = await bank.user(Role.CUSTOMER)
    source = await bank.account(alice_id, staff, funded="10.00")
    destination = await bank.account(bob_id, staff)
    accepted = await bank.client.post(
        "/api/v1/transactions/transfer",
        json={
            "source_account_id": source,
            "destination_account_id": destination,
            "amount": "25.00",
            "currency": "USD",
        },
        headers={**alice, "Prefer": "respond-async"},
    )
    assert accepted.status_code == 202
    final = await settled(bank, accepted.headers["Location"], alice)
    assert final["status"] == "failed"
    assert final["failure_code"] == "INSUFFICIENT_FUNDS"
    assert await bank.balance(source, alice) == Decimal("10.00")
    assert await bank.balance(destination, bob) == Decimal("0.00")


async def test_async_request_that_cannot_succeed_is_refused_at_once(
    bank: Bank, staff: dict[str, str], events: EmbeddedEvents
) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, staff)
    before = await bank.snapshot()
    refused = await bank.client.post(
        "/api/v1/transactions/debit",
        json={"account_id": account_id, "amount": "1.00", "currency": "EUR"},
        headers={**customer, "Prefer": "respond-async"},
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "CURRENCY_MISMATCH"
    assert await bank.snapshot() == before


async def test_many_async_transfers_settle_and_publish_every_event(
    bank: Bank, staff: dict[str, str], events: EmbeddedEvents
) -> None:
    owner_id, owner = await bank.user(Role.CUSTOMER)
    accounts = [await bank.account(owner_id, staff, funded="50.00") for _ in range(4)]
    responses = await asyncio.gather(
        *[
            bank.client.post(
                "/api/v1/transactions/transfer",
                json={
                    "source_account_id": accounts[i % 4],
                    "destination_account_id": accounts[(i + 1) % 4],
                    "amount": "7.00",
                    "currency": "USD",
                    "reference_id": f"many-{i}",
                },
                headers={**owner, "Prefer": "respond-async"},
            )
            for i in range(40)
        ]
    )
    assert {r.status_code for r in responses} == {202}
    finals = [await settled(bank, r.headers["Location"], owner) for r in responses]
    assert {f["status"] for f in finals} <= {"completed", "failed"}
    total = sum([await bank.balance(a, owner) for a in accounts], Decimal(0))
    assert total == Decimal("200.00")
    await events.relay.drain()
    async with bank.container.database.read() as connection:
        unpublished = (
            await connection.execute(
                select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
            )
        ).scalar_one()
    assert unpublished == 0
