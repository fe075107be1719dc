"""Holds over gRPC (``banking.v1.HoldService``) on SQLite and PostgreSQL: the same core and
rules as REST; errors as status codes with the stable code; nothing changed by a refusal."""

from __future__ import annotations

from decimal import Decimal

import grpc
import pytest

from banking.domain.roles import Role
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
