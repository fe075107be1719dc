"""Overdraft limits over REST, on SQLite and PostgreSQL: staff set one, the account may go
down to it and not one cent further, and every refusal changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from banking.domain.roles import Role
from tests.conftest import Bank


def limit_path(account_id: str) -> str:
    return f"/api/v1/accounts/{account_id}/overdraft-limit"


async def debit(bank: Bank, account_id: str, amount: str, headers: dict[str, str]) -> Any:
    return await bank.client.post(
        "/api/v1/transactions/debit",
        json={"account_id": account_id, "amount": amount, "currency": "USD"},
        headers=headers,
    )


async def test_a_teller_sets_a_limit_and_the_account_goes_down_to_it(
    bank: Bank, staff: dict[str, str]
) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, staff, funded="100.00")
    before = await bank.client.get(f"/api/v1/accounts/{account_id}/balance", headers=customer)

    response = await bank.client.put(
        limit_path(account_id), json={"overdraft_limit": "50.00"}, headers=staff
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["overdraft_limit"] == "50.00"
    assert body["available_balance"] == "100.00"
    assert body["version"] == before.json()["version"] + 1
    first = await debit(bank, account_id, "149.99", customer)
    assert first.status_code == 200, first.text
    assert first.json()["available_balance"] == "-49.99"
    beyond = await debit(bank, account_id, "0.02", customer)
    assert beyond.status_code == 422, beyond.text
    assert beyond.json()["error"]["code"] == "INSUFFICIENT_FUNDS"
    last = await debit(bank, account_id, "0.01", customer)
    assert last.json()["available_balance"] == "-50.00"
    balance = await bank.client.get(f"/api/v1/accounts/{account_id}/balance", headers=customer)
    assert balance.json()["current_balance"] == "-50.00"
    assert balance.json()["available_balance"] == "-50.00"
    assert balance.json()["overdraft_limit"] == "50.00"
    assert balance.headers["ETag"] == f'"{balance.json()["version"]}"'


async def test_a_limit_below_what_the_account_uses_is_refused_and_changes_nothing(
    bank: Bank, staff: dict[str, str]
) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, staff, funded="10.00")
    await bank.client.put(limit_path(account_id), json={"overdraft_limit": "30"}, headers=staff)
    assert (await debit(bank, account_id, "35.00", customer)).status_code == 200
    before = await bank.snapshot()

    response = await bank.client.put(
        limit_path(account_id), json={"overdraft_limit": "24.99"}, headers=staff
    )

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert "overdraft_limit" in str(error)
    assert await bank.snapshot() == before


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"overdraft_limit": "-1.00"}, 422),
        ({"overdraft_limit": "1.001"}, 422),
        ({"overdraft_limit": "1e3"}, 422),
        ({"overdraft_limit": "10000000000000000"}, 422),
        ({"overdraft_limit": True}, 422),
        ({"overdraft_limit": None}, 422),
        ({}, 422),
        ({"overdraft_limit": "10.00", "extra": 1}, 422),
    ],
)
async def test_a_bad_limit_answers_the_envelope_and_changes_nothing(
    bank: Bank, staff: dict[str, str], body: dict[str, Any], status: int
) -> None:
    customer_id, _ = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, staff, funded="10.00")
    before = await bank.snapshot()

    response = await bank.client.put(limit_path(account_id), json=body, headers=staff)

    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert await bank.snapshot() == before


async def test_customers_and_auditors_cannot_set_a_limit(bank: Bank, staff: dict[str, str]) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    _, other = await bank.user(Role.CUSTOMER)
    _, auditor = await bank.user(Role.AUDITOR)
    account_id = await bank.account(customer_id, staff, funded="10.00")
    before = await bank.snapshot()

    answers = [
        await bank.client.put(
            limit_path(account_id), json={"overdraft_limit": "100.00"}, headers=headers
        )
        for headers in (customer, other, auditor)
    ]

    assert [answer.status_code for answer in answers] == [403, 403, 403]
    assert {answer.json()["error"]["code"] for answer in answers} == {"FORBIDDEN"}
    assert await bank.snapshot() == before
    assert (await debit(bank, account_id, "10.01", customer)).status_code == 422


async def test_an_unknown_account_is_404_and_changes_nothing(
    bank: Bank, staff: dict[str, str]
) -> None:
    before = await bank.snapshot()

    response = await bank.client.put(
        limit_path("00000000-0000-4000-8000-000000000000"),
        json={"overdraft_limit": "1.00"},
        headers=staff,
    )

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "ACCOUNT_NOT_FOUND"
    assert await bank.snapshot() == before


async def test_statements_and_past_balances_show_an_overdrawn_account(
    bank: Bank, staff: dict[str, str]
) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, staff, funded="10.00")
    await bank.client.put(limit_path(account_id), json={"overdraft_limit": "50"}, headers=staff)
    assert (await debit(bank, account_id, "30.00", customer)).status_code == 200
    period = {"from": "2000-01-01T00:00:00Z", "to": "2999-01-01T00:00:00Z"}

    statement = await bank.client.get(
        f"/api/v1/accounts/{account_id}/statement", params=period, headers=customer
    )
    past = await bank.client.get(
        f"/api/v1/accounts/{account_id}/balance",
        params={"as_of": period["to"]},
        headers=customer,
    )

    assert statement.status_code == 200, statement.text
    body = statement.json()
    assert (body["opening_balance"], body["closing_balance"]) == ("0.00", "-20.00")
    assert [line["running_balance"] for line in body["transactions"]] == ["10.00", "-20.00"]
    assert past.status_code == 200, past.text
    assert past.json()["available_balance"] == "-20.00"
    assert past.json()["overdraft_limit"] == "50.00"
