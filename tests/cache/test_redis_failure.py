"""Redis killed or slow while money moves: no money movement fails because of it, the books
stay exact, /ready says degraded; when Redis is back, cache and limits work again without
restarting the API. Each test runs its own redis-server (the project's script) to kill."""

from __future__ import annotations

import asyncio
import random
import time
from decimal import Decimal
from uuid import UUID

import redis.asyncio as aioredis

from banking.cache.balances import entry_key
from banking.domain.roles import Role
from banking.ledger.reconcile import reconcile
from tests.cache.conftest import BankFactory, PrivateRedis, unique_name
from tests.conftest import Bank

PASSWORD = "correct-horse-battery"
ACCOUNTS = 10
TRANSFERS = 400
CONCURRENCY = 16
RECOVERY_SECONDS_MAX = 10.0


def sample(bank: Bank, name: str, labels: dict[str, str] | None = None) -> float:
    return bank.container.metrics.registry.get_sample_value(name, labels or {}) or 0.0


async def ready(bank: Bank) -> tuple[int, dict[str, object]]:
    response = await bank.client.get("/ready")
    return response.status_code, response.json()


async def test_redis_killed_during_transfers_then_restarted(
    postgres_url: str, private_redis: PrivateRedis, bank_factory: BankFactory
) -> None:
    async with bank_factory(
        postgres_url,
        REDIS_URL=private_redis.url,
        ACCOUNT_LOCKS="redis",
        RATE_LIMIT_DEFAULT="100000/second",
        RATE_LIMIT_TOKEN="3/minute",
        REDIS_RETRY_SECONDS=1,
    ) as bank:
        _, staff = await bank.user(Role.TELLER)
        owner_id, owner = await bank.user(Role.CUSTOMER, name=unique_name("owner"))
        accounts = [await bank.account(owner_id, staff, funded="100.00") for _ in range(ACCOUNTS)]
        for account in accounts:
            assert await bank.balance(account, owner) == Decimal("100.00")  # cached in Redis
        assert await ready(bank) == (
            200,
            {"status": "ready", "checks": {"database": "ok", "redis": "ok"}},
        )

        rng = random.Random(11)
        gate = asyncio.Semaphore(CONCURRENCY)
        quarter_done = asyncio.Event()
        outcomes: list[tuple[int, str]] = []

        async def transfer(index: int) -> None:
            source, destination = rng.sample(accounts, 2)
            async with gate:
                response = await bank.client.post(
                    "/api/v1/transactions/transfer",
                    json={
                        "source_account_id": source,
                        "destination_account_id": destination,
                        "amount": f"{rng.randint(1, 2000) / 100:.2f}",
                        "currency": "USD",
                        "reference_id": f"t-{index}",
                    },
                    headers=owner,
                )
            code = "OK" if response.status_code == 200 else response.json()["error"]["code"]
            outcomes.append((response.status_code, code))
            if len(outcomes) >= TRANSFERS // 4:
                quarter_done.set()

        async def kill_redis_midway() -> None:
            await quarter_done.wait()
            await asyncio.to_thread(private_redis.stop)

        await asyncio.gather(kill_redis_midway(), *[transfer(i) for i in range(TRANSFERS)])

        # Every transfer got a business answer; none failed because Redis died.
        assert len(outcomes) == TRANSFERS
        assert set(outcomes) <= {(200, "OK"), (422, "INSUFFICIENT_FUNDS")}, set(outcomes)
        assert outcomes.count((200, "OK")) > TRANSFERS // 2
        balances = [await bank.balance(account, owner) for account in accounts]
        assert sum(balances, Decimal(0)) == Decimal("1000.00")
        assert min(balances) >= 0
        report = await reconcile(bank.container.unit_of_work)
        assert report.clean, report.problems

        status, body = await ready(bank)
        assert status == 200  # money still moves: degraded, not down
        assert body == {"status": "degraded", "checks": {"database": "ok", "redis": "degraded"}}
        assert sample(bank, "banking_redis_up") == 0
        assert sample(bank, "banking_redis_errors_total", {"operation": "lock_acquire"}) > 0
        # Limits fail open while Redis is down: the sign-in still works.
        token = await bank.client.post(
            "/api/v1/auth/token", data={"username": "nobody", "password": "x"}
        )
        assert token.status_code == 401
        assert sample(bank, "banking_rate_limit_fail_open_total", {"scope": "token"}) >= 1

        # Redis comes back; the same API (no restart) uses it again.
        await asyncio.to_thread(private_redis.start)
        deadline = time.monotonic() + RECOVERY_SECONDS_MAX
        while (await ready(bank))[1]["checks"] != {"database": "ok", "redis": "ok"}:
            assert time.monotonic() < deadline, "Redis did not come back in /ready"
            await asyncio.sleep(0.2)
        assert sample(bank, "banking_redis_up") == 1

        # The cache: a read fills the new Redis, the next one is a hit, both are exact.
        client = aioredis.Redis.from_url(private_redis.url)
        try:
            first = accounts[0]
            assert await bank.balance(first, owner) == balances[0]
            assert await client.exists(entry_key(UUID(first))) == 1
            hits = sample(
                bank, "banking_cache_requests_total", {"cache": "balance", "result": "hit"}
            )
            assert await bank.balance(first, owner) == balances[0]
            assert (
                sample(bank, "banking_cache_requests_total", {"cache": "balance", "result": "hit"})
                == hits + 1
            )
        finally:
            await client.aclose()

        # The limits: the token endpoint stops guessing again (3/minute).
        guesses = [
            await bank.client.post(
                "/api/v1/auth/token", data={"username": "mallory", "password": f"g{i}"}
            )
            for i in range(5)
        ]
        assert [g.status_code for g in guesses] == [401, 401, 401, 429, 429]

        # And money still moves, under the lock guard again.
        moved = await bank.client.post(
            "/api/v1/transactions/debit",
            json={"account_id": accounts[0], "amount": "0.01", "currency": "USD"},
            headers=owner,
        )
        assert moved.status_code in (200, 422), moved.text
        report = await reconcile(bank.container.unit_of_work)
        assert report.clean, report.problems


async def test_a_paused_redis_costs_a_request_at_most_a_short_timeout(
    postgres_url: str, private_redis: PrivateRedis, bank_factory: BankFactory
) -> None:
    async with bank_factory(
        postgres_url, REDIS_URL=private_redis.url, ACCOUNT_LOCKS="redis"
    ) as bank:
        _, staff = await bank.user(Role.TELLER)
        customer_id, customer = await bank.user(Role.CUSTOMER)
        account_id = await bank.account(customer_id, staff, funded="50.00")
        assert await bank.balance(account_id, customer) == Decimal("50.00")

        admin = aioredis.Redis.from_url(private_redis.url)
        try:
            await admin.execute_command("CLIENT", "PAUSE", "3000", "ALL")  # Redis hangs 3 s
            started = time.monotonic()
            debit = await bank.client.post(
                "/api/v1/transactions/debit",
                json={"account_id": account_id, "amount": "20.00", "currency": "USD"},
                headers=customer,
            )
            balance = await bank.client.get(
                f"/api/v1/accounts/{account_id}/balance", headers=customer
            )
            elapsed = time.monotonic() - started
        finally:
            await admin.execute_command("CLIENT", "UNPAUSE")
            await admin.aclose()

        assert debit.status_code == 200, debit.text
        assert balance.json()["available_balance"] == "30.00"
        assert elapsed < 1.5  # not the 3 s Redis hung for
        # After Redis answers again the write made while it hung is not served stale.
        await asyncio.sleep(3.5)
        assert await bank.balance(account_id, customer) == Decimal("30.00")


async def test_ready_does_not_report_redis_when_it_is_not_configured(
    database_url: str, bank_factory: BankFactory
) -> None:
    async with bank_factory(database_url) as bank:
        assert await ready(bank) == (200, {"status": "ready", "checks": {"database": "ok"}})
