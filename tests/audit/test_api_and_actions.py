"""The audit API (staff only, filters, cursors, bad input) and the staff actions that move no
money, each on the audit trail with its actor (both databases, the embedded event log)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from banking.domain.roles import Role
from banking.workers.runtime import EmbeddedEvents
from tests.audit.conftest import audit_count, settle
from tests.conftest import Bank


async def _me(bank: Bank, headers: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = (await bank.client.get("/api/v1/users/me", headers=headers)).json()
    return body


async def test_each_staff_action_is_audited_with_its_actor(
    bank: Bank, events: EmbeddedEvents
) -> None:
    admin_id, admin = await bank.user(Role.ADMIN)
    teller_id, teller = await bank.user(Role.TELLER)
    admin_name, teller_name = (
        (await _me(bank, admin))["username"],
        (await _me(bank, teller))["username"],
    )
    created = await bank.client.post(
        "/api/v1/users",
        json={
            "username": f"c-{uuid.uuid4().hex[:8]}",
            "email": f"c-{uuid.uuid4().hex[:8]}@example.com",
            "password": "correct-horse-battery",
            "role": "customer",
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    customer_id = uuid.UUID(created.json()["user_id"])
    account_id = await bank.account(customer_id, teller)
    for is_active in (False, True):
        changed = await bank.client.patch(
            f"/api/v1/accounts/{account_id}", json={"is_active": is_active}, headers=teller
        )
        assert changed.status_code == 200, changed.text
    hook = await bank.client.post(
        "/api/v1/webhooks",
        json={"url": "https://hooks.example.com/x", "event_types": ["transaction.completed"]},
        headers=admin,
    )
    if hook.status_code == 201:  # resolving example.com may be refused offline (SSRF check)
        secret = hook.json()["secret"]
        deleted = await bank.client.delete(
            f"/api/v1/webhooks/{hook.json()['webhook_id']}", headers=admin
        )
        assert deleted.status_code == 204
    await settle(bank)

    async def trail(event_type: str) -> list[dict[str, Any]]:
        response = await bank.client.get(
            "/api/v1/audit", params={"type": event_type}, headers=admin
        )
        assert response.status_code == 200, response.text
        records: list[dict[str, Any]] = response.json()["records"]
        return records

    (user_created,) = [
        r for r in await trail("staff.user_created") if r["payload"]["user_id"] == str(customer_id)
    ]
    assert user_created["actor"] == {"user_id": str(admin_id), "name": admin_name}
    assert "password" not in str(user_created["payload"])
    (frozen,) = await trail("staff.account_frozen")
    (unfrozen,) = await trail("staff.account_unfrozen")
    for record in (frozen, unfrozen):
        assert record["actor"] == {"user_id": str(teller_id), "name": teller_name}
        assert record["account_id"] == account_id
    if hook.status_code == 201:
        (hook_created,) = await trail("staff.webhook_created")
        (hook_deleted,) = await trail("staff.webhook_deleted")
        for record in (hook_created, hook_deleted):
            assert record["actor"]["name"] == admin_name
            assert secret not in str(record)


async def test_customers_get_404_staff_see_filtered_pages(
    bank: Bank, staff: dict[str, str], events: EmbeddedEvents
) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    _, auditor = await bank.user(Role.AUDITOR)
    account_id = await bank.account(customer_id, staff)
    for amount in ("1.00", "2.00", "3.00"):
        credited = await bank.client.post(
            "/api/v1/transactions/credit",
            json={"account_id": account_id, "amount": amount, "currency": "USD"},
            headers=staff,
        )
        assert credited.status_code == 200
    await settle(bank)

    hidden = await bank.client.get("/api/v1/audit", headers=customer)
    assert hidden.status_code == 404
    assert hidden.json()["error"]["code"] == "NOT_FOUND"

    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"account_id": account_id, "page_size": 2}
        if cursor:
            params["cursor"] = cursor
        page = await bank.client.get("/api/v1/audit", params=params, headers=auditor)
        assert page.status_code == 200, page.text
        seen += page.json()["records"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    # Three credits: per credit its transaction.completed, its balance.updated and the
    # owner's notification.created (all about the account), newest first.
    assert sorted(r["event_type"] for r in seen) == sorted(
        ["transaction.completed", "balance.updated", "notification.created"] * 3
    )
    assert [r["audit_id"] for r in seen] == sorted((r["audit_id"] for r in seen), reverse=True)
    assert {r["account_id"] for r in seen} == {account_id}
    amounts = [r["payload"]["amount"] for r in seen if r["event_type"] == "transaction.completed"]
    assert amounts == ["3.00", "2.00", "1.00"]  # exact decimal strings

    by_type = await bank.client.get(
        "/api/v1/audit",
        params={"account_id": account_id, "type": "balance.updated"},
        headers=auditor,
    )
    assert [r["payload"]["available_balance"] for r in by_type.json()["records"]] == [
        "6.00",
        "3.00",
        "1.00",
    ]
    future = await bank.client.get(
        "/api/v1/audit", params={"from": "2999-01-01T00:00:00Z"}, headers=auditor
    )
    assert future.status_code == 200 and future.json()["records"] == []


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "bm90LWEtY3Vyc29y"},
        {"cursor": "!!"},
        {"page_size": "0"},
        {"page_size": "100000"},
        {"from": "2026-01-01T00:00:00"},
        {"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
        {"account_id": "not-a-uuid"},
        {"actor": "x" * 65},
    ],
)
async def test_bad_filters_are_422_and_change_nothing(
    bank: Bank, staff: dict[str, str], params: dict[str, str]
) -> None:
    before = (await bank.snapshot(), await audit_count(bank))
    response = await bank.client.get("/api/v1/audit", params=params, headers=staff)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert (await bank.snapshot(), await audit_count(bank)) == before
