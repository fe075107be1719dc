"""Concurrency over gRPC on the real PostgreSQL: no overdraft, every loser gets a clean decline."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import grpc
import pytest

from banking.grpc.client import BankingClientError
from banking.ledger.reconcile import reconcile
from tests.grpc.conftest import GrpcBank

pytestmark = pytest.mark.postgres


async def test_200_concurrent_debits_of_10_on_1000_exactly_100_succeed(
    pg_grpc_bank: GrpcBank,
) -> None:
    _, customer, account_id = await pg_grpc_bank.customer_with_account("1000.00")
    client = pg_grpc_bank.client(customer)

    async def debit(index: int) -> str:
        try:
            movement = await client.debit(account_id, "10.00", "USD", reference_id=f"c-{index}")
        except BankingClientError as error:
            assert error.status is grpc.StatusCode.FAILED_PRECONDITION, error
            assert error.transaction_id is not None
            return error.code or "?"
        assert movement.available_balance >= 0
        return "OK"

    outcomes = await asyncio.gather(*[debit(index) for index in range(200)])

    assert outcomes.count("OK") == 100
    assert outcomes.count("INSUFFICIENT_FUNDS") == 100
    assert (await client.get_balance(account_id)).available_balance == Decimal("0.00")
    report = await reconcile(pg_grpc_bank.bank.container.unit_of_work)
    assert report.clean, report.problems
