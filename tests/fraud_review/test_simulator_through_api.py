"""The simulator drives the real REST API (embedded shape, the rules as shipped, no model
file): its card-testing, structuring and mule incidents raise alerts, its normal traffic
(almost) none, and a card-testing probe sent asynchronously is held and moves no money until
a reviewer releases it.

Time is compressed: the simulated operations of one normal day and of three fraud incidents
are sent in their order within seconds. An account takeover needs a quiet period and the
night, which real time cannot compress; the held-out evaluation (`banking fraud evaluate`,
tests/fraud) measures it."""

from __future__ import annotations

import asyncio
import shutil
from collections import defaultdict
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from banking.domain.roles import Role
from banking.fraud.simulate import Operation, OperationKind, run
from banking.storage.tables import fraud_scores, outbox, transactions
from banking.workers.runtime import EmbeddedEvents
from tests.conftest import Bank, make_settings, running_bank

PATTERNS = ("card_testing", "structuring", "mule")
NORMAL_PER_ACCOUNT = 2
FUNDING = "20000.00"
SETTLE_SECONDS = 60


@pytest.fixture
async def bank(tmp_path: Path, sqlite_template: Path) -> AsyncIterator[Bank]:
    database = tmp_path / "bank.db"
    await asyncio.to_thread(shutil.copyfile, sqlite_template, database)
    settings = make_settings(
        f"sqlite+aiosqlite:///{database}", fraud_mode="hold", fraud_model_dir=tmp_path / "none"
    )
    async with running_bank(settings) as running:
        events = EmbeddedEvents(running.container)
        await events.start()
        try:
            yield running
        finally:
            await events.stop()


def _chosen(operations: tuple[Operation, ...]) -> list[Operation]:
    """Normal traffic of the first day, at most ``NORMAL_PER_ACCOUNT`` operations per account
    (sent within seconds, a whole day of one account would rightly look like a burst), and
    the first incident of each pattern: its operations within a day of its first one (a
    mule's fan-in comes from many accounts, then fans out)."""
    first_day = operations[0].at.date()
    started: dict[str, Operation] = {}
    normal: dict[int, int] = defaultdict(int)
    chosen = []
    for operation in operations:
        if operation.pattern is None:
            if (
                operation.at.date() == first_day
                and normal[operation.account_index] < NORMAL_PER_ACCOUNT
            ):
                normal[operation.account_index] += 1
                chosen.append(operation)
        elif operation.pattern in PATTERNS:
            first = started.setdefault(operation.pattern, operation)
            if (operation.at - first.at).total_seconds() < 86_400:
                chosen.append(operation)
    return chosen


async def _settled(bank: Bank) -> None:
    deadline = asyncio.get_running_loop().time() + SETTLE_SECONDS
    while True:
        async with bank.container.database.read() as connection:
            legs = (
                await connection.execute(select(func.count()).select_from(transactions))
            ).scalar_one()
            scored = (
                await connection.execute(select(func.count()).select_from(fraud_scores))
            ).scalar_one()
            waiting = (
                await connection.execute(
                    select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
                )
            ).scalar_one()
        if legs == scored and waiting == 0:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{scored}/{legs} scored"
        await asyncio.sleep(0.2)


async def test_simulated_fraud_alerts_and_normal_traffic_does_not(bank: Bank) -> None:
    simulation = run(seed=5, customers=40, days=14)
    operations = _chosen(simulation.operations)
    _, teller = await bank.user(Role.TELLER)
    owners: list[dict[str, str]] = []
    accounts: list[str] = []
    for _ in simulation.account_ids:  # customers first, then outside accounts
        owner_id, owner = await bank.user(Role.CUSTOMER)
        owners.append(owner)
        accounts.append(await bank.account(owner_id, teller, funded=FUNDING))

    legs_of: list[tuple[Operation, set[str]]] = []
    for operation in operations:
        amount = str(operation.amount)
        if operation.kind is OperationKind.TRANSFER:
            assert operation.counterparty_index is not None
            path, body = (
                "transfer",
                {
                    "source_account_id": accounts[operation.account_index],
                    "destination_account_id": accounts[operation.counterparty_index],
                },
            )
            headers = owners[operation.account_index]
        else:
            path, body = operation.kind.value, {"account_id": accounts[operation.account_index]}
            credit = operation.kind is OperationKind.CREDIT
            headers = teller if credit else owners[operation.account_index]
        answer = await bank.client.post(
            f"/api/v1/transactions/{path}",
            json={**body, "amount": amount, "currency": "USD"},
            headers=headers,
        )
        assert answer.status_code in (200, 422), answer.text
        legs = _leg_ids(answer.json())
        legs_of.append((operation, legs))
    await _settled(bank)

    async with bank.container.database.read() as connection:
        rows = (await connection.execute(select(fraud_scores))).all()
        decisions = {str(row.transaction_id): row.decision for row in rows}
    caught: dict[str, list[bool]] = defaultdict(list)
    for operation, legs in legs_of:
        alerted = any(decisions.get(leg) == "alert" for leg in legs)
        caught[operation.pattern or "normal"].append(alerted)
    for pattern in PATTERNS:
        assert any(caught[pattern]), f"no alert for the {pattern} incident"
        recall = sum(caught[pattern]) / len(caught[pattern])
        assert recall >= 0.5, f"{pattern}: {recall:.2f} of its operations alerted"
    normal = caught["normal"]
    assert len(normal) > 40
    assert sum(normal) / len(normal) <= 0.03, f"{sum(normal)} of {len(normal)} normal alerted"

    # One more card-testing probe, asynchronously: held (the rules score it >= 0.90).
    tester = next(op.account_index for op, _ in legs_of if op.pattern == "card_testing")
    before = await bank.balance(accounts[tester], owners[tester])
    accepted = await bank.client.post(
        "/api/v1/transactions/debit",
        json={"account_id": accounts[tester], "amount": "1.11", "currency": "USD"},
        headers={**owners[tester], "Prefer": "respond-async"},
    )
    assert accepted.status_code == 202
    held = await _until_held(bank, accepted.headers["Location"], teller)
    assert held["fraud"]["decision"] == "hold" and "card_testing" in held["fraud"]["reasons"]
    assert await bank.balance(accounts[tester], owners[tester]) == before
    released = await bank.client.post(
        f"/api/v1/transactions/{held['transaction_id']}/release", headers=teller
    )
    assert released.status_code == 200 and released.json()["status"] == "completed"
    assert await bank.balance(accounts[tester], owners[tester]) == before - Decimal("1.11")


def _leg_ids(body: dict[str, Any]) -> set[str]:
    if "error" in body:
        found = body["error"].get("transaction_id")
        return {found} if found else set()
    legs = {body["transaction_id"]}
    if body.get("related_transaction_id"):
        legs.add(body["related_transaction_id"])
    return legs


async def _until_held(bank: Bank, location: str, headers: dict[str, str]) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + SETTLE_SECONDS
    while True:
        body: dict[str, Any] = (await bank.client.get(location, headers=headers)).json()
        if body.get("hold_reason"):
            return body
        assert body["status"] == "pending", f"applied without a hold: {body}"
        assert asyncio.get_running_loop().time() < deadline, "never held"
        await asyncio.sleep(0.05)


def test_the_chosen_operations_cover_the_patterns() -> None:
    chosen = _chosen(run(seed=5, customers=40, days=14).operations)
    assert {op.pattern for op in chosen} == {None, *PATTERNS}
    mule = [op for op in chosen if op.pattern == "mule"]
    into = {op.counterparty_index for op in mule}
    out_of = {op.account_index for op in mule}
    assert into & out_of, "the mule incident both receives and sends"
    per_account = defaultdict(int)
    for op in chosen:
        if op.pattern is None:
            per_account[op.account_index] += 1
    assert max(per_account.values()) == NORMAL_PER_ACCOUNT
