"""Unit tests of the event schemas and wire formats (no broker needed)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from banking.events.serialization import (
    ARROW_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    SCHEMAS,
    EventFormat,
    UndecodableEvent,
    decode,
    encode,
    payload_text,
)

TRANSACTION = {
    "transaction_id": "6f1c1b8e-9a38-4a2e-8d8c-0f5b1f3c2a10",
    "account_id": "0d4f5b3e-1c2a-4e7f-9b8d-3a2c1e0f9d8b",
    "transaction_type": "debit",
    "amount": "9999999999999999.99",
    "currency": "USD",
    "description": "Test debit",
    "reference_id": "TEST-DEBIT-1",
    "timestamp": "2026-11-25T12:00:00.123456+00:00",
    "status": "completed",
    "related_transaction_id": None,
    "failure_code": None,
}
COMMAND = {
    "transaction_id": "6f1c1b8e-9a38-4a2e-8d8c-0f5b1f3c2a10",
    "command": "transfer",
    "account_id": "0d4f5b3e-1c2a-4e7f-9b8d-3a2c1e0f9d8b",
    "destination_account_id": "1d4f5b3e-1c2a-4e7f-9b8d-3a2c1e0f9d8b",
    "amount": "0.10",
    "currency": "EUR",
    "description": None,
    "reference_id": "r-1",
    "requested_by": {"user_id": "u", "username": "alice", "role": "customer"},
    "timestamp": "2026-11-25T12:00:00+00:00",
}


@pytest.mark.parametrize("event_format", list(EventFormat))
def test_round_trip_keeps_amounts_and_times_exact(event_format: EventFormat) -> None:
    value, content_type = encode("transaction.completed", 1, TRANSACTION, event_format)
    fields = decode(value, content_type=content_type, event_type="transaction.completed")
    assert fields["amount"] == Decimal("9999999999999999.99")
    assert fields["timestamp"] == datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)
    assert payload_text(fields) == TRANSACTION


def test_arrow_uses_the_sketch_schema_with_decimal128() -> None:
    value, content_type = encode("transaction.completed", 1, TRANSACTION, EventFormat.ARROW)
    assert content_type == ARROW_CONTENT_TYPE
    table = pa.ipc.open_stream(value).read_all()
    assert table.schema.field("amount").type == pa.decimal128(18, 2)
    assert table.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert table.num_rows == 1


@pytest.mark.parametrize("event_format", list(EventFormat))
def test_commands_round_trip_with_their_requester(event_format: EventFormat) -> None:
    value, content_type = encode("transaction.submitted", 1, COMMAND, event_format)
    fields = decode(value, content_type=content_type, event_type="transaction.submitted")
    assert payload_text(fields) == COMMAND


def test_every_event_type_has_a_schema_and_unknown_versions_are_refused() -> None:
    assert {event_type for event_type, _ in SCHEMAS} == {
        "transaction.completed",
        "transaction.failed",
        "transaction.rejected",
        "balance.updated",
        "transaction.submitted",
    }
    with pytest.raises(UndecodableEvent):
        encode("transaction.completed", 2, TRANSACTION, EventFormat.ARROW)


@pytest.mark.parametrize(
    ("value", "content_type"),
    [
        (b"\x00\xff garbage", ARROW_CONTENT_TYPE),
        (b"{not json", JSON_CONTENT_TYPE),
        (b"[1, 2]", JSON_CONTENT_TYPE),
        (b"{}", "text/plain"),
    ],
)
def test_garbage_is_undecodable(value: bytes, content_type: str) -> None:
    with pytest.raises(UndecodableEvent):
        decode(value, content_type=content_type, event_type="transaction.completed")
