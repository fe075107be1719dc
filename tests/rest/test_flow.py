"""The sketch's integration flow and the everyday use of the API, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq

from banking.domain.roles import Role
from tests.conftest import Bank


async def test_sketch_flow_credit_debit_balance(bank: Bank, staff: dict[str, str]) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, staff)

    credit = await bank.client.post(
        "/api/v1/transactions/credit",
        json={
            "account_id": account_id,
            "amount": 1000.00,
            "currency": "USD",
            "description": "Initial credit",
            "reference_id": "TEST-INIT-CREDIT",
        },
        headers=staff,
    )
    assert credit.status_code == 200, credit.text
    debit = await bank.client.post(
        "/api/v1/transactions/debit",
        json={
            "account_id": account_id,
            "amount": 100.00,
            "currency": "USD",
            "description": "Test debit",
            "reference_id": "TEST-DEBIT-1",
        },
        headers=customer,
    )
    assert debit.status_code == 200, debit.text
    body = debit.json()
    assert body["status"] == "completed"
    assert body["amount"] == "100.00"
    assert body["available_balance"] == "900.00"

    balance = await bank.client.get(f"/api/v1/accounts/{account_id}/balance", headers=customer)
    assert balance.status_code == 200
    assert balance.json()["available_balance"] == "900.00"
    assert balance.json()["current_balance"] == "900.00"
    assert balance.headers["ETag"] == f'"{balance.json()["version"]}"'

    leg = await bank.client.get(f"/api/v1/transactions/{body['transaction_id']}", headers=customer)
    assert leg.status_code == 200
    assert leg.json()["transaction_type"] == "debit"
    assert leg.json()["reference_id"] == "TEST-DEBIT-1"


async def test_crediting_a_tenth_ten_times_gives_exactly_one(
    bank: Bank, staff: dict[str, str]
) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, staff)
    for _ in range(10):
        response = await bank.client.post(
            "/api/v1/transactions/credit",
            json={"account_id": account_id, "amount": 0.1, "currency": "USD"},
            headers=staff,
        )
        assert response.status_code == 200, response.text
    assert (await bank.balance(account_id, customer)) == Decimal("1.00")
    balance = await bank.client.get(f"/api/v1/accounts/{account_id}/balance", headers=customer)
    assert balance.json()["available_balance"] == "1.00"


async def test_transfer_moves_money_between_accounts(bank: Bank, staff: dict[str, str]) -> None:
    alice_id, alice = await bank.user(Role.CUSTOMER)
    bob_id, bob = await bank.user(Role.CUSTOMER)
    source = await bank.account(alice_id, staff, funded="250.00")
    destination = await bank.account(bob_id, staff)

    response = await bank.client.post(
        "/api/v1/transactions/transfer",
        json={
            "source_account_id": source,
            "destination_account_id": destination,
            "amount": "75.25",
            "currency": "USD",
            "reference_id": "rent-1",
        },
        headers=alice,
    )
    assert response.status_code == 200, response.text
    out_leg = response.json()
    assert out_leg["transaction_type"] == "transfer_out"
    assert out_leg["available_balance"] == "174.75"
    assert await bank.balance(source, alice) == Decimal("174.75")
    assert await bank.balance(destination, bob) == Decimal("75.25")

    in_leg = await bank.client.get(
        f"/api/v1/transactions/{out_leg['related_transaction_id']}", headers=bob
    )
    assert in_leg.status_code == 200
    assert in_leg.json()["transaction_type"] == "transfer_in"
    assert in_leg.json()["related_transaction_id"] == out_leg["transaction_id"]


async def test_history_pages_filters_and_exports(bank: Bank, staff: dict[str, str]) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, staff, funded="100.00")
    for index in range(5):
        response = await bank.client.post(
            "/api/v1/transactions/debit",
            json={
                "account_id": account_id,
                "amount": "1.10",
                "currency": "USD",
                "reference_id": f"d-{index}",
            },
            headers=customer,
        )
        assert response.status_code == 200
    url = f"/api/v1/accounts/{account_id}/transactions"

    seen: list[str] = []
    cursor = None
    while True:
        params = {"page_size": 2} | ({"cursor": cursor} if cursor else {})
        page = await bank.client.get(url, params=params, headers=customer)
        assert page.status_code == 200, page.text
        seen += [leg["reference_id"] for leg in page.json()["transactions"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 6 and len(set(seen)) == 6
    assert seen[:5] == [f"d-{index}" for index in reversed(range(5))]

    debits = await bank.client.get(url, params={"type": "debit"}, headers=customer)
    assert [leg["transaction_type"] for leg in debits.json()["transactions"]] == ["debit"] * 5

    arrow = await bank.client.get(
        url, headers={**customer, "Accept": "application/vnd.apache.arrow.stream"}
    )
    assert arrow.headers["content-type"].startswith("application/vnd.apache.arrow.stream")
    table = pa.ipc.open_stream(io.BytesIO(arrow.content)).read_all()
    assert table.num_rows == 6
    assert table.schema.field("amount").type == pa.decimal128(18, 2)
    assert sorted(table.column("amount").to_pylist()) == [Decimal("1.10")] * 5 + [Decimal("100.00")]

    parquet = await bank.client.get(
        url, headers={**customer, "Accept": "application/vnd.apache.parquet"}
    )
    assert pq.read_table(io.BytesIO(parquet.content)).num_rows == 6


async def test_balance_etag_answers_not_modified(bank: Bank, staff: dict[str, str]) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, staff, funded="5.00")
    first = await bank.client.get(f"/api/v1/accounts/{account_id}/balance", headers=customer)
    again = await bank.client.get(
        f"/api/v1/accounts/{account_id}/balance",
        headers={**customer, "If-None-Match": first.headers["ETag"]},
    )
    assert again.status_code == 304


async def test_account_lookup_by_number_and_listing(bank: Bank, staff: dict[str, str]) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, staff)
    account = (await bank.client.get(f"/api/v1/accounts/{account_id}", headers=customer)).json()
    found = await bank.client.get(
        "/api/v1/accounts", params={"account_number": account["account_number"]}, headers=customer
    )
    assert [a["account_id"] for a in found.json()["accounts"]] == [account_id]
    mine = await bank.client.get("/api/v1/accounts", headers=customer)
    assert [a["account_id"] for a in mine.json()["accounts"]] == [account_id]


async def test_frozen_account_declines_and_records_failure(
    bank: Bank, staff: dict[str, str]
) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, staff, funded="50.00")
    frozen = await bank.client.patch(
        f"/api/v1/accounts/{account_id}", json={"is_active": False}, headers=staff
    )
    assert frozen.status_code == 200 and frozen.json()["is_active"] is False
    debit = await bank.client.post(
        "/api/v1/transactions/debit",
        json={"account_id": account_id, "amount": "1.00", "currency": "USD"},
        headers=customer,
    )
    assert debit.status_code == 409
    assert debit.json()["error"]["code"] == "ACCOUNT_INACTIVE"
    failed = await bank.client.get(
        f"/api/v1/transactions/{debit.json()['error']['transaction_id']}", headers=customer
    )
    assert failed.json()["status"] == "failed"
    assert await bank.balance(account_id, customer) == Decimal("50.00")


async def test_token_endpoint_and_users_me(bank: Bank) -> None:
    await bank.container.users.create(
        None,
        username="carol",
        email="carol@example.com",
        password="carol-password-1",
        role=Role.CUSTOMER,
    )
    wrong = await bank.client.post(
        "/api/v1/auth/token", data={"username": "carol", "password": "not-her-password"}
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "UNAUTHENTICATED"
    token = await bank.client.post(
        "/api/v1/auth/token", data={"username": "carol", "password": "carol-password-1"}
    )
    assert token.status_code == 200
    assert token.json()["token_type"] == "bearer"
    me = await bank.client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {token.json()['access_token']}"}
    )
    assert me.status_code == 200
    assert me.json()["username"] == "carol"
    assert "password" not in me.text
