"""Holds over REST (``/api/v1/holds``) on SQLite and PostgreSQL: authorize, capture in parts or
at once, void, expiry; the balances a user sees; idempotency; who may; bad input answered with
the envelope and nothing changed; the events of every change; ``banking reconcile`` clean."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from sqlalchemy import select

from banking.domain.roles import Role
from banking.ledger.reconcile import reconcile
from banking.storage.tables import balances, holds, outbox
from tests.conftest import Bank

HOLDS = "/api/v1/holds"


async def customer_account(
    bank: Bank, funded: str = "100.00", currency: str = "USD"
) -> tuple[dict[str, str], dict[str, str], str]:
    """A teller's and a customer's headers, and the customer's funded account."""
    _, staff = await bank.user(Role.TELLER)
    customer_id, customer = await bank.user(Role.CUSTOMER)
    return staff, customer, await bank.account(customer_id, staff, currency=currency, funded=funded)


async def amounts(bank: Bank, account_id: str, headers: dict[str, str]) -> tuple[str, str]:
    response = await bank.client.get(f"/api/v1/accounts/{account_id}/balance", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    return body["current_balance"], body["available_balance"]


async def authorize(
    bank: Bank, headers: dict[str, str], account_id: str, amount: str = "30.00", **extra: Any
) -> dict[str, Any]:
    response = await bank.client.post(
        HOLDS,
        json={"account_id": account_id, "amount": amount, "currency": "USD", **extra},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def everything(bank: Bank) -> dict[str, Any]:
    """What a refused request must leave untouched: the snapshot of the other tests, every
    available balance and every hold."""
    snapshot = await bank.snapshot()
    async with bank.container.database.read() as connection:
        available = (
            await connection.execute(select(balances.c.account_id, balances.c.available_balance))
        ).all()
        hold_rows = (await connection.execute(select(holds))).all()
    return {
        **snapshot,
        "available": sorted(map(tuple, available)),
        "holds": sorted(map(tuple, hold_rows)),
    }


async def events(bank: Bank) -> list[tuple[str, str, str, dict[str, Any]]]:
    async with bank.container.database.read() as connection:
        rows = (
            await connection.execute(
                select(
                    outbox.c.topic, outbox.c.event_key, outbox.c.event_type, outbox.c.payload
                ).order_by(outbox.c.outbox_id)
            )
        ).all()
    return [(topic, key, kind, json.loads(payload)) for topic, key, kind, payload in rows]


async def test_a_hold_is_authorized_captured_in_parts_and_closed(bank: Bank) -> None:
    _, customer, account_id = await customer_account(bank)

    held = await authorize(bank, customer, account_id, "30.00", description="Hotel")

    assert (held["status"], held["amount"], held["captured_amount"]) == ("open", "30.00", "0.00")
    assert await amounts(bank, account_id, customer) == ("100.00", "70.00")
    hold_id = held["hold_id"]
    first = await bank.client.post(
        f"{HOLDS}/{hold_id}/capture", json={"amount": "10.00"}, headers=customer
    )
    assert first.status_code == 200, first.text
    assert (first.json()["status"], first.json()["captured_amount"]) == ("open", "10.00")
    capture = first.json()["capture"]
    assert (capture["transaction_type"], capture["amount"], capture["hold_id"]) == (
        "debit",
        "10.00",
        hold_id,
    )
    assert capture["available_balance"] == "70.00"
    assert await amounts(bank, account_id, customer) == ("90.00", "70.00")
    last = await bank.client.post(
        f"{HOLDS}/{hold_id}/capture", json={"amount": 5, "final": True}, headers=customer
    )
    assert last.status_code == 200, last.text
    assert (last.json()["status"], last.json()["captured_amount"]) == ("captured", "15.00")
    assert last.json()["closed_at"] is not None
    assert await amounts(bank, account_id, customer) == ("85.00", "85.00")
    read = await bank.client.get(f"{HOLDS}/{hold_id}", headers=customer)
    assert read.status_code == 200 and read.json()["status"] == "captured"
    history = await bank.client.get(f"/api/v1/accounts/{account_id}/transactions", headers=customer)
    captures = [leg for leg in history.json()["transactions"] if leg["hold_id"] == hold_id]
    assert sorted(leg["amount"] for leg in captures) == ["10.00", "5.00"]
    report = await reconcile(bank.container.unit_of_work)
    assert report.clean, report.problems
    assert report.currencies["USD"]["open_holds"] == "0.00"


async def test_a_capture_without_an_amount_takes_all_of_it(bank: Bank) -> None:
    _, customer, account_id = await customer_account(bank)
    held = await authorize(bank, customer, account_id, "30.00")

    response = await bank.client.post(f"{HOLDS}/{held['hold_id']}/capture", headers=customer)

    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["captured_amount"]) == ("captured", "30.00")
    assert await amounts(bank, account_id, customer) == ("70.00", "70.00")


async def test_a_hold_with_a_destination_captures_as_a_transfer(bank: Bank) -> None:
    staff, customer, account_id = await customer_account(bank)
    merchant_id, merchant = await bank.user(Role.CUSTOMER)
    shop = await bank.account(merchant_id, staff)
    held = await authorize(bank, customer, account_id, "40.00", destination_account_id=shop)

    response = await bank.client.post(
        f"{HOLDS}/{held['hold_id']}/capture", json={"amount": "25.00"}, headers=customer
    )

    assert response.status_code == 200, response.text
    capture = response.json()["capture"]
    assert (capture["transaction_type"], capture["counterparty_account_id"]) == (
        "transfer_out",
        shop,
    )
    assert await amounts(bank, account_id, customer) == ("75.00", "60.00")
    assert await amounts(bank, shop, merchant) == ("25.00", "25.00")
    # The merchant reads its money, not the customer's hold.
    assert (
        await bank.client.get(f"{HOLDS}/{held['hold_id']}", headers=merchant)
    ).status_code == 404
    report = await reconcile(bank.container.unit_of_work)
    assert report.clean, report.problems
    assert report.currencies["USD"]["open_holds"] == "15.00"


async def test_void_releases_the_rest_and_a_second_void_replays(bank: Bank) -> None:
    _, customer, account_id = await customer_account(bank)
    held = await authorize(bank, customer, account_id, "30.00")
    hold_id = held["hold_id"]
    await bank.client.post(f"{HOLDS}/{hold_id}/capture", json={"amount": "10"}, headers=customer)

    voided = await bank.client.post(f"{HOLDS}/{hold_id}/void", headers=customer)
    again = await bank.client.post(f"{HOLDS}/{hold_id}/void", headers=customer)

    assert voided.status_code == 200, voided.text
    assert voided.json()["status"] == "voided"
    assert "Idempotent-Replayed" not in voided.headers
    assert (again.status_code, again.headers["Idempotent-Replayed"]) == (200, "true")
    assert again.json() == voided.json()
    assert await amounts(bank, account_id, customer) == ("90.00", "90.00")
    report = await reconcile(bank.container.unit_of_work)
    assert report.clean, report.problems


async def test_a_closed_hold_is_not_open_and_nothing_changes(bank: Bank) -> None:
    _, customer, account_id = await customer_account(bank)
    captured = await authorize(bank, customer, account_id, "30.00")
    await bank.client.post(f"{HOLDS}/{captured['hold_id']}/capture", headers=customer)
    voided = await authorize(bank, customer, account_id, "5.00")
    await bank.client.post(f"{HOLDS}/{voided['hold_id']}/void", headers=customer)
    before = await everything(bank)

    for path in (f"{captured['hold_id']}/capture", f"{captured['hold_id']}/void"):
        response = await bank.client.post(f"{HOLDS}/{path}", headers=customer)
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "HOLD_NOT_OPEN"
    response = await bank.client.post(
        f"{HOLDS}/{voided['hold_id']}/capture", json={"amount": "1"}, headers=customer
    )
    assert (response.status_code, response.json()["error"]["code"]) == (409, "HOLD_NOT_OPEN")

    assert await everything(bank) == before


async def test_an_expired_hold_is_released_once_and_cannot_be_captured(bank: Bank) -> None:
    _, customer, account_id = await customer_account(bank)
    expires_at = datetime.now(UTC) + timedelta(hours=1)
    due = await authorize(bank, customer, account_id, "30.00", expires_at=expires_at.isoformat())
    kept = await authorize(bank, customer, account_id, "20.00")
    holds_service = bank.container.holds
    later = expires_at + timedelta(seconds=1)

    assert await holds_service.expire_due(now=later) == 1
    assert await holds_service.expire_due(now=later) == 0

    read = await bank.client.get(f"{HOLDS}/{due['hold_id']}", headers=customer)
    assert (read.json()["status"], read.json()["closed_at"] is not None) == ("expired", True)
    kept_now = await bank.client.get(f"{HOLDS}/{kept['hold_id']}", headers=customer)
    assert kept_now.json()["status"] == "open"
    assert await amounts(bank, account_id, customer) == ("100.00", "80.00")
    before = await everything(bank)
    response = await bank.client.post(f"{HOLDS}/{due['hold_id']}/capture", headers=customer)
    assert (response.status_code, response.json()["error"]["code"]) == (409, "HOLD_NOT_OPEN")
    assert await everything(bank) == before
    expired = [e for e in await events(bank) if e[2] == "hold.expired"]
    assert [payload["hold_id"] for *_, payload in expired] == [due["hold_id"]]
    report = await reconcile(bank.container.unit_of_work)
    assert report.clean, report.problems


async def test_holds_are_listed_newest_first_by_account_and_status(bank: Bank) -> None:
    staff, customer, account_id = await customer_account(bank)
    first = await authorize(bank, customer, account_id, "1.00")
    second = await authorize(bank, customer, account_id, "2.00")
    third = await authorize(bank, customer, account_id, "3.00")
    await bank.client.post(f"{HOLDS}/{second['hold_id']}/void", headers=customer)
    _, other, other_account = await customer_account(bank)
    await authorize(bank, other, other_account, "4.00")

    page = await bank.client.get(HOLDS, params={"page_size": 2}, headers=customer)
    assert page.status_code == 200, page.text
    assert [h["hold_id"] for h in page.json()["holds"]] == [third["hold_id"], second["hold_id"]]
    rest = await bank.client.get(
        HOLDS, params={"page_size": 2, "cursor": page.json()["next_cursor"]}, headers=customer
    )
    assert [h["hold_id"] for h in rest.json()["holds"]] == [first["hold_id"]]
    assert rest.json()["next_cursor"] is None
    open_only = await bank.client.get(
        HOLDS, params={"account_id": account_id, "status": "open"}, headers=customer
    )
    assert [h["hold_id"] for h in open_only.json()["holds"]] == [third["hold_id"], first["hold_id"]]
    everyone = await bank.client.get(HOLDS, headers=staff)
    assert len(everyone.json()["holds"]) == 4
    other_list = await bank.client.get(HOLDS, params={"account_id": account_id}, headers=other)
    assert (other_list.status_code, other_list.json()["error"]["code"]) == (
        404,
        "ACCOUNT_NOT_FOUND",
    )


# --- idempotency ----------------------------------------------------------------------------


async def test_the_same_authorization_replays_and_other_parameters_conflict(bank: Bank) -> None:
    _, customer, account_id = await customer_account(bank)
    body = {"account_id": account_id, "amount": "30.00", "currency": "USD"}
    first = await bank.client.post(
        HOLDS, json=body, headers={**customer, "Idempotency-Key": "order-7"}
    )
    replay = await bank.client.post(
        HOLDS, json={**body, "reference_id": "order-7"}, headers=customer
    )
    before = await everything(bank)

    conflict = await bank.client.post(
        HOLDS, json={**body, "amount": "31.00", "reference_id": "order-7"}, headers=customer
    )

    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    assert (replay.status_code, replay.headers["Idempotent-Replayed"]) == (201, "true")
    assert replay.json() == first.json()
    assert (conflict.status_code, conflict.json()["error"]["code"]) == (409, "IDEMPOTENCY_CONFLICT")
    assert await everything(bank) == before
    assert await amounts(bank, account_id, customer) == ("100.00", "70.00")


async def test_a_capture_key_replays_the_capture_and_conflicts_otherwise(bank: Bank) -> None:
    _, customer, account_id = await customer_account(bank)
    held = await authorize(bank, customer, account_id, "30.00")
    path = f"{HOLDS}/{held['hold_id']}/capture"
    first = await bank.client.post(
        path, json={"amount": "10", "reference_id": "c1"}, headers=customer
    )
    replay = await bank.client.post(
        path, json={"amount": "10"}, headers={**customer, "Idempotency-Key": "c1"}
    )
    before = await everything(bank)

    conflict = await bank.client.post(
        path, json={"amount": "11", "reference_id": "c1"}, headers=customer
    )

    assert first.status_code == 200, first.text
    assert (replay.status_code, replay.headers["Idempotent-Replayed"]) == (200, "true")
    assert replay.json()["capture"] == first.json()["capture"]
    assert (conflict.status_code, conflict.json()["error"]["code"]) == (409, "IDEMPOTENCY_CONFLICT")
    assert await everything(bank) == before
    assert await amounts(bank, account_id, customer) == ("90.00", "70.00")


# --- who may --------------------------------------------------------------------------------


async def test_another_customer_gets_404_and_nothing_changes(bank: Bank) -> None:
    _, customer, account_id = await customer_account(bank)
    held = await authorize(bank, customer, account_id, "30.00")
    _, stranger = await bank.user(Role.CUSTOMER)
    before = await everything(bank)

    for method, path in (
        ("GET", f"{HOLDS}/{held['hold_id']}"),
        ("POST", f"{HOLDS}/{held['hold_id']}/capture"),
        ("POST", f"{HOLDS}/{held['hold_id']}/void"),
        ("GET", f"{HOLDS}/{uuid4()}"),
    ):
        response = await bank.client.request(method, path, headers=stranger)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"]["code"] == "HOLD_NOT_FOUND"
    listed = await bank.client.get(HOLDS, headers=stranger)
    assert listed.json()["holds"] == []
    response = await bank.client.post(
        HOLDS, json={"account_id": account_id, "amount": "1", "currency": "USD"}, headers=stranger
    )
    assert (response.status_code, response.json()["error"]["code"]) == (404, "ACCOUNT_NOT_FOUND")

    assert await everything(bank) == before


async def test_auditors_read_holds_but_cannot_move_them(bank: Bank) -> None:
    _, customer, account_id = await customer_account(bank)
    held = await authorize(bank, customer, account_id, "30.00")
    _, auditor = await bank.user(Role.AUDITOR)
    before = await everything(bank)

    read = await bank.client.get(f"{HOLDS}/{held['hold_id']}", headers=auditor)
    voided = await bank.client.post(f"{HOLDS}/{held['hold_id']}/void", headers=auditor)
    unauthenticated = await bank.client.post(f"{HOLDS}/{held['hold_id']}/void")

    assert read.status_code == 200
    assert (voided.status_code, voided.json()["error"]["code"]) == (403, "FORBIDDEN")
    assert (unauthenticated.status_code, unauthenticated.json()["error"]["code"]) == (
        401,
        "UNAUTHENTICATED",
    )
    assert await everything(bank) == before


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "status", "code"),
    [
        ({"amount": "0"}, 422, "VALIDATION_ERROR"),
        ({"amount": "-1.00"}, 422, "VALIDATION_ERROR"),
        ({"amount": "1e2"}, 422, "VALIDATION_ERROR"),
        ({"amount": "1.001"}, 422, "VALIDATION_ERROR"),
        ({"amount": "100.01"}, 422, "INSUFFICIENT_FUNDS"),
        ({"currency": "EUR"}, 422, "CURRENCY_MISMATCH"),
        ({"expires_at": "2020-01-01T00:00:00Z"}, 422, "VALIDATION_ERROR"),
        ({"expires_at": "2999-01-01T00:00:00Z"}, 422, "VALIDATION_ERROR"),
        ({"expires_at": "tomorrow"}, 422, "VALIDATION_ERROR"),
        ({"destination_account_id": "not-a-uuid"}, 422, "VALIDATION_ERROR"),
        ({"account_id": str(uuid4())}, 404, "ACCOUNT_NOT_FOUND"),
        ({"unknown": 1}, 422, "VALIDATION_ERROR"),
    ],
)
async def test_a_bad_authorization_answers_the_envelope_and_changes_nothing(
    bank: Bank, changes: dict[str, Any], status: int, code: str
) -> None:
    _, customer, account_id = await customer_account(bank)
    before = await everything(bank)

    response = await bank.client.post(
        HOLDS,
        json={"account_id": account_id, "amount": "10.00", "currency": "USD", **changes},
        headers=customer,
    )

    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert {"message", "request_id", "trace_id", "timestamp"} <= error.keys()
    assert await everything(bank) == before


async def test_a_destination_of_the_account_itself_is_refused(bank: Bank) -> None:
    _, customer, account_id = await customer_account(bank)
    before = await everything(bank)

    response = await bank.client.post(
        HOLDS,
        json={
            "account_id": account_id,
            "amount": "1",
            "currency": "USD",
            "destination_account_id": account_id,
        },
        headers=customer,
    )

    assert (response.status_code, response.json()["error"]["code"]) == (422, "VALIDATION_ERROR")
    assert await everything(bank) == before


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"amount": "30.01"}, 422, "HOLD_AMOUNT_EXCEEDED"),
        ({"amount": "0"}, 422, "VALIDATION_ERROR"),
        ({"amount": "1.001"}, 422, "VALIDATION_ERROR"),
        ({"final": "yes"}, 422, "VALIDATION_ERROR"),
        ({"reference_id": ""}, 422, "VALIDATION_ERROR"),
    ],
)
async def test_a_bad_capture_answers_the_envelope_and_changes_nothing(
    bank: Bank, body: dict[str, Any], status: int, code: str
) -> None:
    _, customer, account_id = await customer_account(bank)
    held = await authorize(bank, customer, account_id, "30.00")
    before = await everything(bank)

    response = await bank.client.post(
        f"{HOLDS}/{held['hold_id']}/capture", json=body, headers=customer
    )

    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert await everything(bank) == before


# --- events -----------------------------------------------------------------------------------


async def test_every_change_of_a_hold_is_an_event_with_its_balances(bank: Bank) -> None:
    _, customer, account_id = await customer_account(bank)
    start = len(await events(bank))
    held = await authorize(bank, customer, account_id, "30.00")
    hold_id = held["hold_id"]
    await bank.client.post(f"{HOLDS}/{hold_id}/capture", json={"amount": "10"}, headers=customer)
    await bank.client.post(f"{HOLDS}/{hold_id}/void", headers=customer)

    published = (await events(bank))[start:]

    assert [(topic, kind) for topic, _, kind, _ in published] == [
        ("banking.holds", "hold.authorized"),
        ("banking.accounts.balances", "balance.updated"),
        ("banking.transactions.completed", "transaction.completed"),
        ("banking.accounts.balances", "balance.updated"),
        ("banking.holds", "hold.captured"),
        ("banking.holds", "hold.voided"),
        ("banking.accounts.balances", "balance.updated"),
    ]
    assert {key for _, key, _, _ in published} == {account_id}
    assert [
        (p["current_balance"], p["available_balance"])
        for _, _, kind, p in published
        if kind == "balance.updated"
    ] == [("100.00", "70.00"), ("90.00", "70.00"), ("90.00", "90.00")]
    states = [
        (p["status"], p["captured_amount"])
        for _, _, kind, p in published
        if kind.startswith("hold.")
    ]
    assert states == [("open", "0.00"), ("open", "10.00"), ("voided", "10.00")]


async def test_with_holds_open_a_movements_balance_events_carry_both_balances(
    bank: Bank,
) -> None:
    """A debit, a transfer (both sides) and a batch item on accounts with open holds: their
    balance events show the current balance and the lower available one, each exact (the
    PostgreSQL group function returns both, as the Python decisions do on SQLite)."""
    staff, customer, source = await customer_account(bank)
    other_id, other = await bank.user(Role.CUSTOMER)
    destination = await bank.account(other_id, staff, funded="100.00")
    await authorize(bank, customer, source, "30.00")
    await authorize(bank, other, destination, "20.00")
    start = len(await events(bank))

    debit = await bank.client.post(
        "/api/v1/transactions/debit",
        json={"account_id": source, "amount": "10.00", "currency": "USD"},
        headers=customer,
    )
    assert debit.status_code == 200, debit.text
    assert debit.json()["available_balance"] == "60.00"
    transfer = await bank.client.post(
        "/api/v1/transactions/transfer",
        json={
            "source_account_id": source,
            "destination_account_id": destination,
            "amount": "5.00",
            "currency": "USD",
        },
        headers=customer,
    )
    assert transfer.status_code == 200, transfer.text
    item = {"type": "debit", "account_id": source, "amount": "1.00", "currency": "USD"}
    batch = await bank.client.post(
        "/api/v1/transactions/batch", json={"atomic": False, "items": [item]}, headers=customer
    )
    assert batch.status_code == 200, batch.text

    balances_published = [
        (key, p["current_balance"], p["available_balance"])
        for _, key, kind, p in (await events(bank))[start:]
        if kind == "balance.updated"
    ]
    assert balances_published == [
        (source, "90.00", "60.00"),
        (source, "85.00", "55.00"),
        (destination, "105.00", "85.00"),
        (source, "84.00", "54.00"),
    ]
    assert await amounts(bank, source, customer) == ("84.00", "54.00")
    assert await amounts(bank, destination, other) == ("105.00", "85.00")
    report = await reconcile(bank.container.unit_of_work)
    assert report.clean, report.problems


async def test_a_refused_request_publishes_nothing(bank: Bank) -> None:
    _, customer, account_id = await customer_account(bank)
    before = await events(bank)

    await bank.client.post(
        HOLDS, json={"account_id": account_id, "amount": "500", "currency": "USD"}, headers=customer
    )

    assert await events(bank) == before
    assert Decimal((await amounts(bank, account_id, customer))[1]) == Decimal("100.00")


async def test_reconcile_names_available_balances_that_forget_or_invent_holds(bank: Bank) -> None:
    _, customer, with_hold = await customer_account(bank)
    *_, without_hold = await customer_account(bank)
    await authorize(bank, customer, with_hold, "30.00")
    report = await reconcile(bank.container.unit_of_work)
    assert report.clean, report.problems
    assert report.currencies["USD"]["open_holds"] == "30.00"

    # Behind the ledger's back: the hold's money back in available, and a hold that does not
    # exist taken from another account's available.
    async with bank.container.database.unit_of_work() as connection:
        for account_id, change in ((with_hold, "30.00"), (without_hold, "-5.00")):
            await connection.execute(
                balances.update()
                .where(balances.c.account_id == UUID(account_id))
                .values(available_balance=balances.c.available_balance + Decimal(change))
            )
    report = await reconcile(bank.container.unit_of_work)

    assert not report.clean
    named = "\n".join(report.problems)
    assert f"account {with_hold}: current 100.00, available 100.00" in named
    assert "open holds 30.00" in named
    assert f"account {without_hold}: current 100.00, available 95.00" in named
