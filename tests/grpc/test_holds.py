"""Holds over gRPC (``banking.v1.HoldService``) on SQLite and PostgreSQL: the same core and
rules as REST; errors as status codes with the stable code; nothing changed by a refusal."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

import grpc
import pytest

from banking.domain.roles import Role
from banking.grpc.client import BankingClientError
from banking.grpc.gen import holds_pb2, holds_pb2_grpc
from banking.ledger.reconcile import reconcile
from tests.grpc.conftest import GrpcBank, bearer
from tests.grpc.details import rich_error
from tests.rest.test_holds import everything


def stub(grpc_bank: GrpcBank) -> holds_pb2_grpc.HoldServiceStub:
    return holds_pb2_grpc.HoldServiceStub(grpc_bank.channel())


def auth(headers: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {bearer(headers)}"),)


async def test_authorize_capture_in_parts_void_and_read(grpc_bank: GrpcBank) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("100.00")
    holds, metadata = stub(grpc_bank), auth(customer)

    held = await holds.AuthorizeHold(
        holds_pb2.AuthorizeHoldRequest(
            account_id=str(account_id), amount="30.00", currency="USD", reference_id="g-1"
        ),
        metadata=metadata,
    )
    captured = await holds.CaptureHold(
        holds_pb2.CaptureHoldRequest(hold_id=held.hold_id, amount="10.00"), metadata=metadata
    )
    voided = await holds.VoidHold(
        holds_pb2.VoidHoldRequest(hold_id=held.hold_id), metadata=metadata
    )
    read = await holds.GetHold(holds_pb2.GetHoldRequest(hold_id=held.hold_id), metadata=metadata)
    listed = await holds.ListHolds(
        holds_pb2.ListHoldsRequest(account_id=str(account_id)), metadata=metadata
    )

    assert (held.status, held.amount, held.captured_amount) == ("open", "30.00", "0.00")
    assert (captured.hold.captured_amount, captured.capture.amount) == ("10.00", "10.00")
    assert (captured.capture.transaction_type, captured.capture.hold_id) == ("debit", held.hold_id)
    assert captured.capture.available_balance == "70.00"
    assert (voided.status, read.status) == ("voided", "voided")
    assert [hold.hold_id for hold in listed.holds] == [held.hold_id]
    balance = await grpc_bank.client(customer).get_balance(account_id)
    assert (balance.current_balance, balance.available_balance) == (Decimal("90.00"),) * 2
    report = await reconcile(grpc_bank.bank.container.unit_of_work)
    assert report.clean, report.problems


async def test_a_replayed_authorization_says_so_in_the_trailers(grpc_bank: GrpcBank) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("100.00")
    holds, metadata = stub(grpc_bank), auth(customer)
    asked = holds_pb2.AuthorizeHoldRequest(
        account_id=str(account_id), amount="5", currency="USD", reference_id="same"
    )

    first = await holds.AuthorizeHold(asked, metadata=metadata)
    call = holds.AuthorizeHold(asked, metadata=metadata)
    again = await call

    assert again == first
    assert ("idempotent-replayed", "true") in tuple(await call.trailing_metadata())


@pytest.mark.parametrize(
    ("request_fields", "status", "code"),
    [
        ({"amount": "abc"}, grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_ERROR"),
        ({"amount": "500.00"}, grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS"),
        ({"expires_at": "yesterday"}, grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_ERROR"),
        (
            {"expires_at": "2020-01-01T00:00:00+00:00"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "VALIDATION_ERROR",
        ),
        ({"currency": "EUR"}, grpc.StatusCode.FAILED_PRECONDITION, "CURRENCY_MISMATCH"),
    ],
)
async def test_a_bad_authorization_is_refused_and_changes_nothing(
    grpc_bank: GrpcBank, request_fields: dict[str, str], status: grpc.StatusCode, code: str
) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("100.00")
    before = await everything(grpc_bank.bank)
    fields = {"account_id": str(account_id), "amount": "10", "currency": "USD", **request_fields}

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub(grpc_bank).AuthorizeHold(
            holds_pb2.AuthorizeHoldRequest(**fields), metadata=auth(customer)
        )

    assert raised.value.code() is status
    assert rich_error(raised.value).info.reason == code
    assert await everything(grpc_bank.bank) == before


async def test_capture_errors_and_another_customers_hold(grpc_bank: GrpcBank) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("100.00")
    _, stranger = await grpc_bank.bank.user(Role.CUSTOMER)
    holds = stub(grpc_bank)
    held = await holds.AuthorizeHold(
        holds_pb2.AuthorizeHoldRequest(account_id=str(account_id), amount="30", currency="USD"),
        metadata=auth(customer),
    )
    before = await everything(grpc_bank.bank)

    cases = [
        (auth(stranger), "10", grpc.StatusCode.NOT_FOUND, "HOLD_NOT_FOUND"),
        (auth(customer), "30.01", grpc.StatusCode.FAILED_PRECONDITION, "HOLD_AMOUNT_EXCEEDED"),
        (auth(customer), "-1", grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_ERROR"),
    ]
    for metadata, amount, status, code in cases:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await holds.CaptureHold(
                holds_pb2.CaptureHoldRequest(hold_id=held.hold_id, amount=amount),
                metadata=metadata,
            )
        assert (raised.value.code(), rich_error(raised.value).info.reason) == (status, code)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await holds.GetHold(holds_pb2.GetHoldRequest(hold_id=held.hold_id), metadata=auth(stranger))
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND

    assert await everything(grpc_bank.bank) == before
    await holds.CaptureHold(
        holds_pb2.CaptureHoldRequest(hold_id=held.hold_id), metadata=auth(customer)
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await holds.VoidHold(
            holds_pb2.VoidHoldRequest(hold_id=held.hold_id), metadata=auth(customer)
        )
    assert (raised.value.code(), rich_error(raised.value).info.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "HOLD_NOT_OPEN",
    )


async def test_the_python_client_authorizes_captures_lists_and_voids(
    grpc_bank: GrpcBank,
) -> None:
    """``BankingClient``'s hold calls: typed results (exact decimals, times, the replay flag),
    and a refusal as ``BankingClientError`` with the stable code, nothing changed."""
    staff, customer, account_id = await grpc_bank.customer_with_account("100.00")
    other_id, _ = await grpc_bank.bank.user(Role.CUSTOMER)
    destination = await grpc_bank.bank.account(other_id, staff, funded=None)
    client = grpc_bank.client(customer)

    first = await client.authorize_hold(account_id, "30.00", "USD", reference_id="py-1")
    again = await client.authorize_hold(account_id, "30.00", "USD", reference_id="py-1")
    to_pay = await client.authorize_hold(
        account_id, Decimal("20.00"), "USD", destination_account_id=destination
    )
    hold, capture = await client.capture_hold(first.hold_id, "10.00", reference_id="py-c1")
    paid, payment = await client.capture_hold(to_pay.hold_id, final=True)
    listed = await client.list_holds(account_id=account_id, status="open")
    voided = await client.void_hold(first.hold_id)
    read = await client.get_hold(first.hold_id)

    assert (first.status, first.amount, first.replayed) == ("open", Decimal("30.00"), False)
    assert (again.hold_id, again.replayed) == (first.hold_id, True)
    assert first.closed_at is None and first.expires_at > first.created_at
    assert (hold.captured_amount, capture.amount, capture.hold_id) == (
        Decimal("10.00"),
        Decimal("10.00"),
        first.hold_id,
    )
    assert capture.available_balance == Decimal("50.00")  # 100 - 30 held - 20 held
    assert (paid.status, paid.captured_amount, payment.transaction_type) == (
        "captured",
        Decimal("20.00"),
        "transfer_out",
    )
    assert to_pay.destination_account_id == UUID(destination)
    assert [found.hold_id for found in listed.holds] == [first.hold_id]
    assert (voided.status, read.status) == ("voided", "voided")
    assert read.closed_at is not None
    assert read.captured_amount == Decimal("10.00")
    balance = await client.get_balance(account_id)
    assert (balance.current_balance, balance.available_balance) == (Decimal("70.00"),) * 2

    before = await everything(grpc_bank.bank)
    with pytest.raises(BankingClientError) as raised:
        await client.capture_hold(first.hold_id, "1.00")
    assert (raised.value.status, raised.value.code) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "HOLD_NOT_OPEN",
    )
    with pytest.raises(BankingClientError) as raised:
        await grpc_bank.client(staff).get_hold(UUID(int=1))
    assert (raised.value.status, raised.value.code) == (grpc.StatusCode.NOT_FOUND, "HOLD_NOT_FOUND")
    assert await everything(grpc_bank.bank) == before
    report = await reconcile(grpc_bank.bank.container.unit_of_work)
    assert report.clean, report.problems
