"""The production shape: PostgreSQL, real Kafka, and `banking worker audit` (with the relay,
processor and dlq workers) as processes. Every event of the mixed workload is recorded once
with its Kafka position; an audit worker killed with SIGKILL mid-stream and restarted leaves
no gap and no duplicate."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from banking.domain.roles import Role
from banking.events import topics
from tests.audit.conftest import (
    audit_count,
    audit_rows,
    every_outbox_event_audited,
    outbox_rows,
    wait_for,
)
from tests.audit.workload import check_trail, run_workload
from tests.conftest import Bank
from tests.events.kafka_support import kafka_bootstrap, produce_raw, worker_process
from tests.events.test_kafka import kafka_bank, worker_env

pytestmark = pytest.mark.postgres
TIMEOUT_SECONDS = 120


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
async def pg_kbank(postgres_url: str, prefix: str) -> AsyncIterator[Bank]:
    async with kafka_bank(postgres_url, prefix) as bank:
        yield bank


class Workers:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> subprocess.Popen[bytes]:
        self.running[name] = worker_process(name, self.env, self.logs / f"{name}.log")
        return self.running[name]

    def stop_all(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def workers(pg_kbank: Bank, postgres_url: str, tmp_path: Path) -> Iterator[Workers]:
    running = Workers(worker_env(pg_kbank, postgres_url), tmp_path)
    yield running
    running.stop_all()


def _log(workers: Workers, name: str) -> str:
    return (workers.logs / f"{name}.log").read_text(errors="replace")[-3000:]


async def test_every_event_is_recorded_once_on_kafka(
    pg_kbank: Bank, workers: Workers, prefix: str
) -> None:
    bank = pg_kbank
    for name in ("relay", "processor", "dlq", "audit"):
        workers.start(name)

    async def send_poison(account_id: str, headers: dict[str, str]) -> None:
        await produce_raw(
            kafka_bootstrap(),
            prefix + topics.TRANSACTIONS_SUBMITTED,
            b"{not json",
            key=account_id.encode(),
            headers=headers,
        )

    expected = await run_workload(bank, send_poison)

    async def complete() -> bool:
        dlq = [r for r in await audit_rows(bank) if r.topic == topics.TRANSACTIONS_PERMANENT_DLQ]
        return bool(dlq) and await every_outbox_event_audited(bank)

    try:
        await wait_for(complete, timeout_seconds=TIMEOUT_SECONDS, what="the audit trail")
    except AssertionError:
        raise AssertionError(_log(workers, "audit")) from None
    trail = await check_trail(bank, expected, on_kafka=True)
    assert all(row.kafka_partition is not None for row in trail)


async def test_a_killed_audit_worker_leaves_no_gap_and_no_duplicate(
    pg_kbank: Bank, workers: Workers
) -> None:
    bank = pg_kbank
    workers.start("relay")
    audit = workers.start("audit")
    _, teller = await bank.user(Role.TELLER)
    customer_id, _ = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, teller)

    async def credit(count: int) -> None:
        for _ in range(count):
            response = await bank.client.post(
                "/api/v1/transactions/credit",
                json={"account_id": account_id, "amount": "1.00", "currency": "USD"},
                headers=teller,
            )
            assert response.status_code == 200, response.text

    load = asyncio.create_task(credit(150))

    async def some_recorded() -> bool:
        return await audit_count(bank) >= 40

    await wait_for(some_recorded, timeout_seconds=TIMEOUT_SECONDS, what="the first records")
    audit.send_signal(signal.SIGKILL)
    audit.wait(timeout=10)
    killed_at = await audit_count(bank)
    await load
    workers.start("audit")

    async def complete() -> bool:
        return await every_outbox_event_audited(bank)

    try:
        await wait_for(complete, timeout_seconds=TIMEOUT_SECONDS, what="the audit trail")
    except AssertionError:
        raise AssertionError(_log(workers, "audit")) from None
    events = await outbox_rows(bank)
    trail = await audit_rows(bank)
    assert killed_at < len(events)  # the kill did happen mid-stream
    # No gap (every outbox event has its record) and no duplicate (one row per event).
    assert sorted((r.event_id, r.topic) for r in trail) == sorted(
        (e.event_id, e.topic) for e in events
    )
