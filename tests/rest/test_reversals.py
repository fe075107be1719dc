"""POST /api/v1/transactions/{id}/reverse over REST, on SQLite and PostgreSQL: the reversal
moves the money back linked to the original, the original shows it, a retry replays, and
every refusal answers the envelope and changes nothing (balances, legs, journal, outbox, the
original's reversed amount)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from banking.domain.roles import Role
from banking.storage.tables import outbox
from tests.conftest import Bank

REASON = "duplicate charge"


def reverse_path(transaction_id: str) -> str:
    return f"/api/v1/transactions/{transaction_id}/reverse"


async def move(bank: Bank, kind: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    response = await bank.client.post(
        f"/api/v1/transactions/{kind}", json={"currency": "USD", **body}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()


async def reverse(bank: Bank, transaction_id: str, headers: dict[str, str], **body: Any) -> Any:
    return await bank.client.post(
        reverse_path(transaction_id), json={"reason": REASON, **body}, headers=headers
    )


async def shown(bank: Bank, transaction_id: str, headers: dict[str, str]) -> dict[str, Any]:
    response = await bank.client.get(f"/api/v1/transactions/{transaction_id}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def snapshot(bank: Bank, original: str, staff: dict[str, str]) -> dict[str, Any]:
    """``bank.snapshot`` and what the original shows of its reversals."""
    view = await shown(bank, original, staff)
    return {
        **await bank.snapshot(),
        "reversed": (view["reversed_amount"], view["reversals"]),
    }


async def test_a_teller_reverses_a_debit_and_the_original_shows_it(
    bank: Bank, staff: dict[str, str]
) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, staff, funded="100.00")
    debit = await move(bank, "debit", {"account_id": account_id, "amount": "30.00"}, customer)

    response = await reverse(bank, debit["transaction_id"], staff, amount="10.00")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["transaction_type"] == "credit"
    assert (body["amount"], body["available_balance"]) == ("10.00", "80.00")
    assert body["reverses_transaction_id"] == debit["transaction_id"]
    assert body["description"] == REASON
    assert "Idempotent-Replayed" not in response.headers
    original = await shown(bank, debit["transaction_id"], customer)
    assert original["reversed_amount"] == "10.00"
    assert original["reversals"] == [body["transaction_id"]]
    reversal = await shown(bank, body["transaction_id"], customer)
    assert (reversal["reversed_amount"], reversal["reversals"]) == ("0.00", [])
    rest = await reverse(bank, debit["transaction_id"], staff)
    assert rest.json()["amount"] == "20.00"
    assert await bank.balance(account_id, customer) == 100
    async with bank.container.database.read() as connection:
        rows = (await connection.execute(select(outbox).order_by(outbox.c.outbox_id))).all()
    published = [
        json.loads(row.payload) for row in rows if row.event_type.startswith("transaction.")
    ]
    assert published[-1]["reverses_transaction_id"] == debit["transaction_id"]
    assert published[-1]["transaction_id"] == rest.json()["transaction_id"]


async def test_a_customer_refunds_a_transfer_they_received(
    bank: Bank, staff: dict[str, str]
) -> None:
    payer_id, payer = await bank.user(Role.CUSTOMER)
    payee_id, payee = await bank.user(Role.CUSTOMER)
    source = await bank.account(payer_id, staff, funded="50.00")
    destination = await bank.account(payee_id, staff)
    sent = await move(
        bank,
        "transfer",
        {"source_account_id": source, "destination_account_id": destination, "amount": "20"},
        payer,
    )
    received = sent["related_transaction_id"]

    refund = await reverse(bank, received, payee, amount="5.00")

    assert refund.status_code == 200, refund.text
    body = refund.json()
    assert body["transaction_type"] == "transfer_out"
    assert (body["account_id"], body["counterparty_account_id"]) == (destination, source)
    assert body["reverses_transaction_id"] == sent["transaction_id"]
    assert await bank.balance(source, payer) == 35
    assert await bank.balance(destination, payee) == 15
    payer_view = await shown(bank, sent["transaction_id"], payer)
    payee_view = await shown(bank, received, payee)
    assert payer_view["reversed_amount"] == payee_view["reversed_amount"] == "5.00"
    assert payee_view["reversals"] == [body["transaction_id"]]
    assert payer_view["reversals"] == [body["related_transaction_id"]]
    # The payer cannot take the money back themselves, nor see the payee's side.
    before = await snapshot(bank, sent["transaction_id"], staff)
    own = await reverse(bank, sent["transaction_id"], payer)
    other = await reverse(bank, received, payer)
    assert (own.status_code, own.json()["error"]["code"]) == (403, "FORBIDDEN")
    assert (other.status_code, other.json()["error"]["code"]) == (404, "TRANSACTION_NOT_FOUND")
    assert await snapshot(bank, sent["transaction_id"], staff) == before


async def test_a_retry_replays_and_another_amount_with_the_key_conflicts(
    bank: Bank, staff: dict[str, str]
) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, staff, funded="100.00")
    debit = await move(bank, "debit", {"account_id": account_id, "amount": "30.00"}, customer)
    key = {**staff, "Idempotency-Key": "refund-0001"}

    first = await reverse(bank, debit["transaction_id"], key)
    before = await snapshot(bank, debit["transaction_id"], staff)
    again = await reverse(bank, debit["transaction_id"], key)
    other = await reverse(bank, debit["transaction_id"], key, amount="1.00")

    assert first.status_code == again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert other.status_code == 409, other.text
    assert other.json()["error"]["code"] == "IDEMPOTENCY_CONFLICT"
    assert "amount differs" in other.json()["error"]["message"]
    assert await snapshot(bank, debit["transaction_id"], staff) == before


async def test_a_credit_whose_money_is_gone_declines_with_a_failed_leg(
    bank: Bank, staff: dict[str, str]
) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, staff)
    credit = await move(bank, "credit", {"account_id": account_id, "amount": "40.00"}, staff)
    await move(bank, "debit", {"account_id": account_id, "amount": "35.00"}, customer)

    declined = await reverse(bank, credit["transaction_id"], staff)

    assert declined.status_code == 422, declined.text
    error = declined.json()["error"]
    assert error["code"] == "INSUFFICIENT_FUNDS"
    failed = await shown(bank, error["transaction_id"], staff)
    assert failed["status"] == "failed"
    assert failed["reverses_transaction_id"] == credit["transaction_id"]
    assert (await shown(bank, credit["transaction_id"], staff))["reversed_amount"] == "0.00"
    assert await bank.balance(account_id, customer) == 5


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"reason": ""}, "reason"),
        ({"reason": None}, "reason"),
        ({"reason": "x" * 501}, "reason"),
        ({"reason": "tab\there"}, "reason"),
        ({"amount": "0"}, "amount"),
        ({"amount": "-5.00"}, "amount"),
        ({"amount": "1e1"}, "amount"),
        ({"amount": True}, "amount"),
        ({"amount": "1.001"}, "amount"),
        ({"amount": "30.01"}, "amount"),
        ({"reference_id": ""}, "reference_id"),
        ({"unknown": 1}, "unknown"),
    ],
)
async def test_bad_input_answers_the_envelope_and_changes_nothing(
    bank: Bank, staff: dict[str, str], body: dict[str, Any], field: str
) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, staff, funded="100.00")
    debit = await move(bank, "debit", {"account_id": account_id, "amount": "30.00"}, customer)
    before = await snapshot(bank, debit["transaction_id"], staff)

    response = await bank.client.post(
        reverse_path(debit["transaction_id"]), json={"reason": REASON, **body}, headers=staff
    )

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert field in {detail.get("field", "").split(".")[-1] for detail in error["details"]}
    assert await snapshot(bank, debit["transaction_id"], staff) == before


async def test_who_may_reverse_and_what_is_not_reversible(
    bank: Bank, staff: dict[str, str]
) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    _, other = await bank.user(Role.CUSTOMER)
    _, auditor = await bank.user(Role.AUDITOR)
    account_id = await bank.account(customer_id, staff, funded="10.00")
    debit = await move(bank, "debit", {"account_id": account_id, "amount": "3.00"}, customer)
    declined = await bank.client.post(
        "/api/v1/transactions/debit",
        json={"account_id": account_id, "amount": "99.00", "currency": "USD"},
        headers=customer,
    )
    failed_id = declined.json()["error"]["transaction_id"]
    before = await snapshot(bank, debit["transaction_id"], staff)

    answers = {
        "own debit": await reverse(bank, debit["transaction_id"], customer),
        "other customer": await reverse(bank, debit["transaction_id"], other),
        "auditor": await reverse(bank, debit["transaction_id"], auditor),
        "failed leg": await reverse(bank, failed_id, staff),
        "unknown": await reverse(bank, "6fa459ea-ee8a-4ca4-894e-db77e160355e", staff),
        "not a uuid": await reverse(bank, "not-a-uuid", staff),
    }

    assert {name: (r.status_code, r.json()["error"]["code"]) for name, r in answers.items()} == {
        "own debit": (403, "FORBIDDEN"),
        "other customer": (404, "TRANSACTION_NOT_FOUND"),
        "auditor": (403, "FORBIDDEN"),
        "failed leg": (409, "TRANSACTION_NOT_REVERSIBLE"),
        "unknown": (404, "TRANSACTION_NOT_FOUND"),
        "not a uuid": (422, "VALIDATION_ERROR"),
    }
    assert answers["failed leg"].json()["error"]["transaction_id"] == failed_id
    hidden = await bank.client.get(f"/api/v1/transactions/{debit['transaction_id']}", headers=other)
    assert hidden.status_code == 404
    assert await snapshot(bank, debit["transaction_id"], staff) == before
