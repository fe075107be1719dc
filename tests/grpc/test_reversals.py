"""TransactionService.ReverseTransaction over a real loopback server, on SQLite and
PostgreSQL: the same core and rules as REST (the reversal, the cap, who may, idempotency), and
GetTransaction shows what was reversed."""

from __future__ import annotations

from decimal import Decimal

import grpc
import pytest

from banking.domain.roles import Role
from banking.grpc.client import BankingClientError
from banking.grpc.gen import transactions_pb2, transactions_pb2_grpc
from tests.grpc.conftest import GrpcBank

REASON = "duplicate charge"


async def test_a_teller_reverses_a_debit_and_get_transaction_shows_it(
    grpc_bank: GrpcBank,
) -> None:
    staff, customer, account_id = await grpc_bank.customer_with_account("100.00")
    owner, teller = grpc_bank.client(customer), grpc_bank.client(staff)
    debit = await owner.debit(account_id, "30.00", "USD")

    reversal = await teller.reverse(debit.transaction_id, reason=REASON, amount="12.50")
    again = await teller.reverse(debit.transaction_id, reason=REASON, reference_id="r-1")
    replay = await teller.reverse(debit.transaction_id, reason=REASON, reference_id="r-1")

    assert reversal.transaction_type == "credit"
    assert (reversal.amount, reversal.available_balance) == (Decimal("12.50"), Decimal("82.50"))
    assert again.amount == Decimal("17.50") and again.replayed is False
    assert replay.replayed is True and replay.transaction_id == again.transaction_id
    assert (await owner.get_balance(account_id)).available_balance == Decimal("100.00")
    stub = transactions_pb2_grpc.TransactionServiceStub(grpc_bank.channel())
    shown = await stub.GetTransaction(
        transactions_pb2.GetTransactionRequest(transaction_id=str(debit.transaction_id)),
        metadata=(("authorization", customer["Authorization"]),),
    )
    assert shown.reversed_amount == "30.00"
    assert list(shown.reversal_ids) == [str(reversal.transaction_id), str(again.transaction_id)]
    leg = await stub.GetTransaction(
        transactions_pb2.GetTransactionRequest(transaction_id=str(reversal.transaction_id)),
        metadata=(("authorization", customer["Authorization"]),),
    )
    assert leg.reverses_transaction_id == str(debit.transaction_id)
    assert (leg.reversed_amount, list(leg.reversal_ids)) == ("0.00", [])


async def test_a_customer_refunds_a_transfer_received(grpc_bank: GrpcBank) -> None:
    staff, payer, source = await grpc_bank.customer_with_account("50.00")
    payee_id, payee = await grpc_bank.bank.user(Role.CUSTOMER)
    destination = await grpc_bank.bank.account(payee_id, staff)
    sent = await grpc_bank.client(payer).transfer(source, destination, "20.00", "USD")
    assert sent.related_transaction_id is not None

    refund = await grpc_bank.client(payee).reverse(sent.related_transaction_id, reason=REASON)

    assert refund.transaction_type == "transfer_out"
    assert refund.amount == Decimal("20.00")
    assert (await grpc_bank.client(payer).get_balance(source)).available_balance == Decimal("50.00")


@pytest.mark.parametrize(
    ("who", "status", "code"),
    [
        ("owner", grpc.StatusCode.PERMISSION_DENIED, "FORBIDDEN"),
        ("other", grpc.StatusCode.NOT_FOUND, "TRANSACTION_NOT_FOUND"),
        ("auditor", grpc.StatusCode.PERMISSION_DENIED, "FORBIDDEN"),
    ],
)
async def test_who_may_not_reverse_changes_nothing(
    grpc_bank: GrpcBank, who: str, status: grpc.StatusCode, code: str
) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("100.00")
    debit = await grpc_bank.client(customer).debit(account_id, "10.00", "USD")
    _, other = await grpc_bank.bank.user(Role.CUSTOMER)
    _, auditor = await grpc_bank.bank.user(Role.AUDITOR)
    headers = {"owner": customer, "other": other, "auditor": auditor}[who]
    before = await grpc_bank.bank.snapshot()

    with pytest.raises(BankingClientError) as raised:
        await grpc_bank.client(headers).reverse(debit.transaction_id, reason=REASON)

    assert (raised.value.status, raised.value.code) == (status, code)
    assert await grpc_bank.bank.snapshot() == before


@pytest.mark.parametrize(
    ("amount", "reason", "field"),
    [
        ("abc", REASON, "amount"),
        ("-1", REASON, "amount"),
        ("10.01", REASON, "amount"),
        ("1.001", REASON, "amount"),
        ("", "", "reason"),
        ("", "x" * 501, "reason"),
    ],
)
async def test_bad_input_is_invalid_argument_and_changes_nothing(
    grpc_bank: GrpcBank, amount: str, reason: str, field: str
) -> None:
    staff, customer, account_id = await grpc_bank.customer_with_account("100.00")
    debit = await grpc_bank.client(customer).debit(account_id, "10.00", "USD")
    before = await grpc_bank.bank.snapshot()

    with pytest.raises(BankingClientError) as raised:
        await grpc_bank.client(staff).reverse(
            debit.transaction_id, reason=reason, amount=amount or None
        )

    assert raised.value.status is grpc.StatusCode.INVALID_ARGUMENT
    assert (raised.value.code, raised.value.field) == ("VALIDATION_ERROR", field)
    assert await grpc_bank.bank.snapshot() == before


async def test_a_failed_or_reversal_leg_is_failed_precondition(grpc_bank: GrpcBank) -> None:
    staff, customer, account_id = await grpc_bank.customer_with_account("100.00")
    debit = await grpc_bank.client(customer).debit(account_id, "10.00", "USD")
    teller = grpc_bank.client(staff)
    reversal = await teller.reverse(debit.transaction_id, reason=REASON)
    before = await grpc_bank.bank.snapshot()

    with pytest.raises(BankingClientError) as raised:
        await teller.reverse(reversal.transaction_id, reason=REASON)

    assert raised.value.status is grpc.StatusCode.FAILED_PRECONDITION
    assert raised.value.code == "TRANSACTION_NOT_REVERSIBLE"
    assert await grpc_bank.bank.snapshot() == before
