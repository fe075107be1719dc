"""AccountService over a real loopback server: open, read, balance, history with paging and
filters, and the WatchBalance stream."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import pytest

from banking.domain.roles import Role
from banking.grpc.client import BalanceInfo, BankingClientError
from tests.grpc.conftest import GrpcBank


async def test_a_customer_opens_an_account_with_a_zero_balance(grpc_bank: GrpcBank) -> None:
    customer_id, customer = await grpc_bank.bank.user(Role.CUSTOMER)
    client = grpc_bank.client(customer)

    account, balance = await client.create_account("EUR", account_type="savings")

    assert account.customer_id == customer_id
    assert account.account_type == "savings"
    assert account.currency == "EUR"
    assert account.is_active is True
    assert len(account.account_number) == 12
    assert balance.account_id == account.account_id
    assert balance.available_balance == Decimal("0.00")
    assert await client.get_account(account.account_id) == account


async def test_a_teller_opens_an_account_for_a_customer(grpc_bank: GrpcBank) -> None:
    customer_id, customer = await grpc_bank.bank.user(Role.CUSTOMER)
    _, staff = await grpc_bank.bank.user(Role.TELLER)

    account, _ = await grpc_bank.client(staff).create_account("USD", customer_id=customer_id)

    assert account.customer_id == customer_id
    assert account.account_type == "checking"
    assert (await grpc_bank.client(customer).get_account(account.account_id)).currency == "USD"


async def test_a_teller_must_name_the_customer(grpc_bank: GrpcBank) -> None:
    _, staff = await grpc_bank.bank.user(Role.TELLER)

    with pytest.raises(BankingClientError) as raised:
        await grpc_bank.client(staff).create_account("USD")

    assert raised.value.status is grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.code == "VALIDATION_ERROR"
    assert raised.value.field == "customer_id"
    assert raised.value.message == "customer_id is required"


async def test_an_auditor_cannot_open_accounts(grpc_bank: GrpcBank) -> None:
    customer_id, _ = await grpc_bank.bank.user(Role.CUSTOMER)
    _, auditor = await grpc_bank.bank.user(Role.AUDITOR)

    with pytest.raises(BankingClientError) as raised:
        await grpc_bank.client(auditor).create_account("USD", customer_id=customer_id)

    assert raised.value.status is grpc.StatusCode.PERMISSION_DENIED


async def test_balance_has_a_version_that_moves_with_money(grpc_bank: GrpcBank) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("100.00")
    client = grpc_bank.client(customer)
    before = await client.get_balance(account_id)

    movement = await client.debit(account_id, "1.00", "USD")
    after = await client.get_balance(account_id)

    assert after.version == movement.balance_version > before.version
    assert after.current_balance == after.available_balance == Decimal("99.00")
    assert after.currency == "USD"


async def test_list_transactions_pages_newest_first(grpc_bank: GrpcBank) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("100.00")
    client = grpc_bank.client(customer)
    debits = [await client.debit(account_id, f"{n}.00", "USD") for n in (1, 2, 3)]

    first = await client.list_transactions(account_id, page_size=2)
    second = await client.list_transactions(account_id, page_size=2, cursor=first.next_cursor)

    listed = [leg.transaction_id for leg in first.transactions + second.transactions]
    assert listed[:3] == [d.transaction_id for d in reversed(debits)]
    assert len(listed) == 4  # three debits and the funding credit
    assert first.next_cursor is not None
    assert second.next_cursor is None
    assert second.transactions[-1].transaction_type == "credit"


async def test_list_transactions_filters_by_type_status_and_time(grpc_bank: GrpcBank) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("10.00")
    client = grpc_bank.client(customer)
    await client.debit(account_id, "4.00", "USD")
    with pytest.raises(BankingClientError):
        await client.debit(account_id, "50.00", "USD")

    debits = await client.list_transactions(account_id, transaction_type="debit")
    failed = await client.list_transactions(account_id, status="failed")
    future = await client.list_transactions(
        account_id, created_from=datetime.now(UTC) + timedelta(hours=1)
    )

    assert sorted(leg.amount for leg in debits.transactions) == [Decimal("4.00"), Decimal("50.00")]
    assert [leg.failure_code for leg in failed.transactions] == ["INSUFFICIENT_FUNDS"]
    assert future.transactions == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("transaction_type", "refund", "transaction_type must be one of"),
        ("status", "done", "status must be one of"),
        ("page_size", 100_000, "page_size must be between 1 and"),
        ("cursor", "not-a-cursor", "cursor is not valid"),
    ],
)
async def test_list_transactions_refuses_bad_filters(
    grpc_bank: GrpcBank, field: str, value: object, message: str
) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account(None)

    with pytest.raises(BankingClientError) as raised:
        await grpc_bank.client(customer).list_transactions(account_id, **{field: value})  # type: ignore[arg-type]

    assert raised.value.status is grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.message.startswith(message)


async def test_watch_balance_streams_an_update_after_a_debit(grpc_bank: GrpcBank) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("100.00")
    client = grpc_bank.client(customer)
    seen: list[BalanceInfo] = []

    async def watch() -> None:
        async for balance in client.watch_balance(account_id):
            seen.append(balance)
            if len(seen) == 2:
                return

    watcher = asyncio.create_task(watch())
    for _ in range(100):
        if seen:
            break
        await asyncio.sleep(0.05)
    assert seen and seen[0].available_balance == Decimal("100.00")

    movement = await client.debit(account_id, "25.00", "USD")
    await asyncio.wait_for(watcher, timeout=10)

    assert seen[1].available_balance == Decimal("75.00")
    assert seen[1].version == movement.balance_version


async def test_watch_balance_after_a_version_waits_for_a_newer_one(grpc_bank: GrpcBank) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("100.00")
    client = grpc_bank.client(customer)
    current = await client.get_balance(account_id)

    async def first_update() -> BalanceInfo:
        async for balance in client.watch_balance(account_id, after_version=current.version):
            return balance
        raise AssertionError("the stream ended without a balance")

    watcher = asyncio.create_task(first_update())
    await asyncio.sleep(1.2)  # two polls at the same version send nothing
    assert not watcher.done()
    await client.debit(account_id, "1.00", "USD")

    update = await asyncio.wait_for(watcher, timeout=10)
    assert update.version > current.version
    assert update.available_balance == Decimal("99.00")


async def test_watch_balance_of_another_customers_account_is_not_found(
    grpc_bank: GrpcBank,
) -> None:
    _, _, account_id = await grpc_bank.customer_with_account("100.00")
    _, stranger = await grpc_bank.bank.user(Role.CUSTOMER)

    with pytest.raises(BankingClientError) as raised:
        async for _ in grpc_bank.client(stranger).watch_balance(account_id):
            pass

    assert raised.value.status is grpc.StatusCode.NOT_FOUND
    assert raised.value.code == "ACCOUNT_NOT_FOUND"
