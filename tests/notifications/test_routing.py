"""The notifications consumer: who receives which event, exactly once per event id, what
customers may see of fraud, and unreadable events to the permanent dead-letter topic."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import select

from banking.domain.clock import utc_now
from banking.domain.records import FraudAlert
from banking.domain.roles import Role
from banking.events import topics
from banking.events.outbox import fraud_alert_event
from banking.events.relay import message_of
from banking.events.serialization import EventFormat
from banking.events.transport import InProcessBus, Message
from banking.notifications.routing import NotificationRouter
from banking.storage import repositories as repo
from banking.storage.tables import outbox, webhook_deliveries
from banking.workers.dead_letters import DeadLetters
from banking.workers.runtime import EmbeddedEvents
from tests.conftest import Bank
from tests.notifications.conftest import (
    Receiver,
    counts,
    create_webhook,
    eventually,
    notifications_for,
)


async def _debit(bank: Bank, headers: dict[str, str], account_id: str, amount: str) -> str:
    response = await bank.client.post(
        "/api/v1/transactions/debit",
        json={"account_id": account_id, "amount": amount, "currency": "USD"},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    transaction_id: str = response.json()["transaction_id"]
    return transaction_id


async def test_a_customer_never_receives_another_customers_events(
    bank: Bank, staff: dict[str, str], events: EmbeddedEvents, receiver: Receiver
) -> None:
    alice_id, alice = await bank.user(Role.CUSTOMER)
    bob_id, bob = await bank.user(Role.CUSTOMER)
    await create_webhook(bank, alice, receiver.url("/alice"))
    await create_webhook(bank, bob, receiver.url("/bob"))
    alice_account = await bank.account(alice_id, staff, funded="100.00")
    bob_account = await bank.account(bob_id, staff, funded="200.00")
    alice_debit = await _debit(bank, alice, alice_account, "10.00")
    bob_debit = await _debit(bank, bob, bob_account, "20.00")

    async def all_delivered() -> bool:
        return len(receiver.on("/alice")) == 2 and len(receiver.on("/bob")) == 2

    await eventually(all_delivered, "two deliveries on each receiver")
    await events.relay.drain()

    def accounts_seen(path: str) -> set[str]:
        return {json.loads(r.body)["data"]["account_id"] for r in receiver.on(path)}

    assert accounts_seen("/alice") == {alice_account}
    assert accounts_seen("/bob") == {bob_account}
    alice_transactions = {
        json.loads(r.body)["data"]["transaction_id"] for r in receiver.on("/alice")
    }
    assert alice_debit in alice_transactions and bob_debit not in alice_transactions
    # Every owner is notified on banking.notifications of their own movements only.
    alice_notes = await notifications_for(bank, alice_id)
    assert {note["account_id"] for note in alice_notes} == {alice_account}
    assert {note["amount"] for note in alice_notes} == {"100.00", "10.00"}
    assert all(note["_event_type"] == "notification.created" for note in alice_notes)


async def test_a_staff_webhook_gets_every_accounts_events(
    bank: Bank, staff: dict[str, str], events: EmbeddedEvents, receiver: Receiver
) -> None:
    _, auditor = await bank.user(Role.AUDITOR)
    await create_webhook(bank, auditor, receiver.url("/audit"), ["transaction.completed"])
    alice_id, _ = await bank.user(Role.CUSTOMER)
    bob_id, _ = await bank.user(Role.CUSTOMER)
    accounts = {
        await bank.account(alice_id, staff, funded="1.00"),
        await bank.account(bob_id, staff, funded="2.00"),
    }

    async def both() -> bool:
        return len(receiver.on("/audit")) == 2

    await eventually(both, "the auditor's two deliveries")
    assert {json.loads(r.body)["data"]["account_id"] for r in receiver.on("/audit")} == accounts


async def _first_transaction_event(bank: Bank) -> Any:
    async with bank.container.database.read() as connection:
        rows = await repo.fetch_unpublished(connection, 100)
    return next(row for row in rows if row.topic == topics.TRANSACTIONS_COMPLETED)


async def test_a_redelivered_event_makes_one_delivery_and_one_notification(
    bank: Bank, staff: dict[str, str], receiver: Receiver
) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    await create_webhook(bank, customer, receiver.url())
    await bank.account(customer_id, staff, funded="30.00")  # no relay running: stays unpublished
    row = await _first_transaction_event(bank)
    router = NotificationRouter(bank.container.database)
    before = await counts(bank)

    # As Kafka would deliver it (Arrow), then again (a redelivery after a crash), then as JSON.
    arrow = message_of(row, EventFormat.ARROW)
    assert await router.route_message(arrow) is True
    after_first = await counts(bank)
    assert await router.route_message(arrow) is False
    assert await router.route_message(message_of(row, EventFormat.JSON)) is False

    assert await counts(bank) == after_first
    assert after_first["webhook_deliveries"] == before["webhook_deliveries"] + 1
    assert after_first["consumed_events"] == before["consumed_events"] + 1
    notes = await notifications_for(bank, customer_id)
    assert len(notes) == 1 and notes[0]["source_event_id"] == str(row.event_id)
    assert notes[0]["amount"] == "30.00"


async def test_an_unreadable_event_goes_to_the_permanent_dlq_and_changes_nothing(
    bank: Bank,
) -> None:
    bus = InProcessBus()
    dead: list[Message] = []

    async def keep(message: Message) -> None:
        dead.append(message)

    bus.subscribe(topics.TRANSACTIONS_PERMANENT_DLQ, keep)
    router = NotificationRouter(bank.container.database, dead_letters=DeadLetters(bus))
    before = await counts(bank)
    poison = Message(
        topics.TRANSACTIONS_COMPLETED,
        "key",
        b"\x00not an event",
        {
            "ce_specversion": "1.0",
            "ce_id": str(uuid4()),
            "ce_type": "transaction.completed",
            "content-type": "application/json",
        },
    )

    await router.handle(poison)  # returns: the consumer goes on

    assert [message.value for message in dead] == [poison.value]
    assert dead[0].headers["original_topic"] == topics.TRANSACTIONS_COMPLETED
    assert await counts(bank) == before


async def test_customers_see_fraud_alerts_as_under_review_and_staff_see_the_score(
    bank: Bank, staff: dict[str, str], receiver: Receiver
) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    _, admin = await bank.user(Role.ADMIN)
    await create_webhook(bank, customer, receiver.url("/customer"), ["fraud.alert"])
    await create_webhook(bank, admin, receiver.url("/admin"), ["fraud.alert"])
    account_id = await bank.account(customer_id, staff, funded="500.00")
    transaction_id = await _debit(bank, customer, account_id, "450.00")
    async with bank.container.unit_of_work.read() as store:
        leg = await store.get_transaction(UUID(transaction_id))
    assert leg is not None
    alert = FraudAlert(
        alert_id=uuid4(),
        leg=leg,
        score=Decimal("0.9312"),
        reasons=("amount_vs_mean", "night_time"),
        model_version="iforest-7",
        decision="alert",
        created_at=utc_now(),
        trace_id=None,
    )
    row = fraud_alert_event(alert)
    async with bank.container.database.unit_of_work() as connection:
        await connection.execute(outbox.insert().values(**row))
    async with bank.container.database.read() as connection:
        stored = (
            await connection.execute(select(outbox).where(outbox.c.event_id == row["event_id"]))
        ).one()
    router = NotificationRouter(bank.container.database)
    await router.route_message(message_of(stored, EventFormat.ARROW))

    async with bank.container.database.read() as connection:
        payloads = [
            json.loads(text)
            for text in (
                await connection.execute(
                    select(webhook_deliveries.c.payload).where(
                        webhook_deliveries.c.event_id == row["event_id"]
                    )
                )
            ).scalars()
        ]
    assert len(payloads) == 2
    by_score = {"score" in payload["data"]: payload for payload in payloads}
    customer_view, staff_view = by_score[False], by_score[True]
    assert customer_view["type"] == "fraud.alert"
    assert customer_view["data"]["status"] == "under_review"
    assert customer_view["data"]["transaction_id"] == transaction_id
    assert customer_view["data"]["amount"] == "450.00"
    text = json.dumps(customer_view)
    for secret_of_the_model in ("0.9312", "amount_vs_mean", "night_time", "iforest-7"):
        assert secret_of_the_model not in text
    assert staff_view["data"]["score"] == "0.9312"
    assert staff_view["data"]["reasons"] == "amount_vs_mean,night_time"
    (note,) = [
        n
        for n in await notifications_for(bank, customer_id)
        if n["source_event_type"] == "fraud.alert"
    ]
    assert "0.9312" not in note["message"] and "under review" in note["message"]
