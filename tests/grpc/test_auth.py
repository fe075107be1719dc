"""Authentication and authorization over gRPC: bearer tokens as REST, another customer's
account is not found, health and reflection are public, request ids are echoed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import grpc
import jwt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from banking.domain.roles import Role
from banking.grpc.client import BankingClient, BankingClientError
from banking.grpc.gen import accounts_pb2, accounts_pb2_grpc
from tests.grpc.conftest import GrpcBank, bearer


def _claims(user_id: UUID, **overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "username": "someone",
        "role": "customer",
        "aud": "banking-api",
        "iss": "banking-api",
        "iat": now,
        "exp": now + timedelta(minutes=5),
    }
    return claims | overrides


async def _balance_status(grpc_bank: GrpcBank, token: str | None, account_id: UUID) -> Any:
    client = BankingClient(grpc_bank.target, token)
    try:
        with pytest.raises(BankingClientError) as raised:
            await client.get_balance(account_id)
    finally:
        await client.close()
    return raised.value


async def test_missing_token_is_unauthenticated(grpc_bank: GrpcBank) -> None:
    _, _, account_id = await grpc_bank.customer_with_account("10.00")

    error = await _balance_status(grpc_bank, None, account_id)

    assert error.status is grpc.StatusCode.UNAUTHENTICATED
    assert error.code == "UNAUTHENTICATED"
    assert error.message == "missing bearer token"


async def test_tampered_token_is_unauthenticated(grpc_bank: GrpcBank) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("10.00")
    header, payload, signature = bearer(customer).split(".")
    forged_signature = ("A" if signature[0] != "A" else "B") + signature[1:]

    error = await _balance_status(grpc_bank, f"{header}.{payload}.{forged_signature}", account_id)

    assert error.status is grpc.StatusCode.UNAUTHENTICATED
    assert error.message == "token is not valid"


async def test_token_signed_with_another_secret_is_unauthenticated(grpc_bank: GrpcBank) -> None:
    customer_id, _ = await grpc_bank.bank.user(Role.CUSTOMER)
    forged = jwt.encode(_claims(customer_id), "another-secret-that-is-long-enough-000", "HS256")

    error = await _balance_status(grpc_bank, forged, uuid4())

    assert error.status is grpc.StatusCode.UNAUTHENTICATED
    assert error.message == "token is not valid"


async def test_expired_token_is_unauthenticated(grpc_bank: GrpcBank) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("10.00")
    customer_id = UUID(jwt.decode(bearer(customer), options={"verify_signature": False})["sub"])
    secret = grpc_bank.bank.container.settings.jwt_signing_secret()
    past = datetime.now(UTC) - timedelta(hours=1)
    expired = jwt.encode(
        _claims(customer_id, iat=past, exp=past + timedelta(minutes=5)), secret, "HS256"
    )

    error = await _balance_status(grpc_bank, expired, account_id)

    assert error.status is grpc.StatusCode.UNAUTHENTICATED
    assert error.message == "token has expired"


async def test_a_scheme_other_than_bearer_is_unauthenticated(grpc_bank: GrpcBank) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("10.00")
    stub = accounts_pb2_grpc.AccountServiceStub(grpc_bank.channel())

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetBalance(
            accounts_pb2.GetBalanceRequest(account_id=str(account_id)),
            metadata=(("authorization", f"Basic {bearer(customer)}"),),
        )

    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_another_customers_account_is_not_found_everywhere(grpc_bank: GrpcBank) -> None:
    _, owner, account_id = await grpc_bank.customer_with_account("100.00")
    leg = await grpc_bank.client(owner).debit(account_id, "1.00", "USD")
    _, stranger_headers = await grpc_bank.bank.user(Role.CUSTOMER)
    stranger = grpc_bank.client(stranger_headers)

    calls = [
        stranger.get_account(account_id),
        stranger.get_balance(account_id),
        stranger.list_transactions(account_id),
        stranger.debit(account_id, "1.00", "USD"),
        stranger.transfer(account_id, uuid4(), "1.00", "USD"),
        stranger.get_transaction(leg.transaction_id),
    ]
    for call in calls:
        with pytest.raises(BankingClientError) as raised:
            await call
        assert raised.value.status is grpc.StatusCode.NOT_FOUND
        assert raised.value.code in ("ACCOUNT_NOT_FOUND", "TRANSACTION_NOT_FOUND")

    balance = await grpc_bank.client(owner).get_balance(account_id)
    assert str(balance.available_balance) == "99.00"


async def test_health_answers_without_a_token(grpc_bank: GrpcBank) -> None:
    stub = health_pb2_grpc.HealthStub(grpc_bank.channel())

    for service in ("", "banking.v1.TransactionService", "banking.v1.AccountService"):
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_answers_without_a_token(grpc_bank: GrpcBank) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(grpc_bank.channel())
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="banking.v1.TransactionService"
        ),
    ]

    responses = [response async for response in stub.ServerReflectionInfo(iter(requests))]

    services = {s.name for s in responses[0].list_services_response.service}
    assert {"banking.v1.TransactionService", "banking.v1.AccountService"} <= services
    assert "grpc.health.v1.Health" in services
    descriptors = responses[1].file_descriptor_response.file_descriptor_proto
    assert any(b"banking/v1/transactions.proto" in proto for proto in descriptors)


async def test_request_and_trace_ids_are_kept_or_made_and_echoed(grpc_bank: GrpcBank) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("10.00")
    stub = accounts_pb2_grpc.AccountServiceStub(grpc_bank.channel())
    request = accounts_pb2.GetBalanceRequest(account_id=str(account_id))
    auth = ("authorization", customer["Authorization"])

    kept = stub.GetBalance(request, metadata=(auth, ("x-request-id", "req-42")))
    await kept
    made = stub.GetBalance(request, metadata=(auth, ("x-request-id", "bad id with spaces")))
    await made

    kept_metadata = dict(await kept.initial_metadata())
    made_metadata = dict(await made.initial_metadata())
    assert kept_metadata["x-request-id"] == "req-42"
    assert len(kept_metadata["x-trace-id"]) == 32
    assert made_metadata["x-request-id"] != "bad id with spaces"
    assert len(made_metadata["x-request-id"]) == 32


async def test_a_failed_call_still_echoes_its_ids(grpc_bank: GrpcBank) -> None:
    stub = accounts_pb2_grpc.AccountServiceStub(grpc_bank.channel())
    call = stub.GetBalance(
        accounts_pb2.GetBalanceRequest(account_id=str(uuid4())),
        metadata=(("x-request-id", "req-unauth"), ("x-trace-id", "trace-1")),
    )

    with pytest.raises(grpc.aio.AioRpcError):
        await call

    metadata = dict(await call.initial_metadata())
    assert metadata["x-request-id"] == "req-unauth"
    assert metadata["x-trace-id"] == "trace-1"
