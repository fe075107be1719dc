"""The expiry of holds as a worker (``banking worker holds``'s loop) and in-process in the
embedded shape, on SQLite and PostgreSQL: each expired hold is released once, its money is
available again, the metric counts it, and the books reconcile."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from banking.domain.roles import Role
from banking.ledger.reconcile import reconcile
from banking.workers.holds import HoldExpiry
from banking.workers.runtime import EmbeddedEvents
from tests.conftest import Bank, make_settings, running_bank
from tests.rest.test_holds import HOLDS, amounts, authorize, customer_account, events

# How long a test waits for the in-process loop at most (it runs every 0.05 s there).
EXPIRY_WAIT_SECONDS = 30.0
EXPIRED_METRIC = "banking_holds_expired_total"


async def soon_expiring(bank: Bank, headers: dict[str, str], account_id: str) -> dict[str, Any]:
    """A hold of 30.00 that expires half a second from now, once it has."""
    expires_at = datetime.now(UTC) + timedelta(seconds=0.5)
    held = await authorize(bank, headers, account_id, "30.00", expires_at=expires_at.isoformat())
    await asyncio.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 0.05)
    return held


def expired_total(bank: Bank) -> float:
    value = bank.container.metrics.registry.get_sample_value(EXPIRED_METRIC)
    return value or 0.0


async def test_a_pass_releases_each_expired_hold_once_and_counts_it(bank: Bank) -> None:
    _, customer, account_id = await customer_account(bank)
    kept = await authorize(bank, customer, account_id, "20.00")
    held = await soon_expiring(bank, customer, account_id)
    worker = HoldExpiry(bank.container.holds, interval_seconds=60)
    counted = expired_total(bank)

    assert await worker.run_once() == 1
    assert await worker.run_once() == 0

    assert expired_total(bank) == counted + 1
    read = await bank.client.get(f"{HOLDS}/{held['hold_id']}", headers=customer)
    assert read.json()["status"] == "expired"
    still = await bank.client.get(f"{HOLDS}/{kept['hold_id']}", headers=customer)
    assert still.json()["status"] == "open"
    assert await amounts(bank, account_id, customer) == ("100.00", "80.00")
    report = await reconcile(bank.container.unit_of_work)
    assert report.clean, report.problems


async def test_two_workers_at_once_release_a_hold_once(bank: Bank) -> None:
    _, customer, account_id = await customer_account(bank)
    await soon_expiring(bank, customer, account_id)
    workers = [HoldExpiry(bank.container.holds, interval_seconds=60) for _ in range(4)]

    released = await asyncio.gather(*[worker.run_once() for worker in workers])

    assert sum(released) == 1
    expired = [event for event in await events(bank) if event[2] == "hold.expired"]
    assert len(expired) == 1
    assert await amounts(bank, account_id, customer) == ("100.00", "100.00")


async def test_the_embedded_shape_releases_expired_holds_in_process(database_url: str) -> None:
    settings = make_settings(database_url, hold_expiry_seconds=0.05)
    async with running_bank(settings) as bank:
        _, staff = await bank.user(Role.TELLER)
        customer_id, customer = await bank.user(Role.CUSTOMER)
        account_id = await bank.account(customer_id, staff, funded="100.00")
        embedded = EmbeddedEvents(bank.container)
        await embedded.start()
        try:
            held = await soon_expiring(bank, customer, account_id)
            deadline = asyncio.get_running_loop().time() + EXPIRY_WAIT_SECONDS
            status = "open"
            while status == "open":
                assert asyncio.get_running_loop().time() < deadline, "the hold never expired"
                await asyncio.sleep(0.05)
                read = await bank.client.get(f"{HOLDS}/{held['hold_id']}", headers=customer)
                status = read.json()["status"]
        finally:
            await embedded.stop()

        assert status == "expired"
        assert await amounts(bank, account_id, customer) == ("100.00", "100.00")
        assert [e[2] for e in await events(bank)].count("hold.expired") == 1
        report = await reconcile(bank.container.unit_of_work)
        assert report.clean, report.problems
