"""Failed calls carry the standard rich error model, read here with the standard library only
(``grpc_status.rpc_status.from_call`` and ``google.rpc.error_details_pb2``, see
``tests/grpc/details.py``): a ``google.rpc.Status`` in ``grpc-status-details-bin`` with
``ErrorInfo`` (reason = the stable code), ``BadRequest`` for a bad field, ``RetryInfo`` when a
retry later can succeed, ``RequestInfo``; and a refused call changed nothing."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from uuid import UUID, uuid4

import grpc
import pytest

from banking.grpc.client import BankingClientError
from banking.grpc.gen import (
    accounts_pb2,
    accounts_pb2_grpc,
    transactions_pb2,
    transactions_pb2_grpc,
)
from tests.grpc.conftest import GrpcBank, grpc_bank_with
from tests.grpc.details import rich_error

DOMAIN = "banking.v1"


def _auth(headers: dict[str, str] | None, request_id: str | None = None) -> tuple:
    metadata = [("authorization", headers["Authorization"])] if headers else []
    if request_id:
        metadata.append(("x-request-id", request_id))
    return tuple(metadata)


async def test_a_decline_is_failed_precondition_with_error_info_naming_the_failed_leg(
    grpc_bank: GrpcBank,
) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("10.00")
    stub = transactions_pb2_grpc.TransactionServiceStub(grpc_bank.channel())
    balances_before = (await grpc_bank.bank.snapshot())["balances"]

    call = stub.DebitAccount(
        transactions_pb2.DebitRequest(account_id=str(account_id), amount="25.00", currency="USD"),
        metadata=_auth(customer, request_id="req-decline-1"),
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call

    assert raised.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    details = rich_error(raised.value)
    assert details.status.message == "insufficient funds"
    assert details.info.reason == "INSUFFICIENT_FUNDS"
    assert details.info.domain == DOMAIN
    trace_id = dict(await call.initial_metadata())["x-trace-id"]
    assert dict(details.info.metadata) == {
        "transaction_id": details.info.metadata["transaction_id"],
        "request_id": "req-decline-1",
        "trace_id": trace_id,
    }
    assert details.request is not None and details.request.request_id == "req-decline-1"
    assert details.bad_request is None and details.retry is None  # a retry would decline again
    # The id names the failed leg kept for the audit trail; no money moved.
    leg = await grpc_bank.client(customer).get_transaction(details.info.metadata["transaction_id"])
    assert (leg.status, leg.failure_code, leg.amount) == (
        "failed",
        "INSUFFICIENT_FUNDS",
        Decimal("25.00"),
    )
    assert (await grpc_bank.bank.snapshot())["balances"] == balances_before
    assert (await grpc_bank.client(customer).get_balance(account_id)).available_balance == Decimal(
        "10.00"
    )


async def test_a_replayed_decline_says_so_in_its_error_info(grpc_bank: GrpcBank) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("10.00")
    stub = transactions_pb2_grpc.TransactionServiceStub(grpc_bank.channel())
    request = transactions_pb2.DebitRequest(
        account_id=str(account_id), amount="25.00", currency="USD", reference_id="too-much"
    )
    infos = []
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.DebitAccount(request, metadata=_auth(customer))
        infos.append(rich_error(raised.value).info)

    assert "idempotent_replayed" not in infos[0].metadata
    assert infos[1].metadata["idempotent_replayed"] == "true"
    assert infos[1].metadata["transaction_id"] == infos[0].metadata["transaction_id"]
    assert infos[1].reason == "INSUFFICIENT_FUNDS"


@pytest.mark.parametrize(
    ("amount", "currency", "field"),
    [("ten", "USD", "amount"), ("10.00", "US", "currency"), ("10.001", "USD", "amount")],
)
async def test_a_validation_error_is_invalid_argument_with_bad_request_naming_the_field(
    grpc_bank: GrpcBank, amount: str, currency: str, field: str
) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("100.00")
    stub = transactions_pb2_grpc.TransactionServiceStub(grpc_bank.channel())
    before = await grpc_bank.bank.snapshot()

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.DebitAccount(
            transactions_pb2.DebitRequest(
                account_id=str(account_id), amount=amount, currency=currency
            ),
            metadata=_auth(customer),
        )

    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = rich_error(raised.value)
    assert details.info.reason == "VALIDATION_ERROR"
    assert details.info.domain == DOMAIN
    assert details.violations == [(field, raised.value.details())]
    assert field in raised.value.details()
    assert details.retry is None
    assert "transaction_id" not in details.info.metadata
    assert await grpc_bank.bank.snapshot() == before


async def test_past_the_rate_limit_a_call_is_resource_exhausted_with_retry_info(
    database_url: str,
) -> None:
    async with grpc_bank_with(database_url, rate_limit_default="3/minute") as running:
        _, customer, account_id = await running.customer_with_account("100.00")
        client = running.client(customer)
        for _ in range(3):
            assert (await client.get_balance(account_id)).available_balance == Decimal("100.00")
        before = await running.bank.snapshot()
        stub = transactions_pb2_grpc.TransactionServiceStub(running.channel())

        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.DebitAccount(
                transactions_pb2.DebitRequest(
                    account_id=str(account_id), amount="1.00", currency="USD"
                ),
                metadata=_auth(customer),
            )
        with pytest.raises(BankingClientError) as through_client:
            await client.debit(account_id, "1.00", "USD")

        assert await running.bank.snapshot() == before

    assert raised.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    details = rich_error(raised.value)
    assert details.info.reason == "RATE_LIMITED"
    assert details.retry is not None
    assert 1 <= details.retry.retry_delay.seconds <= 60
    assert details.bad_request is None
    assert through_client.value.status is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert through_client.value.code == "RATE_LIMITED"
    assert through_client.value.retry_delay is not None
    assert timedelta(seconds=1) <= through_client.value.retry_delay <= timedelta(seconds=60)


async def test_a_busy_account_is_unavailable_with_retry_info_and_the_retry_succeeds(
    database_url: str,
) -> None:
    async with grpc_bank_with(
        database_url, account_locks="memory", account_lock_wait_seconds=0.2
    ) as running:
        _, customer, account_id = await running.customer_with_account("100.00")
        locks = running.bank.container.cache.account_locks
        assert locks is not None
        client = running.client(customer)
        before = await running.bank.snapshot()

        async with locks.hold([account_id]):  # another request holds the account
            with pytest.raises(BankingClientError) as raised:
                await client.debit(account_id, "30.00", "USD", reference_id="busy-1")
            assert await running.bank.snapshot() == before

        assert raised.value.retry_delay is not None
        # The lock is free again: the same request (same reference_id) now goes through.
        retried = await client.debit(account_id, "30.00", "USD", reference_id="busy-1")

    assert raised.value.status is grpc.StatusCode.UNAVAILABLE
    assert raised.value.code == "ACCOUNT_BUSY"
    assert raised.value.retry_delay == timedelta(seconds=1)
    assert raised.value.details is not None
    assert retried.available_balance == Decimal("70.00")
    assert retried.replayed is False


async def test_an_unknown_account_is_not_found_and_nothing_moves(grpc_bank: GrpcBank) -> None:
    staff, _, _ = await grpc_bank.customer_with_account("100.00")
    stub = transactions_pb2_grpc.TransactionServiceStub(grpc_bank.channel())
    accounts = accounts_pb2_grpc.AccountServiceStub(grpc_bank.channel())
    before = await grpc_bank.bank.snapshot()

    with pytest.raises(grpc.aio.AioRpcError) as credited:
        await stub.CreditAccount(
            transactions_pb2.CreditRequest(account_id=str(uuid4()), amount="5.00", currency="USD"),
            metadata=_auth(staff),
        )
    with pytest.raises(grpc.aio.AioRpcError) as looked_up:
        await accounts.GetBalance(
            accounts_pb2.GetBalanceRequest(account_id=str(uuid4())), metadata=_auth(staff)
        )

    for raised in (credited, looked_up):
        assert raised.value.code() is grpc.StatusCode.NOT_FOUND
        details = rich_error(raised.value)
        assert details.info.reason == "ACCOUNT_NOT_FOUND"
        assert details.info.domain == DOMAIN
        assert "transaction_id" not in details.info.metadata
        assert details.bad_request is None and details.retry is None
    assert await grpc_bank.bank.snapshot() == before


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-jwt", "Basic dXNlcjpwYXNz"])
async def test_without_a_valid_token_a_call_is_unauthenticated_and_nothing_moves(
    grpc_bank: GrpcBank, authorization: str | None
) -> None:
    _, _, account_id = await grpc_bank.customer_with_account("100.00")
    stub = transactions_pb2_grpc.TransactionServiceStub(grpc_bank.channel())
    before = await grpc_bank.bank.snapshot()

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.DebitAccount(
            transactions_pb2.DebitRequest(
                account_id=str(account_id), amount="1.00", currency="USD"
            ),
            metadata=_auth({"Authorization": authorization} if authorization else None),
        )

    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED
    details = rich_error(raised.value)
    assert details.info.reason == "UNAUTHENTICATED"
    assert details.info.domain == DOMAIN
    assert details.info.metadata["request_id"]
    assert details.bad_request is None and details.retry is None
    assert await grpc_bank.bank.snapshot() == before


async def test_a_forbidden_credit_is_permission_denied_with_its_reason(
    grpc_bank: GrpcBank,
) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("100.00")
    stub = transactions_pb2_grpc.TransactionServiceStub(grpc_bank.channel())
    before = await grpc_bank.bank.snapshot()

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CreditAccount(
            transactions_pb2.CreditRequest(
                account_id=str(account_id), amount="1000.00", currency="USD"
            ),
            metadata=_auth(customer),
        )

    assert raised.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert rich_error(raised.value).info.reason == "FORBIDDEN"
    assert await grpc_bank.bank.snapshot() == before


async def test_the_client_reads_the_rich_details(grpc_bank: GrpcBank) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("10.00")
    client = grpc_bank.client(customer)

    with pytest.raises(BankingClientError) as declined:
        await client.debit(account_id, "25.00", "USD")
    with pytest.raises(BankingClientError) as invalid:
        await client.transfer(account_id, account_id, "1.00", "USD")

    error = declined.value
    assert (error.status, error.code) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    assert isinstance(error.transaction_id, UUID)
    assert error.request_id and error.trace_id and error.retry_delay is None
    assert error.details is not None and error.details.message == "insufficient funds"
    assert (invalid.value.code, invalid.value.field) == (
        "VALIDATION_ERROR",
        "destination_account_id",
    )
    assert (await client.get_balance(account_id)).available_balance == Decimal("10.00")


async def test_the_deprecated_trailing_keys_are_still_sent_alongside(grpc_bank: GrpcBank) -> None:
    """Kept for one version for clients that read them (README, gRPC section)."""
    _, customer, account_id = await grpc_bank.customer_with_account("10.00")
    stub = transactions_pb2_grpc.TransactionServiceStub(grpc_bank.channel())

    with pytest.raises(grpc.aio.AioRpcError) as declined:
        await stub.DebitAccount(
            transactions_pb2.DebitRequest(
                account_id=str(account_id), amount="25.00", currency="USD"
            ),
            metadata=_auth(customer),
        )
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await stub.DebitAccount(
            transactions_pb2.DebitRequest(account_id=str(account_id), amount="x", currency="USD"),
            metadata=_auth(customer),
        )

    trailing = dict(declined.value.trailing_metadata() or ())
    assert trailing["error-code"] == "INSUFFICIENT_FUNDS"
    assert trailing["transaction-id"] == rich_error(declined.value).info.metadata["transaction_id"]
    invalid_trailing = dict(invalid.value.trailing_metadata() or ())
    assert (invalid_trailing["error-code"], invalid_trailing["error-field"]) == (
        "VALIDATION_ERROR",
        "amount",
    )
