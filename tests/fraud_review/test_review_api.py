"""The fraud review over REST, on the embedded event log (SQLite and PostgreSQL): with the
hold threshold at 0 every asynchronous command is held, so the flow is deterministic. A held
command moves no money until a teller releases it; a rejected one fails with FRAUD_REJECTED;
release and reject are idempotent, staff-only (a customer gets 404), and audited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from sqlalchemy import select

from banking.domain.roles import Role
from banking.storage.tables import transaction_logs
from banking.workers.runtime import EmbeddedEvents
from tests.conftest import Bank, make_settings, running_bank

SETTLE_SECONDS = 20


@pytest.fixture
async def bank(database_url: str) -> AsyncIterator[Bank]:
    settings = make_settings(
        database_url, fraud_mode="hold", fraud_alert_threshold="0", fraud_hold_threshold="0"
    )
    async with running_bank(settings) as running:
        events = EmbeddedEvents(running.container)
        await events.start()
        try:
            yield running
        finally:
            await events.stop()


async def _until(bank: Bank, location: str, headers: dict[str, str], what: str) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + SETTLE_SECONDS
    while True:
        body: dict[str, Any] = (await bank.client.get(location, headers=headers)).json()
        if what == "held" and body.get("hold_reason"):
            return body
        if what == "finished" and body["status"] != "pending":
            return body
        assert asyncio.get_running_loop().time() < deadline, f"not {what}: {body}"
        await asyncio.sleep(0.05)


async def _quiet(bank: Bank) -> dict[str, Any]:
    """The books once the embedded consumers are done (they score movements and write
    alerts and notifications to the outbox after commit): two equal snapshots in a row."""
    deadline = asyncio.get_running_loop().time() + SETTLE_SECONDS
    last = await bank.snapshot()
    while True:
        await asyncio.sleep(0.25)
        now = await bank.snapshot()
        if now == last:
            return now
        assert asyncio.get_running_loop().time() < deadline, "the consumers never settle"
        last = now


async def _held_debit(bank: Bank, amount: str = "30.00") -> tuple[str, str, dict[str, str]]:
    """A customer's funded account and an asynchronous debit on it, held for review."""
    _, teller = await bank.user(Role.TELLER)
    customer_id, customer = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, teller, funded="100.00")
    accepted = await bank.client.post(
        "/api/v1/transactions/debit",
        json={"account_id": account_id, "amount": amount, "currency": "USD"},
        headers={**customer, "Prefer": "respond-async"},
    )
    assert accepted.status_code == 202, accepted.text
    location = accepted.headers["Location"]
    held = await _until(bank, location, teller, "held")
    assert held["status"] == "pending"
    return account_id, held["transaction_id"], customer


async def test_a_held_command_moves_nothing_and_staff_see_it_with_its_score(bank: Bank) -> None:
    account_id, transaction_id, customer = await _held_debit(bank)
    _, teller = await bank.user(Role.TELLER)
    _, auditor = await bank.user(Role.AUDITOR)
    assert await bank.balance(account_id, customer) == Decimal("100.00")

    staff_view = await bank.client.get(f"/api/v1/transactions/{transaction_id}", headers=auditor)
    fraud = staff_view.json()["fraud"]
    assert fraud["decision"] == "hold" and fraud["review_decision"] is None
    assert Decimal(fraud["score"]) >= 0 and fraud["model_version"]
    own_view = await bank.client.get(f"/api/v1/transactions/{transaction_id}", headers=customer)
    assert own_view.status_code == 200
    assert own_view.json()["fraud"] is None  # customers never see scores
    assert "score" not in own_view.json()["hold_reason"]

    queue = await bank.client.get("/api/v1/transactions", params={"status": "held"}, headers=teller)
    assert queue.status_code == 200, queue.text
    assert [t["transaction_id"] for t in queue.json()["transactions"]] == [transaction_id]
    assert queue.json()["transactions"][0]["fraud"]["decision"] == "hold"


async def test_release_applies_it_once_and_is_audited(bank: Bank) -> None:
    account_id, transaction_id, customer = await _held_debit(bank)
    teller_id, teller = await bank.user(Role.TELLER, "reviewer-ann")
    released = await bank.client.post(
        f"/api/v1/transactions/{transaction_id}/release", headers=teller
    )
    assert released.status_code == 200, released.text
    assert released.json()["status"] == "completed"
    assert released.json()["fraud"]["review_decision"] == "released"
    assert released.json()["fraud"]["reviewed_by"] == str(teller_id)
    assert await bank.balance(account_id, customer) == Decimal("70.00")

    before = await _quiet(bank)
    again = await bank.client.post(f"/api/v1/transactions/{transaction_id}/release", headers=teller)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["status"] == "completed"
    other = await bank.client.post(f"/api/v1/transactions/{transaction_id}/reject", headers=teller)
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "TRANSACTION_NOT_HELD"
    assert "already released" in other.json()["error"]["message"]
    assert await bank.snapshot() == before
    assert await bank.balance(account_id, customer) == Decimal("70.00")

    async with bank.container.database.read() as connection:
        rows = (
            await connection.execute(
                select(transaction_logs.c.event_type, transaction_logs.c.created_by)
                .where(transaction_logs.c.transaction_id == UUID(transaction_id))
                .order_by(transaction_logs.c.created_at)
            )
        ).all()
    assert ("held", "fraud-detector") in rows
    assert ("released", "reviewer-ann") in rows
    queue = await bank.client.get("/api/v1/transactions", params={"status": "held"}, headers=teller)
    assert queue.json()["transactions"] == []


async def test_reject_fails_it_with_fraud_rejected_and_its_funds_stay(bank: Bank) -> None:
    account_id, transaction_id, customer = await _held_debit(bank)
    _, teller = await bank.user(Role.ADMIN)
    rejected = await bank.client.post(
        f"/api/v1/transactions/{transaction_id}/reject", headers=teller
    )
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["status"] == "failed"
    assert rejected.json()["failure_code"] == "FRAUD_REJECTED"
    assert await bank.balance(account_id, customer) == Decimal("100.00")
    again = await bank.client.post(f"/api/v1/transactions/{transaction_id}/reject", headers=teller)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    final = await bank.client.get(f"/api/v1/transactions/{transaction_id}", headers=customer)
    assert final.json()["status"] == "failed" and final.json()["failure_code"] == "FRAUD_REJECTED"
    assert await bank.balance(account_id, customer) == Decimal("100.00")


@pytest.mark.parametrize("decision", ["release", "reject"])
async def test_customers_get_not_found_and_auditors_forbidden(bank: Bank, decision: str) -> None:
    account_id, transaction_id, customer = await _held_debit(bank)
    _, auditor = await bank.user(Role.AUDITOR)
    before = await _quiet(bank)
    url = f"/api/v1/transactions/{transaction_id}/{decision}"
    as_customer = await bank.client.post(url, headers=customer)
    assert as_customer.status_code == 404
    assert as_customer.json()["error"]["code"] == "TRANSACTION_NOT_FOUND"
    as_auditor = await bank.client.post(url, headers=auditor)
    assert as_auditor.status_code == 403 and as_auditor.json()["error"]["code"] == "FORBIDDEN"
    queue = await bank.client.get(
        "/api/v1/transactions", params={"status": "held"}, headers=customer
    )
    assert queue.status_code == 403
    assert await bank.snapshot() == before
    assert await bank.balance(account_id, customer) == Decimal("100.00")


@pytest.mark.parametrize(
    ("target", "status", "code"),
    [
        ("random", 404, "TRANSACTION_NOT_FOUND"),
        ("not-a-uuid", 422, "VALIDATION_ERROR"),
        ("completed", 409, "TRANSACTION_NOT_HELD"),
    ],
)
async def test_reviewing_what_is_not_held_is_refused_and_changes_nothing(
    bank: Bank, target: str, status: int, code: str
) -> None:
    _, teller = await bank.user(Role.TELLER)
    customer_id, customer = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, teller, funded="50.00")
    done = await bank.client.post(
        "/api/v1/transactions/debit",
        json={"account_id": account_id, "amount": "5.00", "currency": "USD"},
        headers=customer,
    )
    assert done.status_code == 200
    transaction_id = {
        "random": str(uuid4()),
        "not-a-uuid": "not-a-uuid",
        "completed": done.json()["transaction_id"],
    }[target]
    before = await _quiet(bank)
    for decision in ("release", "reject"):
        answer = await bank.client.post(
            f"/api/v1/transactions/{transaction_id}/{decision}", headers=teller
        )
        assert answer.status_code == status, answer.text
        assert answer.json()["error"]["code"] == code
    assert await bank.snapshot() == before


@pytest.mark.parametrize(
    "params",
    [
        # Without status=held (or with another status) it is the lookup across accounts
        # (tests/rest/test_lookup_statements.py), no longer a bad query.
        {"status": "held", "page_size": "0"},
        {"status": "held", "cursor": "!!"},
    ],
)
async def test_the_queue_refuses_bad_queries(bank: Bank, params: dict[str, str]) -> None:
    _, teller = await bank.user(Role.TELLER)
    answer = await bank.client.get("/api/v1/transactions", params=params, headers=teller)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "VALIDATION_ERROR"
