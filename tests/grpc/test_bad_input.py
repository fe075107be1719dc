"""Bad input over gRPC: INVALID_ARGUMENT with the stable code (ErrorInfo) and the field
(BadRequest), read with the standard library, and nothing in the ledger changed (balances,
legs, log rows, outbox)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from banking.grpc.gen import (
    accounts_pb2,
    accounts_pb2_grpc,
    transactions_pb2,
    transactions_pb2_grpc,
)
from tests.grpc.conftest import GrpcBank
from tests.grpc.details import rich_error

LONG_REFERENCE = "r" * 256
LONG_DESCRIPTION = "d" * 501


def _debit(**fields: str) -> Callable[[str, str], tuple[str, Any]]:
    def build(account_id: str, other_id: str) -> tuple[str, Any]:
        values = {"account_id": account_id, "amount": "10.00", "currency": "USD"} | fields
        return "DebitAccount", transactions_pb2.DebitRequest(**values)

    return build


def _credit(**fields: str) -> Callable[[str, str], tuple[str, Any]]:
    def build(account_id: str, other_id: str) -> tuple[str, Any]:
        values = {"account_id": account_id, "amount": "10.00", "currency": "USD"} | fields
        return "CreditAccount", transactions_pb2.CreditRequest(**values)

    return build


def _transfer(**fields: str) -> Callable[[str, str], tuple[str, Any]]:
    def build(account_id: str, other_id: str) -> tuple[str, Any]:
        values = {
            "source_account_id": account_id,
            "destination_account_id": other_id,
            "amount": "10.00",
            "currency": "USD",
        } | fields
        if values["destination_account_id"] == "SAME":
            values["destination_account_id"] = account_id
        return "TransferBetweenAccounts", transactions_pb2.TransferRequest(**values)

    return build


CASES: dict[str, tuple[Callable[[str, str], tuple[str, Any]], str]] = {
    "amount not a number": (_debit(amount="ten"), "amount"),
    "amount NaN": (_debit(amount="NaN"), "amount"),
    "amount Infinity": (_debit(amount="Infinity"), "amount"),
    "amount negative": (_debit(amount="-10.00"), "amount"),
    "amount zero": (_debit(amount="0.00"), "amount"),
    "amount with exponent": (_debit(amount="1e3"), "amount"),
    "amount with comma": (_debit(amount="10,00"), "amount"),
    "amount too many decimals": (_debit(amount="10.001"), "amount"),
    "amount too large": (_debit(amount="10000000000000000"), "amount"),
    "amount empty": (_debit(amount=""), "amount"),
    "account_id not a UUID": (_debit(account_id="not-a-uuid"), "account_id"),
    "account_id empty": (_debit(account_id=""), "account_id"),
    "currency empty": (_debit(currency=""), "currency"),
    "currency not a code": (_debit(currency="US"), "currency"),
    "currency unsupported": (_debit(currency="XXX"), "currency"),
    "reference_id too long": (_debit(reference_id=LONG_REFERENCE), "reference_id"),
    "reference_id not printable": (_debit(reference_id="a\nb"), "reference_id"),
    "description too long": (_debit(description=LONG_DESCRIPTION), "description"),
    "credit amount NaN": (_credit(amount="NaN"), "amount"),
    "credit amount negative": (_credit(amount="-1"), "amount"),
    "transfer to itself": (_transfer(destination_account_id="SAME"), "destination_account_id"),
    "transfer destination empty": (_transfer(destination_account_id=""), "destination_account_id"),
    "transfer source not a UUID": (_transfer(source_account_id="123"), "source_account_id"),
    "transfer amount too many decimals": (_transfer(amount="0.005"), "amount"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_bad_movement_is_invalid_argument_and_changes_nothing(
    grpc_bank: GrpcBank, case: str
) -> None:
    staff, _, account_id = await grpc_bank.customer_with_account("100.00")
    other_id = await grpc_bank.bank.account(
        (await grpc_bank.client(staff).get_account(account_id)).customer_id, staff
    )
    build, field = CASES[case]
    method, request = build(str(account_id), other_id)
    stub = transactions_pb2_grpc.TransactionServiceStub(grpc_bank.channel())
    before = await grpc_bank.bank.snapshot()

    call = getattr(stub, method)(request, metadata=(("authorization", staff["Authorization"]),))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call

    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = rich_error(raised.value)
    assert details.info.reason == "VALIDATION_ERROR"
    assert raised.value.details()
    assert details.violations == [(field, raised.value.details())]
    assert await grpc_bank.bank.snapshot() == before


@pytest.mark.parametrize(
    ("method", "request_message", "field"),
    [
        ("CreateAccount", accounts_pb2.CreateAccountRequest(currency=""), "currency"),
        (
            "CreateAccount",
            accounts_pb2.CreateAccountRequest(currency="USD", account_type="gold"),
            "account_type",
        ),
        (
            "CreateAccount",
            accounts_pb2.CreateAccountRequest(currency="USD", customer_id="nope"),
            "customer_id",
        ),
        ("GetAccount", accounts_pb2.GetAccountRequest(account_id=""), "account_id"),
        ("GetBalance", accounts_pb2.GetBalanceRequest(account_id="x"), "account_id"),
        (
            "ListTransactions",
            accounts_pb2.ListTransactionsRequest(account_id="ACCOUNT", created_from="yesterday"),
            "created_from",
        ),
        (
            "ListTransactions",
            accounts_pb2.ListTransactionsRequest(
                account_id="ACCOUNT", created_to="2024-01-01T00:00:00"
            ),
            "created_to",
        ),
    ],
)
async def test_bad_account_request_is_invalid_argument_and_changes_nothing(
    grpc_bank: GrpcBank, method: str, request_message: Any, field: str
) -> None:
    staff, _, account_id = await grpc_bank.customer_with_account("100.00")
    if getattr(request_message, "account_id", None) == "ACCOUNT":
        request_message.account_id = str(account_id)
    stub = accounts_pb2_grpc.AccountServiceStub(grpc_bank.channel())
    before = await grpc_bank.bank.snapshot()

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await getattr(stub, method)(
            request_message, metadata=(("authorization", staff["Authorization"]),)
        )

    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert rich_error(raised.value).violations == [(field, raised.value.details())]
    assert await grpc_bank.bank.snapshot() == before


async def test_get_transaction_with_an_empty_id_is_invalid_argument(grpc_bank: GrpcBank) -> None:
    staff, _, _ = await grpc_bank.customer_with_account(None)
    stub = transactions_pb2_grpc.TransactionServiceStub(grpc_bank.channel())

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetTransaction(
            transactions_pb2.GetTransactionRequest(transaction_id=""),
            metadata=(("authorization", staff["Authorization"]),),
        )

    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == "transaction_id must be a UUID"
    assert rich_error(raised.value).violations == [("transaction_id", raised.value.details())]
