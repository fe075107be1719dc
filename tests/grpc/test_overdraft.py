"""Overdraft limits over gRPC (SetOverdraftLimit, Balance.overdraft_limit): the same core and
rules as REST, on SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

import grpc
import pytest

from banking.domain.roles import Role
from banking.grpc.client import BankingClientError
from tests.grpc.conftest import GrpcBank


async def test_a_teller_sets_a_limit_and_debits_stop_at_it(grpc_bank: GrpcBank) -> None:
    staff, customer, account_id = await grpc_bank.customer_with_account("100.00")
    teller, owner = grpc_bank.client(staff), grpc_bank.client(customer)

    balance = await teller.set_overdraft_limit(account_id, "25.00")
    debited = await owner.debit(account_id, "125.00", "USD")

    assert balance.overdraft_limit == Decimal("25.00")
    assert debited.available_balance == Decimal("-25.00")
    with pytest.raises(BankingClientError) as raised:
        await owner.debit(account_id, "0.01", "USD")
    assert raised.value.code == "INSUFFICIENT_FUNDS"
    now = await owner.get_balance(account_id)
    assert (now.available_balance, now.current_balance) == (Decimal("-25.00"),) * 2
    assert now.overdraft_limit == Decimal("25.00")


@pytest.mark.parametrize("limit", ["-5", "abc", "", "1.001", "10000000000000000"])
async def test_a_bad_limit_is_invalid_argument_and_changes_nothing(
    grpc_bank: GrpcBank, limit: str
) -> None:
    staff, _, account_id = await grpc_bank.customer_with_account("10.00")
    before = await grpc_bank.bank.snapshot()

    with pytest.raises(BankingClientError) as raised:
        await grpc_bank.client(staff).set_overdraft_limit(account_id, limit)

    assert raised.value.status is grpc.StatusCode.INVALID_ARGUMENT
    assert (raised.value.code, raised.value.field) == ("VALIDATION_ERROR", "overdraft_limit")
    assert await grpc_bank.bank.snapshot() == before


async def test_a_customer_cannot_set_a_limit_and_nothing_changes(grpc_bank: GrpcBank) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("10.00")
    before = await grpc_bank.bank.snapshot()

    with pytest.raises(BankingClientError) as raised:
        await grpc_bank.client(customer).set_overdraft_limit(account_id, "100.00")

    assert raised.value.status is grpc.StatusCode.PERMISSION_DENIED
    assert raised.value.code == "FORBIDDEN"
    assert await grpc_bank.bank.snapshot() == before


async def test_a_limit_below_the_use_is_refused(grpc_bank: GrpcBank) -> None:
    staff, customer, account_id = await grpc_bank.customer_with_account(None)
    teller = grpc_bank.client(staff)
    await teller.set_overdraft_limit(account_id, "10")
    await grpc_bank.client(customer).debit(account_id, "8.00", "USD")
    before = await grpc_bank.bank.snapshot()

    with pytest.raises(BankingClientError) as raised:
        await teller.set_overdraft_limit(account_id, "7.99")

    assert raised.value.field == "overdraft_limit"
    assert await grpc_bank.bank.snapshot() == before
    assert (await teller.set_overdraft_limit(account_id, "8")).overdraft_limit == Decimal("8.00")


async def test_auditors_read_the_limit_but_cannot_set_it(grpc_bank: GrpcBank) -> None:
    staff, _, account_id = await grpc_bank.customer_with_account("10.00")
    _, auditor = await grpc_bank.bank.user(Role.AUDITOR)
    await grpc_bank.client(staff).set_overdraft_limit(account_id, "5.00")

    read = await grpc_bank.client(auditor).get_balance(account_id)

    assert read.overdraft_limit == Decimal("5.00")
    with pytest.raises(BankingClientError) as raised:
        await grpc_bank.client(auditor).set_overdraft_limit(account_id, "0")
    assert raised.value.code == "FORBIDDEN"
