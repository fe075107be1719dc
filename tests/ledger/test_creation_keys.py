"""Idempotent account creation and the paginated account list, decided by the core alone (the
in-memory store): replay, conflict, bad keys, scoping per caller, expiry, pages."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from uuid import UUID, uuid4

import pytest

from banking.domain.clock import utc_now
from banking.domain.errors import IdempotencyConflict, ValidationFailed
from banking.domain.roles import Role
from banking.ledger.accounts import AccountService
from banking.ledger.creation_keys import (
    ACCOUNT_CREATE,
    CreationKey,
    check_key,
    differing_fields,
    fingerprint_of,
)
from banking.ledger.movements import BATCH_KEY_LENGTH_MAX
from tests.support.ledger import Core
from tests.support.memory_store import MemoryUnitOfWork


async def test_a_retry_with_the_same_key_answers_the_same_account(
    core: Core, memory: MemoryUnitOfWork
) -> None:
    customer = await core.user()
    first = await core.accounts.open_once(
        customer, account_type="savings", currency="usd", customer_id=None, idempotency_key="k-1"
    )
    again = await core.accounts.open_once(
        customer, account_type="savings", currency="USD", customer_id=None, idempotency_key="k-1"
    )
    assert (first.replayed, again.replayed) == (False, True)
    assert again.account == first.account
    assert len(memory.books.accounts) == 1


async def test_the_same_key_with_other_parameters_is_a_conflict_naming_them(
    core: Core, memory: MemoryUnitOfWork
) -> None:
    customer = await core.user()
    await core.accounts.open_once(
        customer, account_type="savings", currency="USD", customer_id=None, idempotency_key="k"
    )
    before = memory.books.snapshot()

    with pytest.raises(IdempotencyConflict) as raised:
        await core.accounts.open_once(
            customer, account_type="loan", currency="EUR", customer_id=None, idempotency_key="k"
        )

    assert raised.value.details["fields"] == ["account_type", "currency"]
    assert "account_type, currency differ" in raised.value.message
    assert memory.books.accounts == before.accounts
    assert memory.books.creation_keys == before.creation_keys


@pytest.mark.parametrize("key", ["", "x" * (BATCH_KEY_LENGTH_MAX + 1), "tab\there", "nl\n"])
async def test_a_bad_key_is_refused_and_opens_nothing(
    core: Core, memory: MemoryUnitOfWork, key: str
) -> None:
    customer = await core.user()
    with pytest.raises(ValidationFailed) as raised:
        await core.accounts.open_once(
            customer, account_type="checking", currency="USD", customer_id=None, idempotency_key=key
        )
    assert raised.value.field == "idempotency_key"
    assert memory.books.accounts == {} and memory.books.creation_keys == {}


def test_the_longest_printable_key_is_accepted() -> None:
    assert check_key("k" * BATCH_KEY_LENGTH_MAX) == "k" * BATCH_KEY_LENGTH_MAX


async def test_a_key_belongs_to_its_caller(core: Core, memory: MemoryUnitOfWork) -> None:
    alice, bob = await core.user(), await core.user()
    for_alice = await core.accounts.open_once(
        alice, account_type="checking", currency="USD", customer_id=None, idempotency_key="same"
    )
    for_bob = await core.accounts.open_once(
        bob, account_type="checking", currency="USD", customer_id=None, idempotency_key="same"
    )
    assert not for_bob.replayed
    assert for_bob.account.account_id != for_alice.account.account_id
    assert for_bob.account.customer_id == bob.user_id
    assert len(memory.books.accounts) == 2


async def test_concurrent_duplicates_open_one_account(core: Core, memory: MemoryUnitOfWork) -> None:
    teller, customer = await core.user(Role.TELLER), await core.user()
    opened = await asyncio.gather(
        *(
            core.accounts.open_once(
                teller,
                account_type="checking",
                currency="USD",
                customer_id=customer.user_id,
                idempotency_key="burst",
            )
            for _ in range(20)
        )
    )
    assert len({result.account.account_id for result in opened}) == 1
    assert sum(not result.replayed for result in opened) == 1
    assert len(memory.books.accounts) == 1


async def test_an_expired_key_may_be_used_again(memory: MemoryUnitOfWork, core: Core) -> None:
    accounts = AccountService(memory, key_retention_hours=1.0)
    customer = await core.user()
    first = await accounts.open_once(
        customer, account_type="checking", currency="USD", customer_id=None, idempotency_key="old"
    )
    index = (ACCOUNT_CREATE, customer.user_id, "old")
    stored = memory.books.creation_keys[index]
    memory.books.creation_keys[index] = replace(
        stored, created_at=stored.created_at - timedelta(hours=1, seconds=1)
    )

    again = await accounts.open_once(
        customer, account_type="loan", currency="EUR", customer_id=None, idempotency_key="old"
    )

    assert not again.replayed and again.account.account_id != first.account.account_id
    assert memory.books.creation_keys[index].resource_id == again.account.account_id


async def test_a_failed_creation_leaves_the_key_free(core: Core, memory: MemoryUnitOfWork) -> None:
    teller = await core.user(Role.TELLER)
    other_teller = await core.user(Role.TELLER)
    with pytest.raises(ValidationFailed):
        await core.accounts.open_once(
            teller,
            account_type="checking",
            currency="USD",
            customer_id=other_teller.user_id,  # not a customer
            idempotency_key="k",
        )
    assert memory.books.creation_keys == {} and memory.books.accounts == {}


def test_the_fingerprint_ignores_order_and_names_what_differs() -> None:
    assert fingerprint_of({"a": "1", "b": "2"}) == fingerprint_of({"b": "2", "a": "1"})
    assert fingerprint_of({"a": "1"}) != fingerprint_of({"a": "2"})
    stored = CreationKey(ACCOUNT_CREATE, uuid4(), "k", {"a": "1", "b": "2"}, uuid4(), utc_now())
    assert differing_fields(stored, {"a": "1", "b": "3"}) == ["b"]


async def test_pages_walk_every_visible_account_exactly_once(core: Core) -> None:
    teller, alice, bob = await core.user(Role.TELLER), await core.user(), await core.user()
    mine = set()
    for index in range(7):
        account, _ = await core.accounts.open(
            teller, account_type="checking", currency="USD", customer_id=alice.user_id
        )
        mine.add(account.account_id)
        if index % 2 == 0:
            await core.accounts.open(
                teller, account_type="checking", currency="USD", customer_id=bob.user_id
            )

    seen: list[UUID] = []
    cursor = None
    while True:
        page = await core.accounts.page(alice, cursor=cursor, page_size=3)
        seen.extend(account.account_id for account in page.accounts)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(seen) == len(mine) and set(seen) == mine

    everything = await core.accounts.page(teller, page_size=100)
    assert len(everything.accounts) == 11 and everything.next_cursor is None


@pytest.mark.parametrize(
    ("cursor", "page_size", "field"),
    [("not-a-cursor", None, "cursor"), (None, 0, "page_size"), (None, 501, "page_size")],
)
async def test_a_bad_cursor_or_page_size_is_refused(
    core: Core, cursor: str | None, page_size: int | None, field: str
) -> None:
    customer = await core.user()
    with pytest.raises(ValidationFailed) as raised:
        await core.accounts.page(customer, cursor=cursor, page_size=page_size)
    assert raised.value.field == field
