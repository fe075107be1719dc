"""``TransactionService.BatchMovements`` over a real loopback server, on SQLite and PostgreSQL:
each item's outcome, atomic batches (the failing item's status and index in the rich error
details), the batch's idempotency key, per-item authorization and the limits. Every refusal
is checked to have changed nothing."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import grpc
import pytest

from banking.domain.roles import Role
from banking.grpc.gen import transactions_pb2, transactions_pb2_grpc
from banking.grpc.interceptors import BATCH_INDEX_INFO
from tests.grpc.conftest import GrpcBank, grpc_bank_with
from tests.grpc.details import rich_error
from tests.rest.test_batch import Books, _books, books_state

Item = transactions_pb2.BatchItem


def debit(account_id: str, amount: str, **extra: Any) -> Item:
    return Item(
        debit=transactions_pb2.DebitRequest(
            account_id=account_id, amount=amount, currency="USD", **extra
        )
    )


def credit(account_id: str, amount: str, **extra: Any) -> Item:
    return Item(
        credit=transactions_pb2.CreditRequest(
            account_id=account_id, amount=amount, currency="USD", **extra
        )
    )


def transfer(source: str, destination: str, amount: str, **extra: Any) -> Item:
    return Item(
        transfer=transactions_pb2.TransferRequest(
            source_account_id=source,
            destination_account_id=destination,
            amount=amount,
            currency="USD",
            **extra,
        )
    )


async def call(
    grpc_bank: GrpcBank,
    headers: dict[str, str],
    items: list[Item],
    *,
    atomic: bool = False,
    key: str = "",
) -> tuple[transactions_pb2.BatchMovementsResponse, dict[str, str]]:
    """The response and its trailing metadata."""
    stub = transactions_pb2_grpc.TransactionServiceStub(grpc_bank.channel())
    pending = stub.BatchMovements(
        transactions_pb2.BatchMovementsRequest(items=items, atomic=atomic, idempotency_key=key),
        metadata=(("authorization", headers["Authorization"]),),
    )
    response = await pending
    trailing = {key: str(value) for key, value in (await pending.trailing_metadata() or ())}
    return response, trailing


async def failing(
    grpc_bank: GrpcBank,
    headers: dict[str, str],
    items: list[Item],
    **options: Any,
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(grpc_bank, headers, items, **options)
    return raised.value


async def balances_of(grpc_bank: GrpcBank, books: Books) -> tuple[Decimal, ...]:
    bank = grpc_bank.bank
    return tuple(
        [await bank.balance(account, books.staff) for account in (books.funded, books.empty)]
    )


@pytest.fixture
async def books(grpc_bank: GrpcBank) -> Books:
    return await _books(grpc_bank.bank)


async def test_each_item_gets_its_own_outcome_and_the_balances_follow(
    grpc_bank: GrpcBank, books: Books
) -> None:
    response, trailing = await call(
        grpc_bank,
        books.customer,
        [
            debit(books.funded, "30.00", reference_id="g-0"),
            transfer(books.funded, books.empty, "10.00"),
            debit(books.funded, "1000.00"),
            debit(books.other, "1.00"),
            credit(books.funded, "5.00"),
        ],
    )

    assert (response.atomic, response.completed, response.failed, response.rejected) == (
        False,
        2,
        1,
        2,
    )
    assert [item.index for item in response.items] == [0, 1, 2, 3, 4]
    statuses = [item.status for item in response.items]
    assert statuses == ["completed", "completed", "failed", "rejected", "rejected"]
    first = response.items[0].transaction
    assert (first.transaction_type, first.amount, first.available_balance) == (
        "debit",
        "30.00",
        "70.00",
    )
    assert first.reference_id == "g-0"
    assert response.items[1].transaction.available_balance == "60.00"
    declined = response.items[2].error
    assert declined.code == "INSUFFICIENT_FUNDS" and declined.transaction_id
    assert [response.items[i].error.code for i in (3, 4)] == ["ACCOUNT_NOT_FOUND", "FORBIDDEN"]
    assert all(not response.items[i].error.transaction_id for i in (3, 4))
    assert "idempotent-replayed" not in trailing
    assert await balances_of(grpc_bank, books) == (Decimal("60.00"), Decimal("10.00"))
    assert await grpc_bank.bank.balance(books.other, books.staff) == Decimal("50.00")


async def test_an_atomic_batch_that_completes_applies_every_item(
    grpc_bank: GrpcBank, books: Books
) -> None:
    response, _ = await call(
        grpc_bank,
        books.staff,
        [credit(books.empty, "20.00"), transfer(books.funded, books.empty, "40.00")],
        atomic=True,
    )
    assert (response.atomic, response.completed) == (True, 2)
    assert await balances_of(grpc_bank, books) == (Decimal("60.00"), Decimal("60.00"))


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("poor", grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS"),
        ("foreign", grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_FOUND"),
        ("credit", grpc.StatusCode.PERMISSION_DENIED, "FORBIDDEN"),
    ],
)
async def test_an_atomic_batch_with_a_failing_item_stores_nothing_and_names_it(
    grpc_bank: GrpcBank, books: Books, kind: str, status: grpc.StatusCode, code: str
) -> None:
    bad = {
        "poor": debit(books.funded, "1000.00"),
        "foreign": debit(books.other, "1.00"),
        "credit": credit(books.funded, "1.00"),
    }[kind]
    before = await books_state(grpc_bank.bank)

    error = await failing(
        grpc_bank,
        books.customer,
        [debit(books.funded, "10.00"), transfer(books.funded, books.empty, "5.00"), bad],
        atomic=True,
    )

    assert error.code() == status
    assert (error.details() or "").startswith("item 2: ")
    details = rich_error(error)
    assert details.info.reason == code
    assert details.info.metadata[BATCH_INDEX_INFO] == "2"
    assert "transaction_id" not in details.info.metadata  # nothing was stored
    assert await books_state(grpc_bank.bank) == before


async def test_the_same_batch_with_the_same_key_replays_every_item(
    grpc_bank: GrpcBank, books: Books
) -> None:
    items = [debit(books.funded, "10.00"), transfer(books.funded, books.empty, "20.00")]
    first, _ = await call(grpc_bank, books.customer, items, key="g-payroll")
    after_first = await books_state(grpc_bank.bank)

    again, trailing = await call(grpc_bank, books.customer, items, key="g-payroll")

    assert trailing["idempotent-replayed"] == "true"
    assert [item.replayed for item in again.items] == [True, True]
    assert [item.transaction.reference_id for item in again.items] == [
        "g-payroll:0",
        "g-payroll:1",
    ]
    assert [i.transaction for i in again.items] == [i.transaction for i in first.items]
    assert await books_state(grpc_bank.bank) == after_first

    changed = [items[0], transfer(books.funded, books.empty, "21.00")]
    conflict, _ = await call(grpc_bank, books.customer, changed, key="g-payroll")
    assert [item.status for item in conflict.items] == ["completed", "rejected"]
    assert conflict.items[1].error.code == "IDEMPOTENCY_CONFLICT"
    error = await failing(grpc_bank, books.customer, changed, key="g-payroll", atomic=True)
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert rich_error(error).info.metadata[BATCH_INDEX_INFO] == "1"
    assert await books_state(grpc_bank.bank) == after_first


async def test_an_auditor_moves_nothing(grpc_bank: GrpcBank, books: Books) -> None:
    _, auditor = await grpc_bank.bank.user(Role.AUDITOR)
    before = await books_state(grpc_bank.bank)

    response, _ = await call(grpc_bank, auditor, [debit(books.funded, "1.00")])

    assert [item.error.code for item in response.items] == ["FORBIDDEN"]
    assert await books_state(grpc_bank.bank) == before


@pytest.mark.parametrize(
    ("case", "field"),
    [
        ("empty", "items"),
        ("1001 items", "items"),
        ("no movement", "items[0]"),
        ("bad uuid", "items[1].debit.account_id"),
        ("bad amount", "items[0].debit.amount"),
        ("unknown currency", "items[0].credit.currency"),
    ],
)
async def test_a_batch_that_cannot_be_read_is_invalid_argument_and_changes_nothing(
    grpc_bank: GrpcBank, books: Books, case: str, field: str
) -> None:
    items: list[Item] = {
        "empty": [],
        "1001 items": [credit(books.funded, "1.00")] * 1001,
        "no movement": [Item()],
        "bad uuid": [credit(books.funded, "1.00"), debit("not-a-uuid", "1.00")],
        "bad amount": [debit(books.funded, "-1")],
        "unknown currency": [
            Item(
                credit=transactions_pb2.CreditRequest(
                    account_id=books.funded, amount="1.00", currency="XYZ"
                )
            )
        ],
    }[case]
    before = await books_state(grpc_bank.bank)

    error = await failing(grpc_bank, books.staff, items)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = rich_error(error)
    assert details.info.reason == "VALIDATION_ERROR"
    assert [name for name, _ in details.violations] == [field]
    assert await books_state(grpc_bank.bank) == before


async def test_a_key_too_long_for_the_item_keys_is_refused(
    grpc_bank: GrpcBank, books: Books
) -> None:
    before = await books_state(grpc_bank.bank)
    error = await failing(grpc_bank, books.customer, [debit(books.funded, "1.00")], key="k" * 252)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [name for name, _ in rich_error(error).violations] == ["idempotency_key"]
    assert await books_state(grpc_bank.bank) == before


async def test_the_message_limit_is_the_batch_limit(database_url: str) -> None:
    """Messages larger than REQUEST_BODY_BYTES_MAX pass up to BATCH_BODY_BYTES_MAX; larger
    ones are RESOURCE_EXHAUSTED with nothing done."""
    limit = 128 * 1024
    async with grpc_bank_with(database_url, batch_body_bytes_max=limit) as grpc_bank:
        books = await _books(grpc_bank.bank)
        settings = grpc_bank.bank.container.settings
        description = "x" * 400

        def batch_of(size: int) -> list[Item]:
            item = debit(books.funded, "0.01", description=description)
            return [item] * (size // item.ByteSize())

        accepted = batch_of(settings.request_body_bytes_max + 8 * 1024)
        response, _ = await call(grpc_bank, books.customer, accepted)
        assert response.completed == len(accepted)
        before = await books_state(grpc_bank.bank)

        error = await failing(grpc_bank, books.customer, batch_of(limit + 8 * 1024))

        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await books_state(grpc_bank.bank) == before


async def test_batches_on_postgresql(pg_grpc_bank: GrpcBank) -> None:
    """The PostgreSQL store decides a batch in one call of its own: the same outcomes."""
    books = await _books(pg_grpc_bank.bank)
    response, _ = await call(
        pg_grpc_bank,
        books.customer,
        [
            transfer(books.funded, books.empty, "60.00"),
            transfer(books.funded, books.empty, "60.00"),  # declined: 40.00 left
            transfer(books.empty, books.funded, "10.00"),
        ],
    )
    assert [item.status for item in response.items] == ["completed", "failed", "completed"]
    assert await balances_of(pg_grpc_bank, books) == (Decimal("50.00"), Decimal("50.00"))
