"""The embedded shape (SQLite and the in-process bus): every event of a mixed workload is in
the audit trail exactly once, with the right actor and trace id."""

from __future__ import annotations

from banking.events import topics
from banking.events.transport import Message
from banking.workers.runtime import EmbeddedEvents
from tests.audit.conftest import audit_rows, settle, wait_for
from tests.audit.workload import check_trail, run_workload
from tests.conftest import Bank


async def test_every_event_of_a_mixed_workload_is_recorded_once(sqlite_bank: Bank) -> None:
    bank = sqlite_bank
    events = EmbeddedEvents(bank.container)
    await events.start()
    try:

        async def send_poison(account_id: str, headers: dict[str, str]) -> None:
            message = Message(topics.TRANSACTIONS_SUBMITTED, account_id, b"{not json", headers)
            await events.bus.publish([message])

        expected = await run_workload(bank, send_poison)
        await settle(bank)

        async def poison_recorded() -> bool:
            return sum(1 for row in await audit_rows(bank) if row.topic.endswith("dlq")) >= 1

        await wait_for(poison_recorded, timeout_seconds=30, what="the dead letter's record")
        trail = await check_trail(bank, expected, on_kafka=False)
    finally:
        await events.stop()
    assert all(row.kafka_partition is None for row in trail)
