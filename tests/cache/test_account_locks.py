"""The optional per-account lock guard (ACCOUNT_LOCKS): money stays exact under it, it is
always released, a busy account answers 409 with Retry-After, a crashed holder expires."""

from __future__ import annotations

import asyncio
import random
import time
from decimal import Decimal
from uuid import UUID

import httpx
import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError

from banking.cache.locks import KEY_PREFIX, lock_key
from banking.domain.roles import Role
from banking.ledger.reconcile import reconcile
from tests.cache.conftest import BankFactory
from tests.conftest import Bank, make_settings

RETRIES_MAX = 30


async def debit_until_answered(
    bank: Bank, headers: dict[str, str], account_id: str, amount: str, reference_id: str
) -> tuple[int, str]:
    """Debit as a well-behaved client does: on 409 ACCOUNT_BUSY wait Retry-After and send the
    same request again (same idempotency key), until a definite answer."""
    for _ in range(RETRIES_MAX):
        response = await bank.client.post(
            "/api/v1/transactions/debit",
            json={
                "account_id": account_id,
                "amount": amount,
                "currency": "USD",
                "reference_id": reference_id,
            },
            headers=headers,
        )
        code = "OK" if response.status_code == 200 else response.json()["error"]["code"]
        if code != "ACCOUNT_BUSY":
            return response.status_code, code
        assert response.status_code == 409
        await asyncio.sleep(float(response.headers["Retry-After"]) * random.uniform(0.5, 1.0))
    raise AssertionError(f"{reference_id} still busy after {RETRIES_MAX} tries")


async def lock_keys(client: aioredis.Redis) -> list[str]:
    return [key async for key in client.scan_iter(match=f"{KEY_PREFIX}*")]


async def test_redis_lock_guard_200_concurrent_debits_exactly_100_succeed_no_lock_left(
    postgres_url: str,
    redis_url: str,
    redis_client: aioredis.Redis,
    bank_factory: BankFactory,
) -> None:
    async with bank_factory(postgres_url, REDIS_URL=redis_url, ACCOUNT_LOCKS="redis") as bank:
        _, staff = await bank.user(Role.TELLER)
        customer_id, customer = await bank.user(Role.CUSTOMER)
        account_id = await bank.account(customer_id, staff, funded="1000.00")

        outcomes = await asyncio.gather(
            *[
                debit_until_answered(bank, customer, account_id, "10.00", f"debit-{index}")
                for index in range(200)
            ]
        )

        assert outcomes.count((200, "OK")) == 100
        assert outcomes.count((422, "INSUFFICIENT_FUNDS")) == 100
        assert await bank.balance(account_id, customer) == Decimal("0.00")
        report = await reconcile(bank.container.unit_of_work)
        assert report.clean, report.problems
        assert await lock_keys(redis_client) == []
        waits = bank.container.metrics.registry.get_sample_value(
            "banking_account_lock_wait_seconds_count"
        )
        assert waits is not None and waits >= 200


async def test_memory_lock_guard_keeps_the_same_outcome(
    database_url: str, bank_factory: BankFactory
) -> None:
    async with bank_factory(database_url, ACCOUNT_LOCKS="memory") as bank:
        _, staff = await bank.user(Role.TELLER)
        customer_id, customer = await bank.user(Role.CUSTOMER)
        account_id = await bank.account(customer_id, staff, funded="500.00")
        outcomes = await asyncio.gather(
            *[
                debit_until_answered(bank, customer, account_id, "10.00", f"debit-{index}")
                for index in range(100)
            ]
        )
        assert outcomes.count((200, "OK")) == 50
        assert outcomes.count((422, "INSUFFICIENT_FUNDS")) == 50
        assert await bank.balance(account_id, customer) == Decimal("0.00")


async def test_the_lock_is_released_when_the_request_fails(
    postgres_url: str,
    redis_url: str,
    redis_client: aioredis.Redis,
    bank_factory: BankFactory,
) -> None:
    # A short wait bound: a lock left behind (10 s timeout) would turn the last debit into 409.
    async with bank_factory(
        postgres_url, REDIS_URL=redis_url, ACCOUNT_LOCKS="redis", ACCOUNT_LOCK_WAIT_SECONDS=0.3
    ) as bank:
        _, staff = await bank.user(Role.TELLER)
        customer_id, customer = await bank.user(Role.CUSTOMER)
        stranger_id, _ = await bank.user(Role.CUSTOMER)
        account_id = await bank.account(customer_id, staff, funded="10.00")
        euro_account = await bank.account(customer_id, staff, currency="EUR", funded="10.00")
        strangers_account = await bank.account(stranger_id, staff, funded="10.00")

        async def debit(body: dict[str, str]) -> httpx.Response:
            return await bank.client.post("/api/v1/transactions/debit", json=body, headers=customer)

        failures = {
            "INSUFFICIENT_FUNDS": {"account_id": account_id, "amount": "99.00", "currency": "USD"},
            "CURRENCY_MISMATCH": {"account_id": euro_account, "amount": "1.00", "currency": "USD"},
            "ACCOUNT_NOT_FOUND": {
                "account_id": strangers_account,
                "amount": "1.00",
                "currency": "USD",
            },
        }
        for code, body in failures.items():
            response = await debit(body)
            assert response.status_code in (404, 422), response.text
            assert response.json()["error"]["code"] == code
            assert await lock_keys(redis_client) == []
        transfer = await bank.client.post(
            "/api/v1/transactions/transfer",
            json={
                "source_account_id": account_id,
                "destination_account_id": euro_account,
                "amount": "1.00",
                "currency": "USD",
            },
            headers=customer,
        )
        assert transfer.json()["error"]["code"] == "CURRENCY_MISMATCH"
        assert await lock_keys(redis_client) == []

        started = time.monotonic()
        for account in (account_id, euro_account):
            currency = "USD" if account == account_id else "EUR"
            ok = await debit({"account_id": account, "amount": "1.00", "currency": currency})
            assert ok.status_code == 200, ok.text
        assert time.monotonic() - started < 1.0


async def test_a_busy_account_answers_409_and_a_crashed_holder_expires(
    postgres_url: str,
    redis_url: str,
    redis_client: aioredis.Redis,
    bank_factory: BankFactory,
) -> None:
    async with bank_factory(
        postgres_url, REDIS_URL=redis_url, ACCOUNT_LOCKS="redis", ACCOUNT_LOCK_WAIT_SECONDS=0.2
    ) as bank:
        _, staff = await bank.user(Role.TELLER)
        customer_id, customer = await bank.user(Role.CUSTOMER)
        account_id = await bank.account(customer_id, staff, funded="100.00")
        # A holder that crashed while holding the lock: nobody will ever release it.
        await redis_client.set(lock_key(UUID(account_id)), "crashed-holder", px=1500)

        body = {
            "account_id": account_id,
            "amount": "30.00",
            "currency": "USD",
            "reference_id": "rent",
        }
        busy = await bank.client.post("/api/v1/transactions/debit", json=body, headers=customer)
        assert busy.status_code == 409, busy.text
        assert busy.json()["error"]["code"] == "ACCOUNT_BUSY"
        assert busy.headers["Retry-After"] == "1"
        assert await bank.balance(account_id, customer) == Decimal("100.00")  # nothing done

        await asyncio.sleep(1.6)  # the lock's own timeout frees the account
        retried = await bank.client.post("/api/v1/transactions/debit", json=body, headers=customer)
        assert retried.status_code == 200, retried.text
        assert await bank.balance(account_id, customer) == Decimal("70.00")
        assert await lock_keys(redis_client) == []


async def test_opposite_transfers_under_the_lock_guard_never_deadlock(
    postgres_url: str, redis_url: str, bank_factory: BankFactory
) -> None:
    async with bank_factory(
        postgres_url, REDIS_URL=redis_url, ACCOUNT_LOCKS="redis", ACCOUNT_LOCK_WAIT_SECONDS=10
    ) as bank:
        _, staff = await bank.user(Role.TELLER)
        customer_id, customer = await bank.user(Role.CUSTOMER)
        a = await bank.account(customer_id, staff, funded="100.00")
        b = await bank.account(customer_id, staff, funded="100.00")

        async def transfer(source: str, destination: str) -> int:
            response = await bank.client.post(
                "/api/v1/transactions/transfer",
                json={
                    "source_account_id": source,
                    "destination_account_id": destination,
                    "amount": "1.00",
                    "currency": "USD",
                },
                headers=customer,
            )
            return response.status_code

        statuses = await asyncio.gather(
            *[transfer(a, b) if index % 2 else transfer(b, a) for index in range(100)]
        )
        assert statuses == [200] * 100
        assert await bank.balance(a, customer) == Decimal("100.00")
        assert await bank.balance(b, customer) == Decimal("100.00")


def test_the_redis_guard_without_redis_url_refuses_to_start() -> None:
    with pytest.raises(ValidationError, match="ACCOUNT_LOCKS=redis needs REDIS_URL"):
        make_settings("sqlite+aiosqlite:///unused.db", account_locks="redis")
