"""Read replicas on a real primary and two real streaming replicas (docs/replicas.md): which
reads they serve, what a client sees when one stops, lags or all are down, and that nobody
reads their own write stale."""

from __future__ import annotations

import asyncio
import re
import uuid
from decimal import Decimal

import httpx
import pytest

from banking.domain.roles import Role
from tests.conftest import Bank
from tests.replicas.conftest import Replicas, stop_replica_immediately

pytestmark = pytest.mark.postgres

REPLICA_NAMES = ("127.0.0.1:55433", "127.0.0.1:55434")


async def metric(client: httpx.AsyncClient, name: str, **labels: str) -> float:
    text = (await client.get("/metrics")).text
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    pattern = rf"^{re.escape(name)}\{{{re.escape(wanted)}\}} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    assert found is not None, f"{name}{{{wanted}}} not exported"
    return float(found.group(1))


async def reads(bank: Bank) -> tuple[float, float]:
    """(primary, replica) counts of ``banking_db_reads_total``."""
    primary = await metric(bank.client, "banking_db_reads_total", target="primary")
    replica = await metric(bank.client, "banking_db_reads_total", target="replica")
    return primary, replica


async def history_amounts(bank: Bank, account_id: str, headers: dict[str, str]) -> list[str]:
    response = await bank.client.get(
        f"/api/v1/accounts/{account_id}/transactions", params={"page_size": 200}, headers=headers
    )
    assert response.status_code == 200, response.text
    return [leg["amount"] for leg in response.json()["transactions"]]


async def wait_healthy(bank: Bank, *names: str, seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    for name in names:
        while await metric(bank.client, "banking_db_replica_healthy", replica=name) != 1:
            assert asyncio.get_running_loop().time() < deadline, f"{name} never healthy"
            await bank.client.get("/health")
            await asyncio.sleep(0.1)


async def funded_customer(
    bank: Bank, staff: dict[str, str], amount: str = "1000.00"
) -> tuple[uuid.UUID, dict[str, str], str]:
    user_id, headers = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(user_id, staff, funded=amount)
    return user_id, headers, account_id


async def test_history_reads_are_served_by_a_replica(replica_bank: Bank) -> None:
    bank = replica_bank
    _, staff = await bank.user(Role.TELLER)
    _, customer, account_id = await funded_customer(bank, staff, "250.00")
    # The customer never wrote: their reads may go to a replica at once.
    await history_amounts(bank, account_id, customer)  # starts the lag checker
    await wait_healthy(bank, *REPLICA_NAMES)
    primary_before, replica_before = await reads(bank)
    for _ in range(20):
        assert await history_amounts(bank, account_id, customer) == ["250.00"]
    primary_after, replica_after = await reads(bank)
    assert replica_after - replica_before == 20
    assert primary_after == primary_before
    # Both replicas are measured, caught up (no writes since) and healthy.
    for name in REPLICA_NAMES:
        assert await metric(bank.client, "banking_db_replica_lag_seconds", replica=name) < 1.0


async def test_a_replica_stopped_mid_load_changes_nothing_a_client_sees(
    replica_bank: Bank,
) -> None:
    bank = replica_bank
    _, staff = await bank.user(Role.TELLER)
    _, auditor = await bank.user(Role.AUDITOR)
    customers = [await funded_customer(bank, staff, "100.00") for _ in range(4)]
    await history_amounts(bank, customers[0][2], auditor)
    await wait_healthy(bank, *REPLICA_NAMES)
    stopped = asyncio.Event()
    problems: list[str] = []

    async def writer(headers: dict[str, str], account_id: str) -> None:
        expected = Decimal("100.00")
        for _ in range(25):
            response = await bank.client.post(
                "/api/v1/transactions/debit",
                json={"account_id": account_id, "amount": "1.00", "currency": "USD"},
                headers=headers,
            )
            if response.status_code != 200:
                problems.append(f"debit {response.status_code} {response.text}")
                continue
            expected -= Decimal("1.00")
            seen = await bank.balance(account_id, headers)
            if seen != expected:
                problems.append(f"own balance {seen} after the write, expected {expected}")
            legs = await history_amounts(bank, account_id, headers)
            if len(legs) != 1 + int(Decimal("100.00") - expected):
                problems.append(f"own history has {len(legs)} legs")

    async def reader() -> int:
        served_after_stop = 0
        for _ in range(150):
            for _, _, account_id in customers:
                response = await bank.client.get(
                    f"/api/v1/accounts/{account_id}/transactions", headers=auditor
                )
                if response.status_code != 200:
                    problems.append(f"auditor read {response.status_code} {response.text}")
                served_after_stop += stopped.is_set()
            await asyncio.sleep(0)
        return served_after_stop

    async def stop_one() -> None:
        await asyncio.sleep(0.5)
        await asyncio.to_thread(stop_replica_immediately, 1)
        stopped.set()

    _, replica_before = await reads(bank)
    reading = asyncio.create_task(reader())
    await asyncio.gather(
        *(writer(headers, account_id) for _, headers, account_id in customers), stop_one()
    )
    served_after_stop = await reading
    assert problems == []
    assert served_after_stop > 0, "no read ran after the replica stopped"
    _, replica_after = await reads(bank)
    assert replica_after > replica_before
    assert await metric(bank.client, "banking_db_replica_healthy", replica=REPLICA_NAMES[0]) == 0
    # The other replica kept serving after the stop.
    replica_mid = replica_after
    for _, _, account_id in customers:
        await history_amounts(bank, account_id, auditor)
    assert (await reads(bank))[1] - replica_mid == len(customers)


async def test_a_replica_lagging_beyond_the_bound_is_skipped(
    replica_bank: Bank, replicas: Replicas
) -> None:
    bank = replica_bank
    _, staff = await bank.user(Role.TELLER)
    _, auditor = await bank.user(Role.AUDITOR)
    _, _, account_id = await funded_customer(bank, staff, "10.00")
    await history_amounts(bank, account_id, auditor)
    await wait_healthy(bank, *REPLICA_NAMES)
    await replicas.pause(1)
    try:
        for _ in range(5):  # writes the paused replica does not replay
            credited = await bank.client.post(
                "/api/v1/transactions/credit",
                json={"account_id": account_id, "amount": "1.00", "currency": "USD"},
                headers=staff,
            )
            assert credited.status_code == 200, credited.text
        await asyncio.sleep(1.5)  # past the lag bound
        lag = await metric(bank.client, "banking_db_replica_lag_seconds", replica=REPLICA_NAMES[0])
        assert lag == float("inf")
        assert (
            await metric(bank.client, "banking_db_replica_healthy", replica=REPLICA_NAMES[0]) == 0
        )
        assert (
            await metric(bank.client, "banking_db_replica_healthy", replica=REPLICA_NAMES[1]) == 1
        )
        _, replica_before = await reads(bank)
        for _ in range(20):  # round robin would send half of these to the paused one
            assert len(await history_amounts(bank, account_id, auditor)) == 6
            assert await bank.balance(account_id, auditor) == Decimal("15.00")
        _, replica_after = await reads(bank)
        assert replica_after - replica_before == 40  # all on the other replica
    finally:
        await replicas.resume(1)
    await wait_healthy(bank, REPLICA_NAMES[0])


async def test_a_client_never_reads_its_own_write_stale(
    replica_bank: Bank, replicas: Replicas
) -> None:
    bank = replica_bank
    _, staff = await bank.user(Role.TELLER)
    _, auditor = await bank.user(Role.AUDITOR)
    _, customer, account_id = await funded_customer(bank, staff, "100.00")
    for index in (1, 2):  # replicas 300 ms behind: under the 1 s bound, so they serve
        await replicas.apply_delay(index, "300ms")
    await history_amounts(bank, account_id, auditor)
    await wait_healthy(bank, *REPLICA_NAMES)
    expected = Decimal("100.00")
    stale_for_others = 0
    _, replica_before = await reads(bank)
    for round_number in range(30):
        debited = await bank.client.post(
            "/api/v1/transactions/debit",
            json={"account_id": account_id, "amount": "0.50", "currency": "USD"},
            headers=customer,
        )
        assert debited.status_code == 200, debited.text
        expected -= Decimal("0.50")
        assert await bank.balance(account_id, customer) == expected, round_number
        legs = await history_amounts(bank, account_id, customer)
        assert len(legs) == 2 + round_number, round_number
        transaction_id = debited.json()["transaction_id"]
        looked_up = await bank.client.get(
            f"/api/v1/transactions/{transaction_id}", headers=customer
        )
        assert looked_up.status_code == 200, looked_up.text
        assert looked_up.json()["status"] == "completed"
        # Someone who did not write reads the replicas: behind, as they may be.
        if await bank.balance(account_id, auditor) != expected:
            stale_for_others += 1
    _, replica_after = await reads(bank)
    assert replica_after > replica_before  # the replicas served the auditor
    assert stale_for_others > 0, "the replicas were never behind: this test proves nothing"


async def test_reads_fall_back_to_the_primary_when_every_replica_is_down(
    replica_bank: Bank,
) -> None:
    bank = replica_bank
    _, staff = await bank.user(Role.TELLER)
    _, auditor = await bank.user(Role.AUDITOR)
    _, _, account_id = await funded_customer(bank, staff, "42.00")
    await history_amounts(bank, account_id, auditor)
    await wait_healthy(bank, *REPLICA_NAMES)
    await asyncio.to_thread(stop_replica_immediately, 1)
    await asyncio.to_thread(stop_replica_immediately, 2)
    primary_before, replica_before = await reads(bank)
    for _ in range(10):
        assert await history_amounts(bank, account_id, auditor) == ["42.00"]
        assert await bank.balance(account_id, auditor) == Decimal("42.00")
    primary_after, replica_after = await reads(bank)
    assert replica_after == replica_before
    assert primary_after - primary_before == 20
    for name in REPLICA_NAMES:
        assert await metric(bank.client, "banking_db_replica_healthy", replica=name) == 0
