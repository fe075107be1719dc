"""Unit tests of the event schemas and wire formats (no broker needed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from banking.domain.records import HoldChange, StaffActionType
from banking.events import outbox, registry
from banking.events.serialization import (
    ARROW_BATCH_CONTENT_TYPE,
    ARROW_STREAM_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    EventFormat,
    UndecodableEvent,
    decode,
    encode,
    payload_text,
)

CURRENT = outbox.TRANSACTION_SCHEMA_VERSION
BALANCE_CURRENT = outbox.BALANCE_SCHEMA_VERSION
COMMAND_CURRENT = outbox.COMMAND_SCHEMA_VERSION
TRANSACTION_V2 = {
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
# v3 adds the leg's metadata (JSON text) and its reversal and hold links.
TRANSACTION = {
    **TRANSACTION_V2,
    "metadata": '{"channel":"web","order_id":"42"}',
    "reverses_transaction_id": "7f1c1b8e-9a38-4a2e-8d8c-0f5b1f3c2a10",
    "hold_id": None,
}
PAYLOADS = {1: TRANSACTION_V2, 2: TRANSACTION_V2, 3: TRANSACTION}
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


@pytest.mark.parametrize("version", sorted(PAYLOADS))
@pytest.mark.parametrize("event_format", list(EventFormat))
def test_round_trip_keeps_amounts_and_times_exact(event_format: EventFormat, version: int) -> None:
    payload = PAYLOADS[version]
    value, content_type = encode("transaction.completed", version, payload, event_format)
    fields = decode(
        value, content_type=content_type, event_type="transaction.completed", schema_version=version
    )
    assert fields["amount"] == Decimal("9999999999999999.99")
    assert fields["timestamp"] == datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)
    assert payload_text(fields) == payload


def test_v3_adds_metadata_and_links_to_v2s_columns() -> None:
    v2, v3 = (registry.by_id(f"transaction.v{version}") for version in (2, 3))
    assert v2 is not None and v3 is not None
    assert v3.schema.names == [*v2.schema.names, "metadata", "reverses_transaction_id", "hold_id"]
    with pytest.raises(UndecodableEvent, match="does not fit"):  # a v2 payload is not v3
        encode("transaction.completed", 3, TRANSACTION_V2, EventFormat.ARROW)


def test_arrow_v2_is_the_record_batch_alone_read_with_the_published_schema() -> None:
    value, content_type = encode("transaction.completed", CURRENT, TRANSACTION, EventFormat.ARROW)
    assert content_type == ARROW_BATCH_CONTENT_TYPE
    published = registry.lookup("transaction.completed")
    assert published is not None and published.schema_id == f"transaction.v{CURRENT}"
    schema = pa.ipc.open_stream(published.ipc_stream).schema  # as a consumer gets it
    batch = pa.ipc.read_record_batch(pa.py_buffer(value), schema)
    assert batch.schema.field("amount").type == pa.decimal128(18, 2)
    assert batch.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert batch.to_pylist()[0]["amount"] == Decimal("9999999999999999.99")
    stream, _ = encode("transaction.completed", 1, TRANSACTION_V2, EventFormat.ARROW)
    batch_v2, _ = encode("transaction.completed", 2, TRANSACTION_V2, EventFormat.ARROW)
    assert len(batch_v2) < len(stream) * 0.65  # the schema is no longer in every message


def test_arrow_v1_is_still_the_self_describing_stream() -> None:
    value, content_type = encode("transaction.completed", 1, TRANSACTION, EventFormat.ARROW)
    assert content_type == ARROW_STREAM_CONTENT_TYPE
    table = pa.ipc.open_stream(value).read_all()
    assert table.schema.field("amount").type == pa.decimal128(18, 2)
    assert table.num_rows == 1


@pytest.mark.parametrize("version", [1, 2, COMMAND_CURRENT])
@pytest.mark.parametrize("event_format", list(EventFormat))
def test_commands_round_trip_with_their_requester(event_format: EventFormat, version: int) -> None:
    # v3 adds the movement's metadata, as JSON text (sorted keys) in both encodings.
    command = COMMAND if version < 3 else {**COMMAND, "metadata": '{"order_id":"42"}'}
    value, content_type = encode("transaction.submitted", version, command, event_format)
    fields = decode(
        value, content_type=content_type, event_type="transaction.submitted", schema_version=version
    )
    assert payload_text(fields) == command


def test_a_batch_without_a_known_version_is_read_with_the_current_schema() -> None:
    value, content_type = encode("balance.updated", BALANCE_CURRENT, _BALANCE, EventFormat.ARROW)
    assert decode(value, content_type=content_type, event_type="balance.updated")["version"] == 7


def test_every_event_type_has_a_schema_in_every_version_and_unknown_ones_are_refused() -> None:
    framed_as_streams_in_v1 = {
        "transaction.completed",
        "transaction.failed",
        "transaction.rejected",
        "balance.updated",
        "transaction.submitted",
    }
    batches_from_v1 = {
        "fraud.alert",
        "transaction.held",
        "notification.created",
        *(f"staff.{action.value}" for action in StaffActionType),
        *(f"hold.{change.value}" for change in HoldChange),
    }
    assert set(registry.CURRENT_VERSIONS) == framed_as_streams_in_v1 | batches_from_v1
    for event_type, current in registry.CURRENT_VERSIONS.items():
        expected = {"transaction": CURRENT, "balance": BALANCE_CURRENT, "command": COMMAND_CURRENT}
        family = registry.lookup(event_type)
        assert family is not None
        default = 2 if event_type in framed_as_streams_in_v1 else 1
        assert current == expected.get(family.name, default)
        found = [registry.lookup(event_type, version) for version in range(1, current + 1)]
        assert all(entry is not None for entry in found)
        assert registry.lookup(event_type, current + 1) is None
        assert found[-1] is not None and found[-1].framing is registry.Framing.RECORD_BATCH
    with pytest.raises(UndecodableEvent):
        encode("transaction.completed", CURRENT + 1, TRANSACTION, EventFormat.ARROW)
    value, _ = encode("transaction.completed", CURRENT, TRANSACTION, EventFormat.ARROW)
    with pytest.raises(UndecodableEvent, match="no schema"):
        decode(
            value,
            content_type=ARROW_BATCH_CONTENT_TYPE,
            event_type="transaction.completed",
            schema_version=CURRENT + 1,
        )


def test_an_amount_with_more_decimals_than_the_schema_is_refused_not_rounded() -> None:
    with pytest.raises(UndecodableEvent, match="does not fit"):
        encode(
            "balance.updated",
            BALANCE_CURRENT,
            {**_BALANCE, "current_balance": "1.005"},
            EventFormat.ARROW,
        )


def test_a_content_type_with_parameters_is_understood() -> None:
    fields = decode(
        json.dumps(_BALANCE).encode(),
        content_type="Application/JSON; charset=utf-8",
        event_type="balance.updated",
    )
    assert fields["current_balance"] == Decimal("98765.43")


_BALANCE = {
    "account_id": "0d4f5b3e-1c2a-4e7f-9b8d-3a2c1e0f9d8b",
    "current_balance": "98765.43",
    "available_balance": "98765.43",
    "currency": "USD",
    "version": 7,
    "timestamp": "2026-11-25T12:00:00.123456+00:00",
}


@pytest.mark.parametrize(
    ("value", "content_type"),
    [
        (b"\x00\xff garbage", ARROW_STREAM_CONTENT_TYPE),
        (b"\x00\xff garbage", ARROW_BATCH_CONTENT_TYPE),
        (b"\xff\xff\xff\xff\x10\x00\x00\x00" + bytes(16), ARROW_BATCH_CONTENT_TYPE),
        (b"", ARROW_BATCH_CONTENT_TYPE),
        (b"{not json", JSON_CONTENT_TYPE),
        (b"[1, 2]", JSON_CONTENT_TYPE),
        (b"{}", "text/plain"),
    ],
)
def test_garbage_is_undecodable(value: bytes, content_type: str) -> None:
    with pytest.raises(UndecodableEvent):
        decode(value, content_type=content_type, event_type="transaction.completed")


def test_a_batch_of_the_wrong_schema_is_undecodable() -> None:
    balance, _ = encode("balance.updated", BALANCE_CURRENT, _BALANCE, EventFormat.ARROW)
    with pytest.raises(UndecodableEvent, match="columns"):
        decode(balance, content_type=ARROW_BATCH_CONTENT_TYPE, event_type="transaction.completed")


def test_the_published_schemas_describe_themselves() -> None:
    messages = registry.schema_messages()
    assert {message.key for message in messages} == set(registry.SCHEMAS)
    for message in messages:
        entry = registry.by_id(str(message.key))
        assert entry is not None
        described = registry.describe(message.value)
        assert described["schema_id"] == entry.schema_id
        assert described["fingerprint"] == entry.fingerprint
        assert described["event_types"] == list(entry.event_types)
        assert [f["name"] for f in described["fields"]] == entry.schema.names
        assert message.headers["ce_type"] == "schema.published"
        assert message.headers["content-type"] == ARROW_STREAM_CONTENT_TYPE
    same_columns = {registry.by_id(f"balance.v{v}").fingerprint for v in (1, 2)}  # type: ignore[union-attr]
    assert len(same_columns) == 1  # v2 changed the framing, not the columns
