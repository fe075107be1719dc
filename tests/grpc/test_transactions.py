"""TransactionService over a real loopback server: every RPC's success path, idempotency, and
each error's status code, stable code and message."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID, uuid4

import grpc
import pytest

from banking.domain.roles import Role
from banking.grpc.client import BankingClientError
from banking.grpc.gen import transactions_pb2, transactions_pb2_grpc
from tests.grpc.conftest import GrpcBank


async def test_debit_returns_the_leg_and_the_balance_after_it(grpc_bank: GrpcBank) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("100.00")
    client = grpc_bank.client(customer)

    movement = await client.debit(
        account_id, Decimal("30.25"), "USD", description="groceries", reference_id="d-1"
    )

    assert movement.status == "completed"
    assert movement.transaction_type == "debit"
    assert movement.account_id == account_id
    assert movement.amount == Decimal("30.25")
    assert movement.currency == "USD"
    assert movement.available_balance == Decimal("69.75")
    assert movement.balance_version >= 2
    assert movement.reference_id == "d-1"
    assert movement.related_transaction_id is None
    assert movement.replayed is False
    assert (await client.get_balance(account_id)).available_balance == Decimal("69.75")


async def test_amounts_travel_as_exact_decimal_strings(grpc_bank: GrpcBank) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("0.30")
    stub = transactions_pb2_grpc.TransactionServiceStub(grpc_bank.channel())

    response = await stub.DebitAccount(
        transactions_pb2.DebitRequest(account_id=str(account_id), amount="0.1", currency="USD"),
        metadata=(("authorization", customer["Authorization"]),),
    )

    assert response.amount == "0.10"
    assert response.available_balance == "0.20"


async def test_credit_by_a_teller(grpc_bank: GrpcBank) -> None:
    staff, customer, account_id = await grpc_bank.customer_with_account(None)

    movement = await grpc_bank.client(staff).credit(account_id, "250.00", "usd")

    assert movement.transaction_type == "credit"
    assert movement.currency == "USD"
    assert movement.available_balance == Decimal("250.00")
    assert (await grpc_bank.client(customer).get_balance(account_id)).current_balance == Decimal(
        "250.00"
    )


async def test_transfer_moves_money_and_links_the_two_legs(grpc_bank: GrpcBank) -> None:
    staff, customer, source = await grpc_bank.customer_with_account("100.00")
    customer_id = (await grpc_bank.client(customer).get_account(source)).customer_id
    destination = UUID(await grpc_bank.bank.account(customer_id, staff))
    client = grpc_bank.client(customer)

    movement = await client.transfer(source, destination, Decimal("40.00"), "USD")

    assert movement.transaction_type == "transfer_out"
    assert movement.available_balance == Decimal("60.00")
    assert movement.related_transaction_id is not None
    incoming = await client.get_transaction(movement.related_transaction_id)
    assert incoming.transaction_type == "transfer_in"
    assert incoming.account_id == destination
    assert incoming.related_transaction_id == movement.transaction_id
    assert (await client.get_balance(destination)).available_balance == Decimal("40.00")


async def test_get_transaction_returns_the_stored_leg(grpc_bank: GrpcBank) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("100.00")
    client = grpc_bank.client(customer)
    movement = await client.debit(account_id, "5.00", "USD", description="coffee")

    leg = await client.get_transaction(movement.transaction_id)

    assert leg.transaction_id == movement.transaction_id
    assert leg.account_id == account_id
    assert leg.amount == Decimal("5.00")
    assert leg.description == "coffee"
    assert leg.status == "completed"
    assert leg.failure_code == ""
    assert leg.created_at == movement.timestamp


async def test_same_reference_same_parameters_replays_the_original(grpc_bank: GrpcBank) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("100.00")
    client = grpc_bank.client(customer)

    first = await client.debit(account_id, "10.00", "USD", reference_id="retry-me")
    second = await client.debit(account_id, "10.00", "USD", reference_id="retry-me")

    assert second.replayed is True
    assert second.transaction_id == first.transaction_id
    assert second.available_balance == first.available_balance
    assert (await client.get_balance(account_id)).available_balance == Decimal("90.00")


async def test_same_reference_different_parameters_is_already_exists(grpc_bank: GrpcBank) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("100.00")
    client = grpc_bank.client(customer)
    first = await client.debit(account_id, "10.00", "USD", reference_id="key-1")

    with pytest.raises(BankingClientError) as raised:
        await client.debit(account_id, "11.00", "USD", reference_id="key-1")

    assert raised.value.status is grpc.StatusCode.ALREADY_EXISTS
    assert raised.value.code == "IDEMPOTENCY_CONFLICT"
    assert raised.value.message == (
        "reference_id was already used with different parameters: amount differs"
    )
    assert raised.value.transaction_id == first.transaction_id
    assert (await client.get_balance(account_id)).available_balance == Decimal("90.00")


async def test_insufficient_funds_is_failed_precondition_with_the_failed_leg(
    grpc_bank: GrpcBank,
) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("5.00")
    client = grpc_bank.client(customer)

    with pytest.raises(BankingClientError) as raised:
        await client.debit(account_id, "5.01", "USD", reference_id="too-much")

    error = raised.value
    assert error.status is grpc.StatusCode.FAILED_PRECONDITION
    assert error.code == "INSUFFICIENT_FUNDS"
    assert error.message == "insufficient funds"
    assert error.transaction_id is not None
    failed = await client.get_transaction(error.transaction_id)
    assert failed.status == "failed"
    assert failed.failure_code == "INSUFFICIENT_FUNDS"
    assert (await client.get_balance(account_id)).available_balance == Decimal("5.00")

    with pytest.raises(BankingClientError) as replayed:
        await client.debit(account_id, "5.01", "USD", reference_id="too-much")
    assert replayed.value.status is grpc.StatusCode.FAILED_PRECONDITION
    assert replayed.value.transaction_id == error.transaction_id
    assert replayed.value.replayed is True


async def test_currency_mismatch_is_failed_precondition(grpc_bank: GrpcBank) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("100.00")

    with pytest.raises(BankingClientError) as raised:
        await grpc_bank.client(customer).debit(account_id, "1.00", "EUR")

    assert raised.value.status is grpc.StatusCode.FAILED_PRECONDITION
    assert raised.value.code == "CURRENCY_MISMATCH"
    assert raised.value.message == "account holds USD, request is in EUR"


async def test_inactive_account_is_failed_precondition(grpc_bank: GrpcBank) -> None:
    staff, customer, account_id = await grpc_bank.customer_with_account("100.00")
    frozen = await grpc_bank.bank.client.patch(
        f"/api/v1/accounts/{account_id}", json={"is_active": False}, headers=staff
    )
    assert frozen.status_code == 200

    with pytest.raises(BankingClientError) as raised:
        await grpc_bank.client(customer).debit(account_id, "1.00", "USD")

    assert raised.value.status is grpc.StatusCode.FAILED_PRECONDITION
    assert raised.value.code == "ACCOUNT_INACTIVE"
    assert raised.value.transaction_id is not None
    assert "is not active" in raised.value.message


async def test_unknown_transaction_is_not_found(grpc_bank: GrpcBank) -> None:
    _, customer, _ = await grpc_bank.customer_with_account(None)

    with pytest.raises(BankingClientError) as raised:
        await grpc_bank.client(customer).get_transaction(uuid4())

    assert raised.value.status is grpc.StatusCode.NOT_FOUND
    assert raised.value.code == "TRANSACTION_NOT_FOUND"
    assert raised.value.message == "transaction not found"


async def test_unknown_destination_is_not_found(grpc_bank: GrpcBank) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("100.00")

    with pytest.raises(BankingClientError) as raised:
        await grpc_bank.client(customer).transfer(account_id, uuid4(), "1.00", "USD")

    assert raised.value.status is grpc.StatusCode.NOT_FOUND
    assert raised.value.code == "ACCOUNT_NOT_FOUND"
    assert raised.value.message == "destination account not found"


async def test_a_customer_cannot_credit_permission_denied(grpc_bank: GrpcBank) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account(None)

    with pytest.raises(BankingClientError) as raised:
        await grpc_bank.client(customer).credit(account_id, "1000.00", "USD")

    assert raised.value.status is grpc.StatusCode.PERMISSION_DENIED
    assert raised.value.code == "FORBIDDEN"
    assert raised.value.message == "crediting an account needs the teller or admin role"


async def test_an_auditor_reads_but_cannot_debit(grpc_bank: GrpcBank) -> None:
    _, _, account_id = await grpc_bank.customer_with_account("100.00")
    _, auditor = await grpc_bank.bank.user(Role.AUDITOR)
    client = grpc_bank.client(auditor)

    assert (await client.get_balance(account_id)).available_balance == Decimal("100.00")
    with pytest.raises(BankingClientError) as raised:
        await client.debit(account_id, "1.00", "USD")

    assert raised.value.status is grpc.StatusCode.PERMISSION_DENIED
    assert raised.value.message == "role auditor cannot move money"
