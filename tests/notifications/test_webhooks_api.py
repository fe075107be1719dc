"""``/api/v1/webhooks``: SSRF targets refused, bad input answered with the envelope and
nothing stored, the secret shown once and never again (responses and logs), and who may see
or delete which webhook."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from banking.domain.roles import Role
from banking.observability.logging import configure_logging
from banking.workers.runtime import EmbeddedEvents
from tests.conftest import Bank, make_settings, running_bank
from tests.notifications.conftest import (
    WEBHOOK_SETTINGS,
    Receiver,
    counts,
    create_webhook,
    eventually,
)
from tests.rest.test_http_surface import restore_logging

__all__ = ["restore_logging"]

SHARED_URL = "https://100.64.0.1/hook"  # carrier-grade NAT space: not globally routable


@pytest.fixture
async def strict_bank(database_url: str) -> AsyncIterator[Bank]:
    """A bank whose operator allows no private network (the default)."""
    settings = make_settings(database_url, **{**WEBHOOK_SETTINGS, "webhook_allowed_networks": []})
    async with running_bank(settings) as running:
        yield running


def _assert_refused(response: Any, field: str | None, fragment: str) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert fragment in error["message"], error
    assert error["request_id"] and error["timestamp"]
    if field is not None:
        assert {detail.get("field") for detail in error["details"]} == {field}, error


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://10.0.0.1/hook", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::1]:8080/hook", "loopback"),
        ("http://127.0.0.1:9/hook", "loopback"),
        ("http://[::ffff:10.0.0.1]/hook", "private"),
        ("http://0.0.0.0/hook", "unspecified"),
        ("http://localhost:9/hook", "loopback"),  # a host name that resolves to loopback
        ("http://user:pass@example.com/hook", "user information"),
        ("ftp://example.com/hook", "http or https"),
        ("https://203.0.113.10/hook", "private"),  # documentation (TEST-NET-3)
        (SHARED_URL, "not globally routable"),
    ],
)
async def test_ssrf_targets_are_refused_and_nothing_is_stored(
    strict_bank: Bank, url: str, fragment: str
) -> None:
    _, customer = await strict_bank.user(Role.CUSTOMER)
    before = await counts(strict_bank)

    response = await strict_bank.client.post(
        "/api/v1/webhooks", json={"url": url, "event_types": ["fraud.alert"]}, headers=customer
    )

    _assert_refused(response, "url", fragment)
    assert await counts(strict_bank) == before


async def test_the_allow_list_admits_127_0_0_1(bank: Bank, receiver: Receiver) -> None:
    _, customer = await bank.user(Role.CUSTOMER)
    created = await create_webhook(bank, customer, receiver.url())
    assert created["status"] == "active" and created["url"] == receiver.url()
    # ... and only what it lists: another loopback address is still refused.
    other = await bank.client.post(
        "/api/v1/webhooks",
        json={"url": "http://127.0.0.2/hook", "event_types": ["fraud.alert"]},
        headers=customer,
    )
    _assert_refused(other, "url", "loopback")


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        (
            {"url": "http://127.0.0.1/x", "event_types": ["transaction.exploded"]},
            "event_types.0",
            "",
        ),
        ({"url": "http://127.0.0.1/x", "event_types": []}, "event_types", ""),
        ({"url": "not a url", "event_types": ["fraud.alert"]}, "url", ""),
        ({"url": "http://", "event_types": ["fraud.alert"]}, "url", ""),
        ({"url": "http://127.0.0.1:99999/x", "event_types": ["fraud.alert"]}, "url", "not valid"),
        ({"url": "http://127.0.0.1/" + "a" * 2048, "event_types": ["fraud.alert"]}, "url", ""),
        ({"event_types": ["fraud.alert"]}, "url", ""),
        ({"url": "http://127.0.0.1/x", "event_types": ["fraud.alert"], "extra": 1}, "extra", ""),
    ],
)
async def test_bad_input_answers_the_envelope_and_changes_nothing(
    bank: Bank, body: dict[str, Any], field: str, fragment: str
) -> None:
    _, customer = await bank.user(Role.CUSTOMER)
    before = await counts(bank)

    response = await bank.client.post("/api/v1/webhooks", json=body, headers=customer)

    _assert_refused(response, field, fragment)
    assert await counts(bank) == before


async def test_an_oversized_body_is_413_and_changes_nothing(bank: Bank) -> None:
    _, customer = await bank.user(Role.CUSTOMER)
    before = await counts(bank)
    limit = bank.container.settings.request_body_bytes_max
    body = json.dumps({"url": "http://127.0.0.1/" + "a" * limit, "event_types": ["fraud.alert"]})

    response = await bank.client.post(
        "/api/v1/webhooks",
        content=body,
        headers={**customer, "Content-Type": "application/json"},
    )

    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert await counts(bank) == before


async def test_more_webhooks_than_the_bound_is_refused_and_nothing_is_created(
    database_url: str, receiver: Receiver
) -> None:
    settings = make_settings(database_url, **{**WEBHOOK_SETTINGS, "webhooks_per_user_max": 2})
    async with running_bank(settings) as bank:
        _, customer = await bank.user(Role.CUSTOMER)
        for _ in range(2):
            await create_webhook(bank, customer, receiver.url())
        before = await counts(bank)

        response = await bank.client.post(
            "/api/v1/webhooks",
            json={"url": receiver.url(), "event_types": ["fraud.alert"]},
            headers=customer,
        )

        _assert_refused(response, None, "at most 2 webhooks")
        assert await counts(bank) == before
        # Another user has their own bound.
        _, other = await bank.user(Role.CUSTOMER)
        await create_webhook(bank, other, receiver.url())


async def test_unauthenticated_requests_are_refused(bank: Bank) -> None:
    before = await counts(bank)
    response = await bank.client.post(
        "/api/v1/webhooks", json={"url": "http://127.0.0.1/x", "event_types": ["fraud.alert"]}
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHENTICATED"
    assert (await bank.client.get("/api/v1/webhooks")).status_code == 401
    assert await counts(bank) == before


async def test_the_secret_is_shown_once_and_never_again_nor_logged(
    bank: Bank,
    staff: dict[str, str],
    events: EmbeddedEvents,
    receiver: Receiver,
    restore_logging: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(level="DEBUG", json_output=True)  # DEBUG: drivers stay quiet
    capsys.readouterr()
    customer_id, customer = await bank.user(Role.CUSTOMER)
    _, admin = await bank.user(Role.ADMIN)
    created = await create_webhook(bank, customer, receiver.url())
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    webhook_id = created["webhook_id"]
    await bank.account(customer_id, staff, funded="9.99")

    async def delivered() -> bool:
        return len(receiver.received) == 1

    await eventually(delivered, "the delivery")
    signature = receiver.received[0].headers["Banking-Signature"]
    answers = [
        await bank.client.get("/api/v1/webhooks", headers=customer),
        await bank.client.get("/api/v1/webhooks", headers=admin),
        await bank.client.get(f"/api/v1/webhooks/{webhook_id}", headers=customer),
        await bank.client.get(f"/api/v1/webhooks/{webhook_id}/deliveries", headers=customer),
        await bank.client.get(f"/api/v1/webhooks/{webhook_id}/deliveries", headers=admin),
    ]
    assert all(answer.status_code == 200 for answer in answers)
    assert answers[2].json()["webhook_id"] == webhook_id and "secret" not in answers[2].json()
    for answer in answers:
        assert secret not in answer.text
    output = capsys.readouterr()
    logs = output.err + output.out
    assert "webhook_created" in logs and "webhook_attempt" in logs  # logging was on
    assert secret not in logs
    assert signature.split("v1=")[1] not in logs


async def test_customers_see_and_delete_only_their_own_webhooks(
    bank: Bank, receiver: Receiver
) -> None:
    alice_id, alice = await bank.user(Role.CUSTOMER)
    _, bob = await bank.user(Role.CUSTOMER)
    _, auditor = await bank.user(Role.AUDITOR)
    _, admin = await bank.user(Role.ADMIN)
    alices = await create_webhook(bank, alice, receiver.url("/a"))
    bobs = await create_webhook(bank, bob, receiver.url("/b"))

    listed = (await bank.client.get("/api/v1/webhooks", headers=alice)).json()["webhooks"]
    assert [w["webhook_id"] for w in listed] == [alices["webhook_id"]]
    assert listed[0]["owner_id"] == str(alice_id)
    everyone = (await bank.client.get("/api/v1/webhooks", headers=admin)).json()["webhooks"]
    assert {alices["webhook_id"], bobs["webhook_id"]} <= {w["webhook_id"] for w in everyone}

    before = await counts(bank)
    for path in (
        f"/api/v1/webhooks/{bobs['webhook_id']}",
        f"/api/v1/webhooks/{bobs['webhook_id']}/deliveries",
    ):
        refused = await bank.client.get(path, headers=alice)
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "NOT_FOUND"
    for who in (alice, auditor):
        refused = await bank.client.delete(f"/api/v1/webhooks/{bobs['webhook_id']}", headers=who)
        assert refused.status_code == 404, refused.text
        assert refused.json()["error"]["code"] == "NOT_FOUND"
    assert await counts(bank) == before
    auditor_view = await bank.client.get(f"/api/v1/webhooks/{bobs['webhook_id']}", headers=auditor)
    assert auditor_view.status_code == 200

    deleted = await bank.client.delete(f"/api/v1/webhooks/{bobs['webhook_id']}", headers=bob)
    assert deleted.status_code == 204 and deleted.content == b""
    gone = await bank.client.get(f"/api/v1/webhooks/{bobs['webhook_id']}", headers=bob)
    assert gone.status_code == 404
    again = await bank.client.delete(f"/api/v1/webhooks/{bobs['webhook_id']}", headers=bob)
    assert again.status_code == 404
    by_admin = await bank.client.delete(f"/api/v1/webhooks/{alices['webhook_id']}", headers=admin)
    assert by_admin.status_code == 204


async def test_deliveries_are_paged_newest_first(
    bank: Bank, staff: dict[str, str], events: EmbeddedEvents, receiver: Receiver
) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    webhook = await create_webhook(bank, customer, receiver.url())
    account_id = await bank.account(customer_id, staff)
    for amount in ("1.00", "2.00", "3.00"):
        credited = await bank.client.post(
            "/api/v1/transactions/credit",
            json={"account_id": account_id, "amount": amount, "currency": "USD"},
            headers=staff,
        )
        assert credited.status_code == 200

    async def three() -> bool:
        return len(receiver.received) == 3

    await eventually(three, "three deliveries")
    path = f"/api/v1/webhooks/{webhook['webhook_id']}/deliveries"
    first = (await bank.client.get(path, params={"page_size": 2}, headers=customer)).json()
    assert len(first["deliveries"]) == 2 and first["next_cursor"]
    second = (
        await bank.client.get(
            path, params={"page_size": 2, "cursor": first["next_cursor"]}, headers=customer
        )
    ).json()
    assert len(second["deliveries"]) == 1 and second["next_cursor"] is None
    ids = [d["delivery_id"] for d in first["deliveries"] + second["deliveries"]]
    assert len(set(ids)) == 3
    times = [d["created_at"] for d in first["deliveries"] + second["deliveries"]]
    assert times == sorted(times, reverse=True)
    bad = await bank.client.get(path, params={"cursor": "bm90LWEtY3Vyc29y"}, headers=customer)
    _assert_refused(bad, "cursor", "cursor is not valid")
