"""The embedded shape end to end: the REST app with its own lifespan (relay, consumers and
the delivery loop inside it), a webhook registered and a debit through the API: the receiver
gets the signed ``transaction.completed`` of that debit."""

from __future__ import annotations

import json
from typing import Any

import httpx

from banking.bootstrap import build_container, create_rest_app
from banking.domain.roles import Role
from banking.notifications.signing import verify
from tests.conftest import make_settings
from tests.notifications.conftest import WEBHOOK_SETTINGS, Receiver, eventually


async def test_a_debit_through_the_api_reaches_the_receiver_signed(
    database_url: str, receiver: Receiver
) -> None:
    container = build_container(make_settings(database_url, **WEBHOOK_SETTINGS))
    app = create_rest_app(container)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        teller = await container.users.create(
            None, username="e2e-teller", email="t@example.com", password="p" * 12, role=Role.TELLER
        )
        owner = await container.users.create(
            None, username="e2e-owner", email="o@example.com", password="p" * 12, role=Role.CUSTOMER
        )
        tokens = container.tokens
        teller_token = tokens.issue(teller.user_id, "e2e-teller", Role.TELLER)
        owner_token = tokens.issue(owner.user_id, "e2e-owner", Role.CUSTOMER)
        staff = {"Authorization": f"Bearer {teller_token}"}
        customer = {"Authorization": f"Bearer {owner_token}"}
        created = await client.post(
            "/api/v1/webhooks",
            json={"url": receiver.url(), "event_types": ["transaction.completed"]},
            headers=customer,
        )
        assert created.status_code == 201, created.text
        assert created.headers["Location"] == f"/api/v1/webhooks/{created.json()['webhook_id']}"
        secret = created.json()["secret"]
        opened = await client.post(
            "/api/v1/accounts",
            json={"account_type": "checking", "currency": "USD", "customer_id": str(owner.user_id)},
            headers=staff,
        )
        account_id = opened.json()["account_id"]
        credited = await client.post(
            "/api/v1/transactions/credit",
            json={"account_id": account_id, "amount": "100.00", "currency": "USD"},
            headers=staff,
        )
        assert credited.status_code == 200, credited.text
        debit = await client.post(
            "/api/v1/transactions/debit",
            json={"account_id": account_id, "amount": "25.50", "currency": "USD"},
            headers=customer,
        )
        assert debit.status_code == 200, debit.text
        debit_id = debit.json()["transaction_id"]

        def of_the_debit() -> list[dict[str, Any]]:
            bodies = [json.loads(request.body) for request in receiver.received]
            return [b for b in bodies if b["data"]["transaction_id"] == debit_id]

        async def arrived() -> bool:
            return bool(of_the_debit())

        await eventually(arrived, "the debit's delivery")
        (body,) = of_the_debit()
        request = next(r for r in receiver.received if json.loads(r.body) == body)
        assert body["type"] == "transaction.completed"
        assert request.headers["Banking-Event-Type"] == "transaction.completed"
        assert request.headers["Banking-Event-Id"] == body["id"]
        data = body["data"]
        assert isinstance(data, dict)
        assert data["amount"] == "25.50" and data["currency"] == "USD"
        assert data["transaction_type"] == "debit" and data["account_id"] == account_id
        assert verify(secret, request.headers["Banking-Signature"], request.body)
