"""gRPC: SearchTransactions, GetBalance with ``as_of`` and GetStatement on SQLite and
PostgreSQL, through the same core as REST: the same figures as REST's JSON, the same rules
(another customer's account: NOT_FOUND), bad input INVALID_ARGUMENT and nothing changed."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from banking.domain.roles import Role
from banking.grpc.gen import (
    accounts_pb2,
    accounts_pb2_grpc,
    transactions_pb2,
    transactions_pb2_grpc,
)
from tests.grpc.conftest import GrpcBank
from tests.grpc.details import rich_error
from tests.rest.test_lookup_statements import FAR_FUTURE, FAR_PAST, Books, make_books


def _auth(headers: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return (("authorization", headers["Authorization"]),)


@pytest.fixture
async def books(grpc_bank: GrpcBank) -> Books:
    _, staff = await grpc_bank.bank.user(Role.TELLER)
    return await make_books(grpc_bank.bank, staff)


async def test_search_finds_only_the_callers_legs_by_reference(
    grpc_bank: GrpcBank, books: Books
) -> None:
    stub = transactions_pb2_grpc.TransactionServiceStub(grpc_bank.channel())
    request = transactions_pb2.SearchTransactionsRequest(reference_id="order-42")

    alice = await stub.SearchTransactions(request, metadata=_auth(books.alice))
    staff = await stub.SearchTransactions(request, metadata=_auth(books.staff))
    paged = await stub.SearchTransactions(
        transactions_pb2.SearchTransactionsRequest(reference_id="order-42", page_size=1),
        metadata=_auth(books.staff),
    )
    rest = await grpc_bank.bank.client.get(
        "/api/v1/transactions", params={"reference_id": "order-42"}, headers=books.alice
    )

    assert [(leg.account_id, leg.amount, leg.status) for leg in alice.transactions] == [
        (books.usd, "30.00", "completed")
    ]
    assert [leg.transaction_id for leg in alice.transactions] == [
        leg["transaction_id"] for leg in rest.json()["transactions"]
    ]
    assert {leg.account_id for leg in staff.transactions} == {books.usd, books.usd_bob}
    assert len(paged.transactions) == 1 and paged.next_cursor
    rest_page = await stub.SearchTransactions(
        transactions_pb2.SearchTransactionsRequest(
            reference_id="order-42", page_size=1, cursor=paged.next_cursor
        ),
        metadata=_auth(books.staff),
    )
    assert len(rest_page.transactions) == 1 and rest_page.next_cursor == ""


async def test_balance_as_of_and_the_statement_agree_with_rest(
    grpc_bank: GrpcBank, books: Books
) -> None:
    stub = accounts_pb2_grpc.AccountServiceStub(grpc_bank.channel())
    statement = await stub.GetStatement(
        accounts_pb2.GetStatementRequest(
            account_id=books.usd, period_from=FAR_PAST, period_to=FAR_FUTURE
        ),
        metadata=_auth(books.alice),
    )
    rest = (
        await grpc_bank.bank.client.get(
            f"/api/v1/accounts/{books.usd}/statement",
            params={"from": FAR_PAST, "to": FAR_FUTURE},
            headers=books.alice,
        )
    ).json()
    then = await stub.GetBalance(
        accounts_pb2.GetBalanceRequest(
            account_id=books.usd, as_of=statement.transactions[1].transaction.created_at
        ),
        metadata=_auth(books.alice),
    )
    now = await stub.GetBalance(
        accounts_pb2.GetBalanceRequest(account_id=books.usd), metadata=_auth(books.alice)
    )

    for name in ("opening_balance", "closing_balance", "credits_total", "debits_total", "count"):
        assert str(getattr(statement, name)) == str(rest[name])
    assert [line.running_balance for line in statement.transactions] == [
        leg["running_balance"] for leg in rest["transactions"]
    ]
    assert [line.transaction.transaction_id for line in statement.transactions] == [
        leg["transaction_id"] for leg in rest["transactions"]
    ]
    assert statement.closing_balance == "77.34"
    assert then.current_balance == then.available_balance == "70.00"
    assert now.current_balance == "77.34"


async def test_another_customers_account_is_not_found(grpc_bank: GrpcBank, books: Books) -> None:
    accounts = accounts_pb2_grpc.AccountServiceStub(grpc_bank.channel())
    transactions = transactions_pb2_grpc.TransactionServiceStub(grpc_bank.channel())
    before = await grpc_bank.bank.snapshot()
    calls: list[Any] = [
        accounts.GetStatement(
            accounts_pb2.GetStatementRequest(
                account_id=books.usd, period_from=FAR_PAST, period_to=FAR_FUTURE
            ),
            metadata=_auth(books.bob),
        ),
        accounts.GetBalance(
            accounts_pb2.GetBalanceRequest(account_id=books.usd, as_of=FAR_FUTURE),
            metadata=_auth(books.bob),
        ),
        transactions.SearchTransactions(
            transactions_pb2.SearchTransactionsRequest(account_id=books.usd),
            metadata=_auth(books.bob),
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() is grpc.StatusCode.NOT_FOUND
        assert rich_error(refused.value).info.reason == "ACCOUNT_NOT_FOUND"
    theirs = await transactions.SearchTransactions(
        transactions_pb2.SearchTransactionsRequest(reference_id="order-42"),
        metadata=_auth(books.bob),
    )
    assert books.usd not in {leg.account_id for leg in theirs.transactions}
    assert await grpc_bank.bank.snapshot() == before


@pytest.mark.parametrize(
    ("method", "fields", "field"),
    [
        ("SearchTransactions", {"cursor": "bm90LWEtY3Vyc29y"}, "cursor"),
        ("SearchTransactions", {"page_size": 100000}, "page_size"),
        ("SearchTransactions", {"page_size": -1}, "page_size"),
        ("SearchTransactions", {"created_from": "2026-01-01T00:00:00"}, "created_from"),
        ("SearchTransactions", {"created_from": FAR_FUTURE, "created_to": FAR_PAST}, "from"),
        ("SearchTransactions", {"status": "lost"}, "status"),
        ("GetStatement", {"period_from": FAR_FUTURE, "period_to": FAR_PAST}, "from"),
        ("GetStatement", {"period_to": FAR_FUTURE}, "period_from"),
        ("GetStatement", {"period_from": "yesterday", "period_to": FAR_FUTURE}, "period_from"),
        ("GetBalance", {"as_of": "2026-01-01T00:00:00"}, "as_of"),
    ],
)
async def test_bad_input_is_invalid_argument_and_changes_nothing(
    grpc_bank: GrpcBank, books: Books, method: str, fields: dict[str, Any], field: str
) -> None:
    before = await grpc_bank.bank.snapshot()
    call: Any
    if method == "SearchTransactions":
        call = transactions_pb2_grpc.TransactionServiceStub(grpc_bank.channel()).SearchTransactions(
            transactions_pb2.SearchTransactionsRequest(**fields), metadata=_auth(books.alice)
        )
    elif method == "GetStatement":
        call = accounts_pb2_grpc.AccountServiceStub(grpc_bank.channel()).GetStatement(
            accounts_pb2.GetStatementRequest(account_id=books.usd, **fields),
            metadata=_auth(books.alice),
        )
    else:
        call = accounts_pb2_grpc.AccountServiceStub(grpc_bank.channel()).GetBalance(
            accounts_pb2.GetBalanceRequest(account_id=books.usd, **fields),
            metadata=_auth(books.alice),
        )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = rich_error(refused.value)
    assert details.info.reason == "VALIDATION_ERROR"
    assert field in [name for name, _ in details.violations]
    assert await grpc_bank.bank.snapshot() == before
