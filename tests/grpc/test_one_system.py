"""REST and gRPC are one system: the same ledger, the same ids, the same idempotency keys."""

from __future__ import annotations

from decimal import Decimal

from tests.grpc.conftest import GrpcBank


async def test_a_credit_over_grpc_is_visible_over_rest_with_the_same_id(
    grpc_bank: GrpcBank,
) -> None:
    staff, customer, account_id = await grpc_bank.customer_with_account(None)

    movement = await grpc_bank.client(staff).credit(
        account_id, "75.50", "USD", description="salary", reference_id="pay-1"
    )

    rest = grpc_bank.bank.client
    leg = await rest.get(f"/api/v1/transactions/{movement.transaction_id}", headers=customer)
    assert leg.status_code == 200
    assert leg.json()["transaction_id"] == str(movement.transaction_id)
    assert leg.json()["amount"] == "75.50"
    assert leg.json()["description"] == "salary"
    balance = await rest.get(f"/api/v1/accounts/{account_id}/balance", headers=customer)
    assert balance.json()["available_balance"] == "75.50"
    assert balance.headers["ETag"] == f'"{movement.balance_version}"'
    history = await rest.get(f"/api/v1/accounts/{account_id}/transactions", headers=customer)
    assert [t["transaction_id"] for t in history.json()["transactions"]] == [
        str(movement.transaction_id)
    ]


async def test_a_rest_retry_of_a_grpc_request_replays_it(grpc_bank: GrpcBank) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("100.00")
    movement = await grpc_bank.client(customer).debit(
        account_id, "12.34", "USD", reference_id="order-7"
    )

    retry = await grpc_bank.bank.client.post(
        "/api/v1/transactions/debit",
        json={
            "account_id": str(account_id),
            "amount": "12.34",
            "currency": "USD",
            "reference_id": "order-7",
        },
        headers=customer,
    )

    assert retry.status_code == 200
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json()["transaction_id"] == str(movement.transaction_id)
    assert retry.json()["available_balance"] == "87.66"
    assert await grpc_bank.bank.balance(str(account_id), customer) == Decimal("87.66")


async def test_a_grpc_retry_of_a_rest_request_replays_it(grpc_bank: GrpcBank) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("100.00")
    original = await grpc_bank.bank.client.post(
        "/api/v1/transactions/debit",
        json={"account_id": str(account_id), "amount": "1.50", "currency": "USD"},
        headers={**customer, "Idempotency-Key": "rest-first"},
    )
    assert original.status_code == 200

    retry = await grpc_bank.client(customer).debit(
        account_id, "1.50", "USD", reference_id="rest-first"
    )

    assert retry.replayed is True
    assert str(retry.transaction_id) == original.json()["transaction_id"]
    assert await grpc_bank.bank.balance(str(account_id), customer) == Decimal("98.50")
