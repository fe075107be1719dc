"""A mixed workload (credit, debit, transfer, a decline, an asynchronous command, a message
dead-lettered to the permanent DLQ) and the check that the audit trail holds every event of
it exactly once, with the right actor and trace id. Used on the embedded shape and on Kafka."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from banking.domain.roles import Role
from banking.events import envelope, topics
from tests.audit.conftest import audit_rows, outbox_rows
from tests.conftest import Bank

POISON_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


@dataclass
class Expected:
    """What the trail must say: each movement's actor and trace id, and the poison message."""

    actor_of_transaction: dict[str, str] = field(default_factory=dict)
    trace_of_transaction: dict[str, str] = field(default_factory=dict)
    poison_event_id: str = ""
    teller: str = ""
    customer: str = ""


def _trace(response: httpx.Response) -> str:
    return response.headers["X-Trace-ID"]


async def settled(bank: Bank, location: str, headers: dict[str, str]) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + 120
    while True:
        body: dict[str, Any] = (await bank.client.get(location, headers=headers)).json()
        if body["status"] != "pending":
            return body
        assert asyncio.get_running_loop().time() < deadline, f"still pending: {body}"
        await asyncio.sleep(0.1)


def poison_headers(event_id: str) -> dict[str, str]:
    """A command whose value is not JSON: the processor gives it up to the permanent DLQ."""
    return {
        envelope.CE_SPECVERSION: envelope.SPEC_VERSION,
        envelope.CE_ID: event_id,
        envelope.CE_SOURCE: "/tests/poison",
        envelope.CE_TYPE: "transaction.submitted",
        envelope.CONTENT_TYPE: "application/json",
        envelope.TRACEPARENT: f"00-{POISON_TRACE_ID}-00f067aa0ba902b7-01",
    }


async def run_workload(
    bank: Bank, send_poison: Callable[[str, dict[str, str]], Awaitable[None]]
) -> Expected:
    expected = Expected()
    _, teller = await bank.user(Role.TELLER)
    customer_id, customer = await bank.user(Role.CUSTOMER)
    other_id, _ = await bank.user(Role.CUSTOMER)
    expected.teller = (await bank.client.get("/api/v1/users/me", headers=teller)).json()["username"]
    expected.customer = (await bank.client.get("/api/v1/users/me", headers=customer)).json()[
        "username"
    ]
    source = await bank.account(customer_id, teller)
    destination = await bank.account(other_id, teller)

    async def move(path: str, body: dict[str, Any], headers: dict[str, str], actor: str) -> Any:
        url = f"/api/v1/transactions/{path}"
        response = await bank.client.post(url, json=body, headers=headers)
        payload = response.json()
        transaction_id = payload.get("transaction_id") or payload["error"]["transaction_id"]
        expected.actor_of_transaction[transaction_id] = actor
        expected.trace_of_transaction[transaction_id] = _trace(response)
        return response

    usd = {"currency": "USD"}
    credit = await move(
        "credit", {"account_id": source, "amount": "100.00", **usd}, teller, expected.teller
    )
    assert credit.status_code == 200, credit.text
    debit = await move(
        "debit", {"account_id": source, "amount": "30.00", **usd}, customer, expected.customer
    )
    assert debit.status_code == 200, debit.text
    transfer = await move(
        "transfer",
        {
            "source_account_id": source,
            "destination_account_id": destination,
            "amount": "20.00",
            **usd,
        },
        customer,
        expected.customer,
    )
    assert transfer.status_code == 200, transfer.text
    declined = await move(
        "debit", {"account_id": source, "amount": "1000.00", **usd}, customer, expected.customer
    )
    assert declined.status_code == 422, declined.text
    accepted = await move(
        "debit",
        {"account_id": source, "amount": "10.00", **usd},
        {**customer, "Prefer": "respond-async"},
        expected.customer,
    )
    assert accepted.status_code == 202, accepted.text
    final = await settled(bank, accepted.headers["Location"], customer)
    assert final["status"] == "completed", final
    expected.poison_event_id = str(uuid.uuid4())
    await send_poison(source, poison_headers(expected.poison_event_id))
    return expected


async def check_trail(bank: Bank, expected: Expected, *, on_kafka: bool) -> list[Any]:
    """Every outbox event exactly once, with its actor and trace id; the poison message and its
    dead-letter copy recorded too; nothing else. Returns the audit rows."""
    events = await outbox_rows(bank)
    trail = await audit_rows(bank)
    by_key: dict[tuple[Any, str], list[Any]] = {}
    for row in trail:
        by_key.setdefault((row.event_id, row.topic), []).append(row)
    for event in events:
        records = by_key.get((event.event_id, event.topic), [])
        assert len(records) == 1, (event.event_type, event.topic, records)
        record = records[0]
        assert record.event_type == event.event_type
        # The request's trace id (or, without one, the trace started from the event id).
        assert record.trace_id == (event.trace_id or event.event_id.hex), event.event_type
        assert record.payload is not None and record.unreadable_reason is None
        assert json.loads(record.payload) == json.loads(event.payload)
        assert (record.kafka_offset is not None) is on_kafka
        payload = json.loads(event.payload)
        transaction_id = payload.get("transaction_id")
        if (
            transaction_id in expected.actor_of_transaction
            and event.event_type.startswith("transaction.")
            and event.event_type != "transaction.held"
        ):
            assert record.actor_name == expected.actor_of_transaction[transaction_id], (
                event.event_type,
                record.actor_name,
            )
            assert record.trace_id == expected.trace_of_transaction[transaction_id]
    # Balance events carry no transaction id: their actor is the leg's that made the version.
    balances = [r for r in trail if r.event_type == "balance.updated"]
    assert {r.actor_name for r in balances} == {expected.teller, expected.customer}
    poison = uuid.UUID(expected.poison_event_id)
    copies = sorted((row for row in trail if row.event_id == poison), key=lambda row: row.delivery)
    assert [(row.topic, row.delivery) for row in copies] == [
        (topics.TRANSACTIONS_SUBMITTED, 0),
        (topics.TRANSACTIONS_PERMANENT_DLQ, 1),
    ]
    for row in copies:
        assert row.payload is None and row.unreadable_reason
        assert row.trace_id == POISON_TRACE_ID
        assert row.actor_name == "system"
        assert row.event_id_derived is False
    # Exactly once: nothing beyond the outbox's events and the two poison records.
    assert len(trail) == len(events) + 2
    return trail
