"""The audit store is append-only: UPDATE and DELETE are refused on both databases, and a
redelivered message inserts nothing."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import DBAPIError

from banking.audit.consumer import AuditRecorder
from banking.events import envelope, topics
from banking.events.transport import Message
from banking.storage.tables import audit_records
from tests.conftest import Bank


def _message(event_id: uuid.UUID) -> Message:
    headers = {
        envelope.CE_SPECVERSION: envelope.SPEC_VERSION,
        envelope.CE_ID: str(event_id),
        envelope.CE_TYPE: "transaction.completed",
        envelope.CONTENT_TYPE: "application/json",
    }
    return Message(topics.TRANSACTIONS_COMPLETED, "k", b'{"amount": "12.30"}', headers, 0, 7)


async def _rows(bank: Bank) -> list[tuple[object, ...]]:
    async with bank.container.database.read() as connection:
        return [tuple(row) for row in (await connection.execute(select(audit_records))).all()]


async def test_update_and_delete_are_refused(bank: Bank) -> None:
    recorder = AuditRecorder(bank.container.database)
    assert await recorder.record(_message(uuid.uuid4())) is True
    before = await _rows(bank)

    for statement in (
        update(audit_records).values(actor_name="someone-else"),
        delete(audit_records),
    ):

        async def change(connection: object, statement: object = statement) -> None:
            await connection.execute(statement)  # type: ignore[attr-defined]

        with pytest.raises(DBAPIError, match="append-only"):
            await bank.container.database.run_in_transaction(change)

    assert await _rows(bank) == before


async def test_a_redelivered_message_is_recorded_once(bank: Bank) -> None:
    recorder = AuditRecorder(bank.container.database)
    message = _message(uuid.uuid4())

    assert await recorder.record(message) is True
    assert await recorder.record(message) is False

    async with bank.container.database.read() as connection:
        count = (
            await connection.execute(select(func.count()).select_from(audit_records))
        ).scalar_one()
    assert count == 1
    (row,) = await _rows(bank)
    assert "12.30" in str(row)


async def test_a_message_without_an_id_or_a_readable_value_is_recorded(bank: Bank) -> None:
    recorder = AuditRecorder(bank.container.database)
    garbage = Message(topics.TRANSACTIONS_DLQ, None, b"\x00\xff", {"attempts": "2"}, 1, 99)

    assert await recorder.record(garbage) is True
    assert await recorder.record(garbage) is False  # the derived id is stable

    async with bank.container.database.read() as connection:
        (row,) = (await connection.execute(select(audit_records))).all()
    assert row.event_id_derived is True and row.ce_id is None
    assert row.delivery == 2 and row.kafka_offset == 99
    assert row.payload is None and row.unreadable_reason
    assert row.actor_name == "system"
