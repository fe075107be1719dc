"""``Idempotency-Key`` on ``POST /api/v1/accounts`` and ``POST /api/v1/users``, and the account
list a page at a time, on SQLite and PostgreSQL: replays answer the same resource, conflicts
and bad input answer the envelope and create nothing, keys belong to their caller, concurrent
duplicates create one resource."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from banking.domain.clock import utc_now
from banking.domain.roles import Role
from banking.ledger.movements import BATCH_KEY_LENGTH_MAX
from banking.storage.tables import accounts, idempotency_keys, users
from tests.conftest import Bank

PASSWORD = "correct-horse-battery"


async def _counts(bank: Bank) -> dict[str, Any]:
    async with bank.container.database.read() as connection:
        counted = {
            table.name: (
                await connection.execute(select(func.count()).select_from(table))
            ).scalar_one()
            for table in (accounts, users, idempotency_keys)
        }
    return {**counted, **await bank.snapshot()}


async def _open(bank: Bank, headers: dict[str, str], key: str | None, **body: Any) -> Any:
    sent = {"account_type": "checking", "currency": "USD", **body}
    extra = {} if key is None else {"Idempotency-Key": key}
    return await bank.client.post("/api/v1/accounts", json=sent, headers={**headers, **extra})


def _user_body(name: str, **changes: str) -> dict[str, str]:
    return {
        "username": name,
        "email": f"{name}@example.com",
        "password": PASSWORD,
        "role": "customer",
        **changes,
    }


# --- accounts ------------------------------------------------------------------------------


async def test_a_retry_answers_the_account_the_first_request_opened(
    bank: Bank, staff: dict[str, str]
) -> None:
    customer_id, _ = await bank.user(Role.CUSTOMER)
    before = await _counts(bank)

    first = await _open(bank, staff, "open-1", customer_id=str(customer_id))
    again = await _open(bank, staff, "open-1", customer_id=str(customer_id))

    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["Location"] == first.headers["Location"]
    after = await _counts(bank)
    assert after["accounts"] == before["accounts"] + 1


async def test_the_same_key_with_other_parameters_is_409_and_opens_nothing(
    bank: Bank, staff: dict[str, str]
) -> None:
    customer_id, _ = await bank.user(Role.CUSTOMER)
    first = await _open(bank, staff, "k", customer_id=str(customer_id))
    assert first.status_code == 201
    before = await _counts(bank)

    conflict = await _open(
        bank, staff, "k", customer_id=str(customer_id), currency="EUR", account_type="savings"
    )

    assert conflict.status_code == 409, conflict.text
    error = conflict.json()["error"]
    assert error["code"] == "IDEMPOTENCY_CONFLICT"
    assert "account_type, currency differ" in error["message"]
    assert await _counts(bank) == before


@pytest.mark.parametrize(
    "key", ["", "x" * (BATCH_KEY_LENGTH_MAX + 1), "bell\x07", "del\x7f"], ids=repr
)
async def test_a_bad_key_answers_the_envelope_and_opens_nothing(
    bank: Bank, staff: dict[str, str], key: str
) -> None:
    customer_id, _ = await bank.user(Role.CUSTOMER)
    before = await _counts(bank)

    refused = await _open(bank, staff, key, customer_id=str(customer_id))

    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "VALIDATION_ERROR"
    assert await _counts(bank) == before


async def test_a_key_of_one_caller_does_not_collide_with_anothers(bank: Bank) -> None:
    _, alice = await bank.user(Role.CUSTOMER)
    _, bob = await bank.user(Role.CUSTOMER)

    for_alice = await _open(bank, alice, "my-first-account")
    for_bob = await _open(bank, bob, "my-first-account")

    assert for_alice.status_code == for_bob.status_code == 201
    assert "Idempotent-Replayed" not in for_bob.headers
    assert for_alice.json()["account_id"] != for_bob.json()["account_id"]
    assert for_alice.json()["customer_id"] != for_bob.json()["customer_id"]


async def test_an_expired_key_opens_a_new_account(bank: Bank) -> None:
    _, customer = await bank.user(Role.CUSTOMER)
    first = await _open(bank, customer, "yearly")

    async with bank.container.database.unit_of_work() as connection:
        await connection.execute(
            update(idempotency_keys).values(created_at=utc_now() - timedelta(hours=25))
        )
    again = await _open(bank, customer, "yearly", currency="EUR")

    assert again.status_code == 201, again.text
    assert "Idempotent-Replayed" not in again.headers
    assert again.json()["account_id"] != first.json()["account_id"]


async def test_without_a_key_every_request_opens_an_account(bank: Bank) -> None:
    _, customer = await bank.user(Role.CUSTOMER)
    first, second = await _open(bank, customer, None), await _open(bank, customer, None)
    assert first.json()["account_id"] != second.json()["account_id"]


# --- users ---------------------------------------------------------------------------------


async def test_a_user_creation_retried_answers_the_same_user(bank: Bank) -> None:
    _, admin = await bank.user(Role.ADMIN)
    before = await _counts(bank)
    keyed = {**admin, "Idempotency-Key": "hire-dana"}

    first = await bank.client.post("/api/v1/users", json=_user_body("dana"), headers=keyed)
    again = await bank.client.post("/api/v1/users", json=_user_body("dana"), headers=keyed)

    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert (await _counts(bank))["users"] == before["users"] + 1


async def test_a_user_retry_with_another_password_is_a_conflict_and_the_table_keeps_no_secret(
    bank: Bank,
) -> None:
    _, admin = await bank.user(Role.ADMIN)
    keyed = {**admin, "Idempotency-Key": "hire-erin"}
    first = await bank.client.post("/api/v1/users", json=_user_body("erin"), headers=keyed)
    assert first.status_code == 201
    before = await _counts(bank)

    other_password = _user_body("erin", password="another-long-password")
    conflict = await bank.client.post("/api/v1/users", json=other_password, headers=keyed)
    other_role = _user_body("erin", role="teller", password="another-long-password")
    both = await bank.client.post("/api/v1/users", json=other_role, headers=keyed)

    assert conflict.status_code == both.status_code == 409, (conflict.text, both.text)
    assert conflict.json()["error"]["code"] == "IDEMPOTENCY_CONFLICT"
    assert "password differs" in conflict.json()["error"]["message"]
    assert "password, role differ" in both.json()["error"]["message"]
    assert await _counts(bank) == before
    async with bank.container.database.read() as connection:
        rows = (await connection.execute(select(idempotency_keys))).all()
        hashes = (await connection.execute(select(users.c.password_hash))).scalars().all()
    stored = repr([tuple(row) for row in rows])
    assert PASSWORD not in stored and "password" not in stored
    assert not any(password_hash in stored for password_hash in hashes)


async def test_a_user_creation_with_a_bad_key_creates_nobody(bank: Bank) -> None:
    _, admin = await bank.user(Role.ADMIN)
    before = await _counts(bank)
    refused = await bank.client.post(
        "/api/v1/users", json=_user_body("fred"), headers={**admin, "Idempotency-Key": ""}
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "VALIDATION_ERROR"
    assert await _counts(bank) == before


async def test_a_customer_with_a_key_still_cannot_create_users(bank: Bank) -> None:
    _, customer = await bank.user(Role.CUSTOMER)
    before = await _counts(bank)
    refused = await bank.client.post(
        "/api/v1/users", json=_user_body("gina"), headers={**customer, "Idempotency-Key": "k"}
    )
    assert refused.status_code == 403, refused.text
    assert await _counts(bank) == before


# --- concurrency (PostgreSQL) --------------------------------------------------------------


@pytest.mark.postgres
async def test_twenty_concurrent_duplicates_open_one_account(pg_bank: Bank) -> None:
    _, teller = await pg_bank.user(Role.TELLER)
    customer_id, _ = await pg_bank.user(Role.CUSTOMER)
    before = await _counts(pg_bank)

    answers = await asyncio.gather(
        *(_open(pg_bank, teller, "burst", customer_id=str(customer_id)) for _ in range(20))
    )

    assert [answer.status_code for answer in answers] == [201] * 20
    assert len({answer.json()["account_id"] for answer in answers}) == 1
    assert sum("Idempotent-Replayed" not in answer.headers for answer in answers) == 1
    assert (await _counts(pg_bank))["accounts"] == before["accounts"] + 1


@pytest.mark.postgres
async def test_twenty_concurrent_duplicates_create_one_user(pg_bank: Bank) -> None:
    _, admin = await pg_bank.user(Role.ADMIN)
    before = await _counts(pg_bank)
    keyed = {**admin, "Idempotency-Key": "hire-hana"}

    answers = await asyncio.gather(
        *(
            pg_bank.client.post("/api/v1/users", json=_user_body("hana"), headers=keyed)
            for _ in range(20)
        )
    )

    assert [answer.status_code for answer in answers] == [201] * 20, [a.text for a in answers]
    assert len({answer.json()["user_id"] for answer in answers}) == 1
    assert (await _counts(pg_bank))["users"] == before["users"] + 1


# --- the account list, a page at a time ----------------------------------------------------


async def test_pages_walk_all_of_a_customers_accounts_exactly_once(
    bank: Bank, staff: dict[str, str]
) -> None:
    alice_id, alice = await bank.user(Role.CUSTOMER)
    bob_id, bob = await bank.user(Role.CUSTOMER)
    mine = {await bank.account(alice_id, staff) for _ in range(5)}
    theirs = {await bank.account(bob_id, staff) for _ in range(2)}

    seen: list[str] = []
    params: dict[str, Any] = {"page_size": 2}
    while True:
        page = await bank.client.get("/api/v1/accounts", params=params, headers=alice)
        assert page.status_code == 200, page.text
        seen.extend(account["account_id"] for account in page.json()["accounts"])
        if page.json()["next_cursor"] is None:
            break
        params["cursor"] = page.json()["next_cursor"]

    assert len(seen) == len(mine) and set(seen) == mine
    everything = await bank.client.get("/api/v1/accounts", headers=staff)
    assert {a["account_id"] for a in everything.json()["accounts"]} >= mine | theirs
    assert everything.json()["next_cursor"] is None
    own = await bank.client.get("/api/v1/accounts", headers=bob)
    assert {a["account_id"] for a in own.json()["accounts"]} == theirs


@pytest.mark.parametrize(
    "params",
    [{"cursor": "bm90LWEtY3Vyc29y"}, {"page_size": 0}, {"page_size": 100_000}, {"page_size": "x"}],
    ids=["cursor", "zero", "too-big", "not-a-number"],
)
async def test_a_bad_cursor_or_page_size_is_422_and_changes_nothing(
    bank: Bank, staff: dict[str, str], params: dict[str, Any]
) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    await bank.account(customer_id, staff)
    before = await _counts(bank)

    refused = await bank.client.get("/api/v1/accounts", params=params, headers=customer)

    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "VALIDATION_ERROR"
    assert await _counts(bank) == before
