"""The balance cache, in memory and on the real Redis: a second read is a hit, a write is seen
at once (also by a second API instance sharing the Redis), amounts stay exact strings."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from uuid import UUID

import pytest
import redis.asyncio as aioredis
from sqlalchemy import update

from banking.cache.balances import entry_key
from banking.domain.clock import utc_now
from banking.domain.records import Account, Balance
from banking.domain.roles import Role
from banking.events.outbox import BALANCE_SCHEMA_VERSION, EVENT_BALANCE_UPDATED
from banking.events.serialization import EventFormat, encode
from banking.events.transport import Message
from banking.storage.tables import balances
from banking.workers.balance_cache import BalanceCacheInvalidator
from tests.cache.conftest import BankFactory
from tests.conftest import Bank


def cache_count(bank: Bank, result: str) -> float:
    value = bank.container.metrics.registry.get_sample_value(
        "banking_cache_requests_total", {"cache": "balance", "result": result}
    )
    return value or 0.0


@pytest.fixture(params=["memory", "redis"])
def cache_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings for the embedded (memory) cache or the Redis one."""
    if request.param == "memory":
        return {}
    return {"REDIS_URL": request.getfixturevalue("redis_url")}


async def test_second_read_is_a_cache_hit_with_the_same_answer(
    database_url: str, cache_env: dict[str, str], bank_factory: BankFactory
) -> None:
    async with bank_factory(database_url, **cache_env) as bank:
        _, staff = await bank.user(Role.TELLER)
        customer_id, customer = await bank.user(Role.CUSTOMER)
        account_id = await bank.account(customer_id, staff, funded="1000.00")

        first = await bank.client.get(f"/api/v1/accounts/{account_id}/balance", headers=customer)
        hits_before = cache_count(bank, "hit")
        second = await bank.client.get(f"/api/v1/accounts/{account_id}/balance", headers=customer)

        assert first.status_code == second.status_code == 200
        assert second.json() == first.json()
        assert second.json()["available_balance"] == "1000.00"
        assert second.headers["ETag"] == first.headers["ETag"]
        assert cache_count(bank, "hit") == hits_before + 1


async def test_redis_entry_holds_exact_decimal_strings(
    database_url: str, redis_url: str, redis_client: aioredis.Redis, bank_factory: BankFactory
) -> None:
    async with bank_factory(database_url, REDIS_URL=redis_url) as bank:
        _, staff = await bank.user(Role.TELLER)
        customer_id, customer = await bank.user(Role.CUSTOMER)
        account_id = await bank.account(customer_id, staff, funded="0.10")
        await bank.client.post(
            "/api/v1/transactions/credit",
            json={"account_id": account_id, "amount": "0.20", "currency": "USD"},
            headers=staff,
        )
        assert await bank.balance(account_id, customer) == Decimal("0.30")

        stored = await redis_client.get(entry_key(UUID(account_id)))
        assert stored is not None
        entry = json.loads(stored)
        assert entry["balance"]["available_balance"] == "0.30"  # a string, never 0.30000000000004
        assert entry["balance"]["current_balance"] == "0.30"
        ttl_ms = await redis_client.pttl(entry_key(UUID(account_id)))
        assert 0 < ttl_ms <= 5000


async def test_debit_then_immediate_read_returns_the_new_balance(
    database_url: str, cache_env: dict[str, str], bank_factory: BankFactory
) -> None:
    async with bank_factory(database_url, **cache_env) as bank:
        _, staff = await bank.user(Role.TELLER)
        customer_id, customer = await bank.user(Role.CUSTOMER)
        account_id = await bank.account(customer_id, staff, funded="1000.00")
        destination = await bank.account(customer_id, staff)
        assert await bank.balance(account_id, customer) == Decimal("1000.00")  # now cached
        assert await bank.balance(destination, customer) == Decimal("0.00")

        for expected in ("900.00", "800.00", "700.00"):
            debit = await bank.client.post(
                "/api/v1/transactions/debit",
                json={"account_id": account_id, "amount": "100.00", "currency": "USD"},
                headers=customer,
            )
            assert debit.status_code == 200, debit.text
            assert await bank.balance(account_id, customer) == Decimal(expected)

        transfer = await bank.client.post(
            "/api/v1/transactions/transfer",
            json={
                "source_account_id": account_id,
                "destination_account_id": destination,
                "amount": "50.00",
                "currency": "USD",
            },
            headers=customer,
        )
        assert transfer.status_code == 200, transfer.text
        # Both sides of the transfer are fresh, not only the account the response names.
        assert await bank.balance(account_id, customer) == Decimal("650.00")
        assert await bank.balance(destination, customer) == Decimal("50.00")


async def test_a_second_api_instance_sharing_redis_never_reads_a_stale_balance(
    database_url: str, redis_url: str, bank_factory: BankFactory
) -> None:
    async with (
        bank_factory(database_url, REDIS_URL=redis_url) as first,
        bank_factory(database_url, REDIS_URL=redis_url) as second,
    ):
        _, staff = await first.user(Role.TELLER)
        customer_id, customer = await first.user(Role.CUSTOMER)
        account_id = await first.account(customer_id, staff, funded="1000.00")
        # Both instances have read (and cached, in the one shared Redis) the balance.
        assert await first.balance(account_id, customer) == Decimal("1000.00")
        assert await second.balance(account_id, customer) == Decimal("1000.00")

        for index in range(3):
            writer, reader = (first, second) if index % 2 == 0 else (second, first)
            debit = await writer.client.post(
                "/api/v1/transactions/debit",
                json={"account_id": account_id, "amount": "1.00", "currency": "USD"},
                headers=customer,
            )
            assert debit.status_code == 200, debit.text
            expected = Decimal("1000.00") - Decimal(index + 1)
            assert await reader.balance(account_id, customer) == expected
            assert await writer.balance(account_id, customer) == expected


async def test_embedded_caches_of_two_instances_are_their_own(
    database_url: str, bank_factory: BankFactory
) -> None:
    """Without Redis each process has its own memory cache: a write on one instance is not
    announced to the other, which may show the old balance for at most the TTL. That is why
    several API instances need REDIS_URL (or the balance-cache consumer)."""
    async with (
        bank_factory(database_url, BALANCE_CACHE_TTL_SECONDS=0.5) as first,
        bank_factory(database_url, BALANCE_CACHE_TTL_SECONDS=0.5) as second,
    ):
        _, staff = await first.user(Role.TELLER)
        customer_id, customer = await first.user(Role.CUSTOMER)
        account_id = await first.account(customer_id, staff, funded="10.00")
        assert await second.balance(account_id, customer) == Decimal("10.00")
        await first.client.post(
            "/api/v1/transactions/debit",
            json={"account_id": account_id, "amount": "1.00", "currency": "USD"},
            headers=customer,
        )
        assert await first.balance(account_id, customer) == Decimal("9.00")
        await asyncio.sleep(0.6)
        assert await second.balance(account_id, customer) == Decimal("9.00")


async def test_a_read_that_raced_a_write_does_not_store_the_old_balance(
    database_url: str, cache_env: dict[str, str], bank_factory: BankFactory
) -> None:
    """Reader misses and loads the old balance; a writer commits and invalidates; the reader
    then tries to store what it loaded. It must be refused, or the next read (by the writer's
    own client) would see the old balance."""
    async with bank_factory(database_url, **cache_env) as bank:
        cache = bank.container.cache.balances
        account_id = UUID(int=7)
        loaded = asyncio.Event()
        proceed = asyncio.Event()

        def record(amount: str, version: int) -> tuple[Account, Balance]:
            now = utc_now()
            account = Account(account_id, "123", UUID(int=1), "checking", "USD", True, now, now)
            return account, Balance(
                account_id, "USD", Decimal(amount), Decimal(amount), version, now
            )

        async def slow_old_load() -> tuple[Account, Balance]:
            loaded.set()
            await proceed.wait()
            return record("100.00", 1)

        async def new_load() -> tuple[Account, Balance]:
            return record("90.00", 2)

        racing_read = asyncio.create_task(cache.read_through(account_id, slow_old_load))
        await loaded.wait()
        await cache.invalidate(account_id)  # a writer's commit, or its balance event
        proceed.set()
        _, old = await racing_read
        assert old.available_balance == Decimal("100.00")  # that reader got what it read

        _, fresh = await cache.read_through(account_id, new_load)
        assert fresh.available_balance == Decimal("90.00")
        _, again = await cache.read_through(account_id, new_load)  # and now it is cached
        assert again.version == 2


async def test_a_balance_event_from_another_process_refreshes_the_cached_balance(
    database_url: str, cache_env: dict[str, str], bank_factory: BankFactory
) -> None:
    """A balance changed by another process (a worker applying an async command) reaches this
    API through its balance event: the ``balance-cache`` consumer drops the entry."""
    async with bank_factory(database_url, **cache_env) as bank:
        _, staff = await bank.user(Role.TELLER)
        customer_id, customer = await bank.user(Role.CUSTOMER)
        account_id = await bank.account(customer_id, staff, funded="100.00")
        assert await bank.balance(account_id, customer) == Decimal("100.00")  # cached

        # The other process's commit: this API's own commit hook never ran for it.
        async with bank.container.database.unit_of_work() as connection:
            await connection.execute(
                update(balances)
                .where(balances.c.account_id == UUID(account_id))
                .values(
                    current_balance=Decimal("105.00"),
                    available_balance=Decimal("105.00"),
                    version=balances.c.version + 1,
                )
            )
        assert await bank.balance(account_id, customer) == Decimal("100.00")  # not told yet

        value, content_type = encode(
            EVENT_BALANCE_UPDATED,
            BALANCE_SCHEMA_VERSION,
            {
                "account_id": account_id,
                "current_balance": "105.00",
                "available_balance": "105.00",
                "currency": "USD",
                "version": 99,
                "timestamp": utc_now().isoformat(),
            },
            EventFormat.JSON,
        )
        cache = bank.container.balance_cache
        assert cache is not None
        await BalanceCacheInvalidator(cache).handle(
            Message(
                topic="banking.accounts.balances",
                key=account_id,
                value=value,
                headers={"event_type": EVENT_BALANCE_UPDATED, "content_type": content_type},
            )
        )
        assert await bank.balance(account_id, customer) == Decimal("105.00")
