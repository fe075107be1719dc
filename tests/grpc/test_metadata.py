"""gRPC: metadata on debits, credits, transfers and accounts (``map<string, string>``), on
SQLite and PostgreSQL, through the same core as REST: stored and returned, searchable with
SearchTransactions, replayed or conflicting under the same key, INVALID_ARGUMENT when bad
(nothing changed), NOT_FOUND for another customer's leg."""

from __future__ import annotations

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

LABELS = {"order_id": "42", "channel": "grpc"}


def _auth(headers: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return (("authorization", headers["Authorization"]),)


async def test_movements_keep_their_metadata_and_the_lookup_finds_them(
    grpc_bank: GrpcBank,
) -> None:
    staff, alice, account = await grpc_bank.customer_with_account()
    _, bob, bob_account = await grpc_bank.customer_with_account(funded="1.00")
    stub = transactions_pb2_grpc.TransactionServiceStub(grpc_bank.channel())

    debit = await stub.DebitAccount(
        transactions_pb2.DebitRequest(
            account_id=str(account), amount="5.00", currency="USD", metadata=LABELS
        ),
        metadata=_auth(alice),
    )
    credit = await stub.CreditAccount(
        transactions_pb2.CreditRequest(
            account_id=str(account), amount="1.00", currency="USD", metadata={"source": "till"}
        ),
        metadata=_auth(staff),
    )
    transfer = await stub.TransferBetweenAccounts(
        transactions_pb2.TransferRequest(
            source_account_id=str(account),
            destination_account_id=str(bob_account),
            amount="2.00",
            currency="USD",
            metadata={"order_id": "42", "invoice": "inv-7"},
        ),
        metadata=_auth(alice),
    )

    read = await stub.GetTransaction(
        transactions_pb2.GetTransactionRequest(transaction_id=debit.transaction_id),
        metadata=_auth(alice),
    )
    incoming = await stub.GetTransaction(
        transactions_pb2.GetTransactionRequest(transaction_id=transfer.related_transaction_id),
        metadata=_auth(bob),
    )
    credited = await stub.GetTransaction(
        transactions_pb2.GetTransactionRequest(transaction_id=credit.transaction_id),
        metadata=_auth(alice),
    )
    assert dict(read.metadata) == LABELS
    assert dict(credited.metadata) == {"source": "till"}
    assert dict(incoming.metadata) == {"order_id": "42", "invoice": "inv-7"}

    by_order = transactions_pb2.SearchTransactionsRequest(metadata={"order_id": "42"})
    alice_sees = await stub.SearchTransactions(by_order, metadata=_auth(alice))
    bob_sees = await stub.SearchTransactions(by_order, metadata=_auth(bob))
    both = await stub.SearchTransactions(
        transactions_pb2.SearchTransactionsRequest(metadata={"order_id": "42", "invoice": "inv-7"}),
        metadata=_auth(alice),
    )
    rest = await grpc_bank.bank.client.get(
        "/api/v1/transactions", params={"metadata[order_id]": "42"}, headers=alice
    )

    assert {leg.transaction_id for leg in alice_sees.transactions} == {
        debit.transaction_id,
        transfer.transaction_id,
    }
    assert [leg.transaction_id for leg in alice_sees.transactions] == [
        leg["transaction_id"] for leg in rest.json()["transactions"]
    ]
    assert [leg.transaction_id for leg in bob_sees.transactions] == [
        transfer.related_transaction_id
    ]
    assert [leg.transaction_id for leg in both.transactions] == [transfer.transaction_id]


async def test_the_same_key_replays_with_the_same_metadata_and_conflicts_with_other(
    grpc_bank: GrpcBank,
) -> None:
    _, alice, account = await grpc_bank.customer_with_account()
    stub = transactions_pb2_grpc.TransactionServiceStub(grpc_bank.channel())

    def debit(labels: dict[str, str]) -> transactions_pb2.DebitRequest:
        return transactions_pb2.DebitRequest(
            account_id=str(account),
            amount="5.00",
            currency="USD",
            reference_id="order-42",
            metadata=labels,
        )

    first = await stub.DebitAccount(debit(LABELS), metadata=_auth(alice))
    before = await grpc_bank.bank.snapshot()
    again = await stub.DebitAccount(debit(dict(reversed(LABELS.items()))), metadata=_auth(alice))
    with pytest.raises(grpc.aio.AioRpcError) as conflict:
        await stub.DebitAccount(debit({"order_id": "43"}), metadata=_auth(alice))

    assert again.transaction_id == first.transaction_id
    assert conflict.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert "metadata" in (conflict.value.details() or "")
    assert await grpc_bank.bank.snapshot() == before


@pytest.mark.parametrize(
    "labels",
    [
        {f"k{n}": "v" for n in range(51)},
        {"k" * 41: "v"},
        {"bad key": "v"},
        {"order_id": "v" * 501},
        {"order_id": "bell\a"},
    ],
    ids=["too-many-keys", "long-key", "space-in-key", "long-value", "control-character"],
)
async def test_bad_metadata_is_invalid_argument_and_changes_nothing(
    grpc_bank: GrpcBank, labels: dict[str, str]
) -> None:
    staff, alice, account = await grpc_bank.customer_with_account()
    _, _, other = await grpc_bank.customer_with_account(funded=None)
    customer_id, _ = await grpc_bank.bank.user(Role.CUSTOMER)
    transactions = transactions_pb2_grpc.TransactionServiceStub(grpc_bank.channel())
    accounts = accounts_pb2_grpc.AccountServiceStub(grpc_bank.channel())
    before = await grpc_bank.bank.snapshot()

    calls = [
        transactions.DebitAccount(
            transactions_pb2.DebitRequest(
                account_id=str(account), amount="1.00", currency="USD", metadata=labels
            ),
            metadata=_auth(alice),
        ),
        transactions.TransferBetweenAccounts(
            transactions_pb2.TransferRequest(
                source_account_id=str(account),
                destination_account_id=str(other),
                amount="1.00",
                currency="USD",
                metadata=labels,
            ),
            metadata=_auth(alice),
        ),
        transactions.SearchTransactions(
            transactions_pb2.SearchTransactionsRequest(metadata=labels), metadata=_auth(alice)
        ),
        accounts.CreateAccount(
            accounts_pb2.CreateAccountRequest(
                currency="USD", customer_id=str(customer_id), metadata=labels
            ),
            metadata=_auth(staff),
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "metadata" in (refused.value.details() or "")

    assert await grpc_bank.bank.snapshot() == before


async def test_an_accounts_metadata_is_kept_and_another_customers_leg_is_not_found(
    grpc_bank: GrpcBank,
) -> None:
    staff, bob, bob_account = await grpc_bank.customer_with_account()
    customer_id, alice = await grpc_bank.bank.user(Role.CUSTOMER)
    accounts = accounts_pb2_grpc.AccountServiceStub(grpc_bank.channel())
    transactions = transactions_pb2_grpc.TransactionServiceStub(grpc_bank.channel())

    opened = await accounts.CreateAccount(
        accounts_pb2.CreateAccountRequest(
            currency="USD", customer_id=str(customer_id), metadata={"segment": "retail"}
        ),
        metadata=_auth(staff),
    )
    read = await accounts.GetAccount(
        accounts_pb2.GetAccountRequest(account_id=opened.account.account_id),
        metadata=_auth(alice),
    )
    bobs = await transactions.DebitAccount(
        transactions_pb2.DebitRequest(
            account_id=str(bob_account), amount="1.00", currency="USD", metadata={"secret": "s"}
        ),
        metadata=_auth(bob),
    )
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await transactions.GetTransaction(
            transactions_pb2.GetTransactionRequest(transaction_id=bobs.transaction_id),
            metadata=_auth(alice),
        )
    searched = await transactions.SearchTransactions(
        transactions_pb2.SearchTransactionsRequest(metadata={"secret": "s"}), metadata=_auth(alice)
    )

    assert dict(opened.account.metadata) == {"segment": "retail"}
    assert dict(read.metadata) == {"segment": "retail"}
    assert hidden.value.code() is grpc.StatusCode.NOT_FOUND
    assert list(searched.transactions) == []
