"""``POST /api/v1/transactions/batch`` on the embedded SQLite app and on PostgreSQL: each item's
outcome, atomic batches, the batch's idempotency key, per-item authorization, the limits, and
the order of a batch's events. Every refusal is checked to have changed nothing."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from banking.cache.sticky import MemoryRecentWriters, RecordingWriters
from banking.domain.errors import BatchItemFailed
from banking.domain.records import BatchItem, DebitOrCredit, TransactionType
from banking.domain.roles import Actor, Role
from banking.events.outbox import EVENT_TRANSACTION_COMPLETED
from banking.storage.tables import balances, outbox, transaction_logs, transactions
from tests.conftest import Bank, make_settings, running_bank

BATCH = "/api/v1/transactions/batch"


@dataclass
class Books:
    """A teller, a customer with a funded and an empty account, and another customer's."""

    staff: dict[str, str]
    customer: dict[str, str]
    funded: str  # the customer's, 100.00 USD
    empty: str  # the customer's, 0.00 USD
    other: str  # another customer's, 50.00 USD


async def _books(bank: Bank) -> Books:
    _, staff = await bank.user(Role.TELLER)
    customer_id, customer = await bank.user(Role.CUSTOMER)
    other_id, _ = await bank.user(Role.CUSTOMER)
    return Books(
        staff=staff,
        customer=customer,
        funded=await bank.account(customer_id, staff, funded="100.00"),
        empty=await bank.account(customer_id, staff),
        other=await bank.account(other_id, staff, funded="50.00"),
    )


@pytest.fixture
async def books(bank: Bank) -> Books:
    return await _books(bank)


def debit(account_id: str, amount: str | float, **extra: Any) -> dict[str, Any]:
    return {"type": "debit", "account_id": account_id, "amount": amount, "currency": "USD", **extra}


def credit(account_id: str, amount: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "credit",
        "account_id": account_id,
        "amount": amount,
        "currency": "USD",
        **extra,
    }


def transfer(source: str, destination: str, amount: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "transfer",
        "source_account_id": source,
        "destination_account_id": destination,
        "amount": amount,
        "currency": "USD",
        **extra,
    }


async def post_batch(
    bank: Bank,
    headers: dict[str, str],
    items: list[dict[str, Any]],
    *,
    atomic: bool = False,
    key: str | None = None,
) -> httpx.Response:
    if key is not None:
        headers = {**headers, "Idempotency-Key": key}
    return await bank.client.post(BATCH, json={"atomic": atomic, "items": items}, headers=headers)


async def books_state(bank: Bank) -> dict[str, Any]:
    """Every balance (with its version) and every leg, journal row and outbox event id: what a
    refused batch must leave exactly as it was."""
    async with bank.container.database.read() as connection:

        async def column(statement: Any) -> list[Any]:
            return sorted(map(tuple, (await connection.execute(statement)).all()))

        return {
            "balances": await column(
                select(balances.c.account_id, balances.c.current_balance, balances.c.version)
            ),
            "legs": await column(select(transactions.c.transaction_id, transactions.c.status)),
            "journal": await column(select(transaction_logs.c.log_id)),
            "outbox": await column(select(outbox.c.event_id)),
        }


async def balances_of(bank: Bank, books: Books) -> tuple[Decimal, Decimal, Decimal]:
    return (
        await bank.balance(books.funded, books.staff),
        await bank.balance(books.empty, books.staff),
        await bank.balance(books.other, books.staff),
    )


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    assert error["request_id"] == response.headers["x-request-id"]
    return error


# --- outcomes -------------------------------------------------------------------------------


async def test_each_item_gets_its_own_outcome_and_the_balances_follow(
    bank: Bank, books: Books
) -> None:
    single = await bank.client.post(
        "/api/v1/transactions/debit",
        json={"account_id": books.funded, "amount": "1.00", "currency": "USD"},
        headers=books.customer,
    )
    assert single.status_code == 200, single.text

    response = await post_batch(
        bank,
        books.customer,
        [
            debit(books.funded, "30.00", description="groceries", reference_id="b-0"),
            transfer(books.funded, books.empty, "10.00"),
            debit(books.funded, "1000.00"),  # declined: stored as a failed leg
            debit(books.other, "1.00"),  # another customer's: not found
            credit(books.funded, "5.00"),  # customers do not credit
            transfer(books.funded, books.funded, "1.00"),  # same account: refused
        ],
    )

    assert response.status_code == 200, response.text
    assert "idempotent-replayed" not in response.headers
    body = response.json()
    assert (body["atomic"], body["completed"], body["failed"], body["rejected"]) == (
        False,
        2,
        1,
        3,
    )
    items = body["items"]
    assert [item["index"] for item in items] == list(range(6))
    assert [item["status"] for item in items] == [
        "completed",
        "completed",
        "failed",
        "rejected",
        "rejected",
        "rejected",
    ]
    first, second = items[0]["transaction"], items[1]["transaction"]
    # Exactly the body of a single movement.
    assert set(first) == set(single.json())
    assert items[0]["replayed"] is False
    assert (first["transaction_type"], first["amount"], first["status"]) == (
        "debit",
        "30.00",
        "completed",
    )
    assert (first["description"], first["reference_id"]) == ("groceries", "b-0")
    assert first["available_balance"] == "69.00"
    assert (second["transaction_type"], second["available_balance"]) == ("transfer_out", "59.00")
    assert second["counterparty_account_id"] == books.empty
    declined = items[2]["error"]
    assert declined["code"] == "INSUFFICIENT_FUNDS"
    assert declined["transaction_id"] is not None
    assert [items[i]["error"]["code"] for i in (3, 4, 5)] == [
        "ACCOUNT_NOT_FOUND",
        "FORBIDDEN",
        "VALIDATION_ERROR",
    ]
    assert items[5]["error"]["field"] == "destination_account_id"
    assert all(items[i]["error"]["transaction_id"] is None for i in (3, 4, 5))

    assert await balances_of(bank, books) == (Decimal("59.00"), Decimal("10.00"), Decimal("50.00"))
    stored = await bank.client.get(
        f"/api/v1/transactions/{declined['transaction_id']}", headers=books.customer
    )
    assert stored.status_code == 200, stored.text
    assert (stored.json()["status"], stored.json()["failure_code"]) == (
        "failed",
        "INSUFFICIENT_FUNDS",
    )
    leg = await bank.client.get(
        f"/api/v1/transactions/{first['transaction_id']}", headers=books.customer
    )
    assert leg.json()["status"] == "completed"


async def test_an_atomic_batch_that_completes_applies_every_item(bank: Bank, books: Books) -> None:
    response = await post_batch(
        bank,
        books.staff,
        [
            credit(books.empty, "20.00"),
            transfer(books.funded, books.empty, "40.00"),
            debit(books.empty, "55.00"),
        ],
        atomic=True,
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["atomic"], body["completed"], body["failed"], body["rejected"]) == (True, 3, 0, 0)
    assert [item["transaction"]["available_balance"] for item in body["items"]] == [
        "20.00",
        "60.00",
        "5.00",
    ]
    assert await balances_of(bank, books) == (Decimal("60.00"), Decimal("5.00"), Decimal("50.00"))


@pytest.mark.parametrize(
    ("failing", "status", "code"),
    [
        (debit("funded", "1000.00"), 422, "INSUFFICIENT_FUNDS"),
        (debit("other", "1.00"), 404, "ACCOUNT_NOT_FOUND"),
        (credit("funded", "1.00"), 403, "FORBIDDEN"),
        (transfer("funded", "funded", "1.00"), 422, "VALIDATION_ERROR"),
    ],
)
async def test_an_atomic_batch_with_a_failing_item_stores_nothing_and_names_it(
    bank: Bank, books: Books, failing: dict[str, Any], status: int, code: str
) -> None:
    accounts = {"funded": books.funded, "other": books.other}
    for name in ("account_id", "source_account_id", "destination_account_id"):
        if name in failing:
            failing = {**failing, name: accounts[failing[name]]}
    before = await books_state(bank)

    response = await post_batch(
        bank,
        books.customer,
        [debit(books.funded, "10.00"), transfer(books.funded, books.empty, "5.00"), failing],
        atomic=True,
    )

    error = assert_error(response, status, code)
    assert error["details"][0]["index"] == 2, error
    assert error["message"].startswith("item 2: "), error
    # A decline inside an atomic batch is not stored either: no leg to name.
    assert "transaction_id" not in error
    assert await books_state(bank) == before
    assert await balances_of(bank, books) == (Decimal("100.00"), Decimal("0.00"), Decimal("50.00"))


# --- idempotency ----------------------------------------------------------------------------


async def test_the_same_batch_with_the_same_key_replays_every_item(
    bank: Bank, books: Books
) -> None:
    items = [
        debit(books.funded, "10.00"),
        transfer(books.funded, books.empty, "20.00"),
        debit(books.empty, "500.00"),  # declined: replayed as the same decline
        debit(books.funded, "1.00", reference_id="own-key"),
    ]
    first = await post_batch(bank, books.customer, items, key="payroll-1")
    assert first.status_code == 200, first.text
    after_first = await books_state(bank)

    again = await post_batch(bank, books.customer, items, key="payroll-1")

    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    old, new = first.json()["items"], again.json()["items"]
    assert [item["status"] for item in new] == ["completed", "completed", "failed", "completed"]
    assert all(item["replayed"] for item in new)
    assert not any(item["replayed"] for item in old)
    assert [new[i]["transaction"]["reference_id"] for i in (0, 1, 3)] == [
        "payroll-1:0",
        "payroll-1:1",
        "own-key",
    ]
    for i in (0, 1, 3):
        assert new[i]["transaction"] == old[i]["transaction"]
    assert new[2]["error"] == old[2]["error"]
    assert await books_state(bank) == after_first
    assert await balances_of(bank, books) == (Decimal("69.00"), Decimal("20.00"), Decimal("50.00"))


async def test_an_item_changed_under_the_same_key_conflicts_at_its_index(
    bank: Bank, books: Books
) -> None:
    items = [debit(books.funded, "10.00"), debit(books.funded, "20.00")]
    assert (await post_batch(bank, books.customer, items, key="k-7")).status_code == 200
    before = await books_state(bank)

    changed = [items[0], debit(books.funded, "25.00")]
    response = await post_batch(bank, books.customer, changed, key="k-7")

    assert response.status_code == 200, response.text
    answered = response.json()["items"]
    assert (answered[0]["status"], answered[0]["replayed"]) == ("completed", True)
    assert answered[1]["status"] == "rejected"
    assert answered[1]["error"]["code"] == "IDEMPOTENCY_CONFLICT"
    assert "amount" in answered[1]["error"]["message"]
    assert await books_state(bank) == before

    atomic = await post_batch(bank, books.customer, changed, atomic=True, key="k-7")
    error = assert_error(atomic, 409, "IDEMPOTENCY_CONFLICT")
    assert error["details"][0]["index"] == 1
    assert await books_state(bank) == before
    assert await bank.balance(books.funded, books.customer) == Decimal("70.00")


async def test_without_keys_a_repeated_batch_moves_money_again(bank: Bank, books: Books) -> None:
    items = [debit(books.funded, "10.00")]
    for _ in range(2):
        response = await post_batch(bank, books.customer, items)
        assert response.json()["items"][0]["replayed"] is False
    assert await bank.balance(books.funded, books.customer) == Decimal("80.00")


async def test_a_key_too_long_for_the_item_keys_is_refused(bank: Bank, books: Books) -> None:
    before = await books_state(bank)
    response = await post_batch(bank, books.customer, [debit(books.funded, "1.00")], key="k" * 252)
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert error["details"][0]["field"] == "header.Idempotency-Key", error
    assert await books_state(bank) == before


# --- authorization --------------------------------------------------------------------------


async def test_an_auditor_moves_nothing(bank: Bank, books: Books) -> None:
    _, auditor = await bank.user(Role.AUDITOR)
    before = await books_state(bank)

    response = await post_batch(
        bank, auditor, [debit(books.funded, "1.00"), credit(books.funded, "1.00")]
    )

    assert response.status_code == 200, response.text
    assert [item["error"]["code"] for item in response.json()["items"]] == ["FORBIDDEN"] * 2
    atomic = await post_batch(bank, auditor, [debit(books.funded, "1.00")], atomic=True)
    assert_error(atomic, 403, "FORBIDDEN")
    assert await books_state(bank) == before


async def test_without_a_token_nothing_is_done(bank: Bank, books: Books) -> None:
    before = await books_state(bank)
    response = await post_batch(bank, {}, [debit(books.funded, "1.00")])
    assert_error(response, 401, "UNAUTHENTICATED")
    assert await books_state(bank) == before


# --- limits and bad bodies ------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1001])
async def test_an_empty_or_oversized_batch_is_refused(bank: Bank, books: Books, count: int) -> None:
    before = await books_state(bank)
    response = await post_batch(bank, books.staff, [credit(books.funded, "1.00")] * count)
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert [detail["field"] for detail in error["details"]] == ["items"], error
    assert await books_state(bank) == before


async def test_batch_items_max_is_the_settings_limit(database_url: str) -> None:
    async with running_bank(make_settings(database_url, batch_items_max=2)) as bank:
        books = await _books(bank)
        before = await books_state(bank)
        response = await post_batch(bank, books.staff, [credit(books.funded, "1.00")] * 3)
        error = assert_error(response, 422, "VALIDATION_ERROR")
        assert error["details"] == [{"field": "items"}]
        assert "at most 2 items" in error["message"]
        assert await books_state(bank) == before
        two = await post_batch(bank, books.staff, [credit(books.funded, "1.00")] * 2)
        assert two.json()["completed"] == 2


async def test_a_body_over_the_batch_limit_is_413_and_the_batch_limit_is_this_routes(
    bank: Bank, books: Books
) -> None:
    settings = bank.container.settings
    before = await books_state(bank)
    payload = json.dumps({"items": [debit(books.funded, "1.00")]}).encode()

    too_large = await bank.client.post(
        BATCH,
        content=payload + b" " * settings.batch_body_bytes_max,
        headers={**books.customer, "Content-Type": "application/json"},
    )

    assert_error(too_large, 413, "PAYLOAD_TOO_LARGE")
    assert await books_state(bank) == before
    # Larger than every other route's limit, within the batch's: accepted here only.
    description = "x" * 400
    items = [
        debit(books.funded, "0.01", description=description)
        for _ in range(settings.request_body_bytes_max // 400 + 10)
    ]
    body = json.dumps({"items": items}).encode()
    assert settings.request_body_bytes_max < len(body) < settings.batch_body_bytes_max
    accepted = await bank.client.post(
        BATCH, content=body, headers={**books.customer, "Content-Type": "application/json"}
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["completed"] == len(items)
    single = await bank.client.post(
        "/api/v1/transactions/debit",
        content=body,
        headers={**books.customer, "Content-Type": "application/json"},
    )
    assert_error(single, 413, "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"type": "debit", "amount": "1.00", "currency": "USD"}, "items.0.debit.account_id"),
        ({"type": "refund", "account_id": "x", "amount": "1.00"}, "items.0"),
        (debit("funded", "-1.00"), "items.0.debit.amount"),
        (debit("funded", "1.005"), "items.0.debit.amount"),
        (debit("funded", 0.001), "items.0.debit.amount"),
        (debit("funded", "1.00", currency="XYZ"), "items.0.debit.currency"),
        (debit("funded", "1.00", description="tab\there"), "items.0.debit.description"),
        (debit("funded", "1.00", colour="red"), "items.0.debit.colour"),
    ],
)
async def test_a_body_the_document_calls_invalid_is_refused_whole(
    bank: Bank, books: Books, item: dict[str, Any], field: str
) -> None:
    if item.get("account_id") == "funded":
        item = {**item, "account_id": books.funded}
    before = await books_state(bank)

    response = await post_batch(bank, books.customer, [item])
    both = await post_batch(bank, books.customer, [item, debit(books.funded, "1.00")])

    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert any(detail["field"].startswith(field) for detail in error["details"]), error
    assert_error(both, 422, "VALIDATION_ERROR")
    assert await books_state(bank) == before


async def test_atomic_must_be_a_boolean(bank: Bank, books: Books) -> None:
    before = await books_state(bank)
    response = await bank.client.post(
        BATCH, json={"atomic": 1, "items": [debit(books.funded, "1.00")]}, headers=books.customer
    )
    assert_error(response, 422, "VALIDATION_ERROR")
    assert await books_state(bank) == before


async def test_prefer_respond_async_is_ignored(bank: Bank, books: Books) -> None:
    response = await bank.client.post(
        BATCH,
        json={"items": [debit(books.funded, "1.00")]},
        headers={**books.customer, "Prefer": "respond-async"},
    )
    assert response.status_code == 200, response.text
    assert "preference-applied" not in response.headers
    assert response.json()["items"][0]["transaction"]["status"] == "completed"


# --- events ---------------------------------------------------------------------------------


async def test_a_batchs_events_are_in_the_outbox_in_item_order_per_account(
    bank: Bank, books: Books
) -> None:
    items = [
        debit(books.funded, "1.00"),
        credit(books.empty, "2.00"),
        transfer(books.funded, books.empty, "3.00"),
        debit(books.funded, "4.00"),
        debit(books.empty, "1.00"),
        credit(books.funded, "6.00"),
    ]
    response = await post_batch(bank, books.staff, items)
    assert response.json()["completed"] == len(items), response.text
    legs = [item["transaction"] for item in response.json()["items"]]
    expected: dict[str, list[str]] = {books.funded: [], books.empty: []}
    for leg in legs:
        expected[leg["account_id"]].append(leg["transaction_id"])
        if leg["related_transaction_id"] is not None:
            expected[leg["counterparty_account_id"]].append(leg["related_transaction_id"])
    batch_legs = {leg_id for ids in expected.values() for leg_id in ids}

    async with bank.container.database.read() as connection:
        rows = (
            await connection.execute(
                select(outbox.c.event_key, outbox.c.payload)
                .where(outbox.c.event_type == EVENT_TRANSACTION_COMPLETED)
                .order_by(outbox.c.outbox_id)
            )
        ).all()
    published: dict[str, list[str]] = {books.funded: [], books.empty: []}
    for key, payload in rows:
        leg_id = json.loads(payload)["transaction_id"]
        if leg_id in batch_legs:
            published[key].append(leg_id)
    assert published == expected


# --- PostgreSQL with concurrency ------------------------------------------------------------


@pytest.fixture
async def pg_books(pg_bank: Bank) -> AsyncIterator[tuple[Bank, Books]]:
    yield pg_bank, await _books(pg_bank)


async def test_batches_in_both_directions_at_once_keep_exact_balances(
    pg_books: tuple[Bank, Books],
) -> None:
    """Two batches moving money both ways between the same accounts at the same time: no
    deadlock reaches the client, and the books are exact."""
    bank, books = pg_books
    forth = [transfer(books.funded, books.empty, "1.00")] * 20
    back = [transfer(books.empty, books.funded, "0.50")] * 20
    responses = await asyncio.gather(
        *(post_batch(bank, books.customer, items) for items in (forth, back, forth, back))
    )
    assert all(response.status_code == 200 for response in responses), [r.text for r in responses]
    completed = {
        "forth": sum(r.json()["completed"] for r in responses[0::2]),
        "back": sum(r.json()["completed"] for r in responses[1::2]),
    }
    moved = Decimal("1.00") * completed["forth"] - Decimal("0.50") * completed["back"]
    assert await bank.balance(books.funded, books.customer) == Decimal("100.00") - moved
    assert await bank.balance(books.empty, books.customer) == moved
    assert completed["forth"] == 40  # 100.00 covers every outgoing transfer


# --- the wrappers: metrics, cache invalidation, account locks -----------------------------


async def test_each_item_is_counted_like_a_single_movement(bank: Bank, books: Books) -> None:
    registry = bank.container.metrics.registry

    def counts() -> dict[str, float]:
        samples = {
            "debits": ("banking_money_movements_total", {"type": "debit", "status": "completed"}),
            "transfers": (
                "banking_money_movements_total",
                {"type": "transfer_out", "status": "completed"},
            ),
            "failed": ("banking_money_movements_total", {"type": "debit", "status": "failed"}),
            "declines": (
                "banking_money_movement_declines_total",
                {"type": "debit", "reason": "INSUFFICIENT_FUNDS"},
            ),
            "replays": ("banking_idempotent_replays_total", {"type": "debit"}),
        }
        return {
            name: registry.get_sample_value(metric, labels) or 0.0
            for name, (metric, labels) in samples.items()
        }

    items = [
        debit(books.funded, "1.00"),
        transfer(books.funded, books.empty, "1.00"),
        debit(books.funded, "1000.00"),
        debit(books.other, "1.00"),  # refused: not a movement
    ]
    before = counts()
    await post_batch(bank, books.customer, items, key="metered")
    once = counts()
    await post_batch(bank, books.customer, items, key="metered")
    twice = counts()

    assert {name: once[name] - before[name] for name in once} == {
        "debits": 1,
        "transfers": 1,
        "failed": 1,
        "declines": 1,
        "replays": 0,
    }
    # The retry moved nothing: only the two debit replays (the completed and the declined).
    assert {name: twice[name] - once[name] for name in once} == {
        "debits": 0,
        "transfers": 0,
        "failed": 0,
        "declines": 0,
        "replays": 2,
    }


async def test_a_cached_balance_is_dropped_when_a_batch_commits(bank: Bank, books: Books) -> None:
    assert await bank.balance(books.funded, books.customer) == Decimal("100.00")  # cached now
    assert await bank.balance(books.empty, books.customer) == Decimal("0.00")

    await post_batch(bank, books.customer, [transfer(books.funded, books.empty, "25.00")])

    assert await bank.balance(books.funded, books.customer) == Decimal("75.00")
    assert await bank.balance(books.empty, books.customer) == Decimal("25.00")


async def test_with_account_locks_a_busy_account_refuses_the_whole_batch(
    database_url: str,
) -> None:
    settings = make_settings(database_url, account_locks="memory", account_lock_wait_seconds=0.05)
    async with running_bank(settings) as bank:
        books = await _books(bank)
        locks = bank.container.cache.account_locks
        assert locks is not None
        items = [debit(books.funded, "1.00"), transfer(books.funded, books.empty, "2.00")]
        before = await books_state(bank)

        async with locks.hold([uuid.UUID(books.empty)]):
            busy = await post_batch(bank, books.customer, items)

        assert_error(busy, 409, "ACCOUNT_BUSY")
        assert busy.headers["retry-after"] == "1"
        assert await books_state(bank) == before
        done = await post_batch(bank, books.customer, items)
        assert done.json()["completed"] == 2
        assert await bank.balance(books.funded, books.customer) == Decimal("97.00")


async def test_a_batch_marks_its_caller_a_recent_writer(bank: Bank, books: Books) -> None:
    """With read replicas, the caller's reads stay on the primary after a batch (also after one
    that was refused: a batch may have stored declines)."""
    writers = MemoryRecentWriters(sticky_seconds=60)
    movements = RecordingWriters(bank.container.movements, writers)
    token = books.customer["Authorization"].removeprefix("Bearer ")
    actor = await bank.container.tokens.authenticate(token)
    item = BatchItem(
        TransactionType.DEBIT,
        DebitOrCredit(uuid.UUID(books.funded), Decimal("1.00"), "USD", None, None),
    )

    results = await movements.batch(actor, [item], atomic=False)

    assert [type(result).__name__ for result in results] == ["MovementResult"]
    assert await writers.wrote_recently(actor.user_id)
    other = Actor(uuid.uuid4(), "nobody", Role.CUSTOMER)
    with pytest.raises(BatchItemFailed):
        await movements.batch(other, [item], atomic=True)
    assert await writers.wrote_recently(other.user_id)
