"""The delivery loop against a real receiver: retries with the same ids until a 2xx, every
attempt recorded, a dead receiver given up and its webhook disabled with the owner told, and a
target that became refused never contacted."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from banking.domain.roles import Role
from banking.notifications.delivery import WebhookDelivery
from banking.storage.tables import webhook_attempts
from banking.workers.runtime import EmbeddedEvents
from tests.conftest import Bank, make_settings
from tests.notifications.conftest import (
    WEBHOOK_SETTINGS,
    Receiver,
    create_webhook,
    eventually,
    notifications_for,
)
from tests.support.processes import free_port


async def _deliveries(bank: Bank, headers: dict[str, str], webhook_id: str) -> list[Any]:
    response = await bank.client.get(f"/api/v1/webhooks/{webhook_id}/deliveries", headers=headers)
    assert response.status_code == 200, response.text
    deliveries: list[Any] = response.json()["deliveries"]
    return deliveries


async def _webhook(bank: Bank, headers: dict[str, str], webhook_id: str) -> dict[str, Any]:
    response = await bank.client.get(f"/api/v1/webhooks/{webhook_id}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_two_failures_then_success_is_one_delivery_with_three_attempts(
    bank: Bank, staff: dict[str, str], events: EmbeddedEvents, receiver: Receiver
) -> None:
    receiver.plan.extend([500, 500])
    customer_id, customer = await bank.user(Role.CUSTOMER)
    webhook = await create_webhook(bank, customer, receiver.url())
    await bank.account(customer_id, staff, funded="12.34")

    async def succeeded() -> bool:
        found = await _deliveries(bank, customer, webhook["webhook_id"])
        return bool(found) and found[0]["status"] == "succeeded"

    await eventually(succeeded, "the delivery to succeed")
    (delivery,) = await _deliveries(bank, customer, webhook["webhook_id"])
    assert len(receiver.received) == 3
    assert {r.headers["Banking-Event-Id"] for r in receiver.received} == {delivery["event_id"]}
    assert {r.headers["Banking-Delivery-Id"] for r in receiver.received} == {
        delivery["delivery_id"]
    }
    assert {r.body for r in receiver.received} == {receiver.received[0].body}
    assert json.loads(receiver.received[0].body)["id"] == delivery["event_id"]
    assert receiver.received[0].headers["Banking-Event-Type"] == "transaction.completed"
    assert receiver.received[0].headers["Content-Type"] == "application/json"
    assert delivery["attempts"] == 3 and delivery["delivered_at"] is not None
    history = delivery["attempt_history"]
    assert [a["status_code"] for a in history] == [500, 500, 200]
    assert [a["succeeded"] for a in history] == [False, False, True]
    assert [a["error"] for a in history] == ["HTTP 500", "HTTP 500", None]
    assert all(a["duration_ms"] >= 0 and a["started_at"] for a in history)
    assert (await _webhook(bank, customer, webhook["webhook_id"]))["consecutive_failures"] == 0


async def test_a_dead_receiver_ends_failed_and_its_webhook_disabled_with_the_owner_told(
    bank: Bank, staff: dict[str, str], events: EmbeddedEvents, receiver: Receiver
) -> None:
    dead_url = f"http://127.0.0.1:{free_port()}/nobody-listens"
    receiver.plan.extend([500] * 100)  # the second receiver fails too, but differently
    customer_id, customer = await bank.user(Role.CUSTOMER)
    dead = await create_webhook(bank, customer, dead_url)
    failing = await create_webhook(bank, customer, receiver.url("/failing"))
    receiver_of_news = await create_webhook(
        bank, customer, receiver.url("/news"), ["webhook.disabled"]
    )
    account_id = await bank.account(customer_id, staff, funded="10.00")
    debit = await bank.client.post(
        "/api/v1/transactions/debit",
        json={"account_id": account_id, "amount": "1.00", "currency": "USD"},
        headers=customer,
    )
    assert debit.status_code == 200

    async def both_disabled() -> bool:
        dead_now = await _webhook(bank, customer, dead["webhook_id"])
        failing_now = await _webhook(bank, customer, failing["webhook_id"])
        return bool(dead_now["status"] == failing_now["status"] == "disabled")

    await eventually(both_disabled, "both webhooks to be disabled")
    limit = WEBHOOK_SETTINGS["webhook_attempts_max"]
    for webhook in (dead, failing):
        deliveries = await _deliveries(bank, customer, webhook["webhook_id"])
        assert [d["status"] for d in deliveries] == ["failed", "failed"]  # credit, then debit
        assert all(d["attempts"] == limit for d in deliveries)
        assert all(len(d["attempt_history"]) == limit for d in deliveries)
        now = await _webhook(bank, customer, webhook["webhook_id"])
        assert now["disabled_at"] is not None and "in a row" in now["disabled_reason"]
    dead_attempt = (await _deliveries(bank, customer, dead["webhook_id"]))[0]["attempt_history"][0]
    assert dead_attempt["status_code"] is None and "Connect" in dead_attempt["error"]
    assert len(receiver.on("/failing")) == 2 * limit

    # The owner is told: on banking.notifications, and on their webhook subscribed to it.
    async def news_delivered() -> bool:
        return len(receiver.on("/news")) == 2

    await eventually(news_delivered, "two webhook.disabled deliveries")
    news = [json.loads(r.body) for r in receiver.on("/news")]
    assert {n["type"] for n in news} == {"webhook.disabled"}
    assert {n["data"]["webhook_id"] for n in news} == {dead["webhook_id"], failing["webhook_id"]}
    await events.relay.drain()
    notes = await notifications_for(bank, customer_id)
    disabled_notes = [n for n in notes if n["source_event_type"] == "webhook.disabled"]
    assert len(disabled_notes) == 2
    assert (await _webhook(bank, customer, receiver_of_news["webhook_id"]))["status"] == "active"

    # A disabled webhook is sent nothing more.
    sent_before = len(receiver.on("/failing"))
    more = await bank.client.post(
        "/api/v1/transactions/debit",
        json={"account_id": account_id, "amount": "1.00", "currency": "USD"},
        headers=customer,
    )
    assert more.status_code == 200
    await events.relay.drain()
    assert len(await _deliveries(bank, customer, failing["webhook_id"])) == 2
    assert len(receiver.on("/failing")) == sent_before


async def test_a_target_that_became_refused_is_not_contacted(
    bank: Bank, staff: dict[str, str], receiver: Receiver, database_url: str
) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    webhook = await create_webhook(bank, customer, receiver.url())
    await bank.account(customer_id, staff, funded="5.00")
    events = EmbeddedEvents(bank.container)
    await events.relay.drain()  # routes the credit: one pending delivery
    # A delivery worker whose operator no longer allows 127.0.0.1.
    strict = {**WEBHOOK_SETTINGS, "webhook_allowed_networks": []}
    delivery = WebhookDelivery(bank.container.database, make_settings(database_url, **strict))

    assert await delivery.deliver_due() == 1

    assert receiver.received == []
    (found,) = await _deliveries(bank, customer, webhook["webhook_id"])
    assert found["status"] == "pending" and found["attempts"] == 1
    (attempt,) = found["attempt_history"]
    assert attempt["status_code"] is None and attempt["succeeded"] is False
    assert attempt["error"].startswith("refused:") and "loopback" in attempt["error"]
    async with bank.container.database.read() as connection:
        rows = (await connection.execute(select(webhook_attempts))).all()
    assert len(rows) == 1
    await events.bus.close()
