"""The compact Arrow codec against pyarrow: every message it writes is a valid IPC record batch
that pyarrow reads with the published schema, and it reads pyarrow's own (no broker needed)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from banking.events import registry
from banking.events.arrow_ipc import ArrowIpcError, RecordBatchCodec, UnsupportedLayout

SCHEMAS = {entry.name: entry.schema for entry in registry.SCHEMAS.values()}
MAX_AMOUNT = Decimal("9999999999999999.99")
ROUNDS = 300  # random rows per schema: a fraction of a second
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EARLIEST_US = (datetime(1, 1, 2, tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
LATEST_US = (datetime(9999, 12, 30, tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)


def _value(field: pa.Field, rng: random.Random) -> Any:
    if rng.random() < 0.2:
        return None
    if pa.types.is_string(field.type):
        alphabet = "abcXYZ019-_ é€😀\x00"
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
    if pa.types.is_decimal(field.type):
        limit = 10**18  # decimal128(18, 2): 18 digits
        unscaled = rng.choice([0, 1, -1, limit - 1, 1 - limit, rng.randrange(1 - limit, limit)])
        return Decimal(unscaled).scaleb(-2)
    if pa.types.is_timestamp(field.type):
        microseconds = rng.choice([0, -1, 1, rng.randrange(EARLIEST_US, LATEST_US)])
        return EPOCH + timedelta(microseconds=microseconds)
    return rng.choice([0, -1, 2**63 - 1, -(2**63), rng.randrange(-(2**63), 2**63)])


def _rows(schema: pa.Schema, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{field.name: _value(field, rng) for field in schema} for _ in range(ROUNDS)]


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_pyarrow_reads_every_message_with_the_published_schema(name: str) -> None:
    schema = SCHEMAS[name]
    codec = RecordBatchCodec(schema)
    for row in _rows(schema, seed=len(name)):
        message = codec.encode(row)
        batch = pa.ipc.read_record_batch(pa.py_buffer(message), schema)
        batch.validate(full=True)
        assert batch.to_pylist() == [row]
        assert codec.decode(message) == row


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_it_reads_what_pyarrow_writes(name: str) -> None:
    schema = SCHEMAS[name]
    codec = RecordBatchCodec(schema)
    for row in _rows(schema, seed=len(name) + 1):
        written = pa.RecordBatch.from_pylist([row], schema=schema).serialize().to_pybytes()
        assert written[:80] != codec.encode(row)[:80]  # another layout: read from its metadata
        assert codec.decode(written) == row


def test_a_compressed_batch_is_handed_to_pyarrow() -> None:
    schema = SCHEMAS["balance"]
    row = _rows(schema, seed=7)[0]
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="lz4")
    with pa.ipc.new_stream(sink, schema, options=options) as writer:
        writer.write_batch(pa.RecordBatch.from_pylist([row], schema=schema))
    reader = pa.ipc.MessageReader.open_stream(sink.getvalue())
    reader.read_next_message()  # the schema
    compressed = reader.read_next_message().serialize().to_pybytes()
    with pytest.raises(UnsupportedLayout):
        RecordBatchCodec(schema).decode(compressed)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("current_balance", Decimal("1.001")),  # more decimals than the column: never rounded
        ("current_balance", Decimal("1E+16")),  # beyond decimal128(18, 2)
        ("current_balance", Decimal("NaN")),
        ("current_balance", Decimal("-Infinity")),
        ("current_balance", 1.5),  # a float never becomes an amount
        ("timestamp", datetime(2026, 1, 1)),  # a naive time has no instant
        ("version", 2**63),
        ("account_id", 42),
    ],
)
def test_a_value_that_does_not_fit_is_refused(column: str, value: object) -> None:
    row = {
        "account_id": "a",
        "current_balance": Decimal("1.00"),
        "available_balance": Decimal("1.00"),
        "currency": "USD",
        "version": 1,
        "timestamp": datetime(2026, 1, 1, tzinfo=UTC),
    }
    with pytest.raises(ArrowIpcError):
        RecordBatchCodec(SCHEMAS["balance"]).encode({**row, column: value})


def test_amounts_at_the_limits_stay_exact() -> None:
    codec = RecordBatchCodec(SCHEMAS["balance"])
    for amount in (MAX_AMOUNT, -MAX_AMOUNT, Decimal("0.01"), Decimal("0")):
        row = {
            "account_id": "a",
            "current_balance": amount,
            "available_balance": "12.30",  # the outbox's decimal text is taken as it is
            "currency": "USD",
            "version": 1,
            "timestamp": "2026-11-25T12:00:00.000001+00:00",
        }
        decoded = codec.decode(codec.encode(row))
        assert decoded["current_balance"] == amount
        assert str(decoded["available_balance"]) == "12.30"
        assert decoded["timestamp"] == datetime(2026, 11, 25, 12, 0, 0, 1, tzinfo=UTC)


def _valid_message() -> bytes:
    row = _rows(SCHEMAS["transaction"], seed=3)[1]
    return RecordBatchCodec(SCHEMAS["transaction"]).encode(row)


def test_every_truncation_and_many_corruptions_are_refused_cleanly() -> None:
    codec = RecordBatchCodec(SCHEMAS["transaction"])
    message = _valid_message()
    for end in range(len(message)):
        with pytest.raises(ArrowIpcError):
            codec.decode(message[:end])
    rng = random.Random(11)
    refused = 0
    for _ in range(2000):
        corrupted = bytearray(message)
        for _ in range(rng.randrange(1, 4)):
            corrupted[rng.randrange(len(corrupted))] = rng.randrange(256)
        try:
            row = codec.decode(bytes(corrupted))
        except ArrowIpcError:
            refused += 1
        else:  # a corruption inside a value may still be a valid value: never anything else
            assert list(row) == SCHEMAS["transaction"].names
    assert refused > 200


def test_a_message_of_another_schema_or_several_rows_is_refused() -> None:
    balance = SCHEMAS["balance"]
    rows = _rows(balance, seed=5)[:2]
    with pytest.raises(ArrowIpcError, match="columns"):
        RecordBatchCodec(SCHEMAS["transaction"]).decode(RecordBatchCodec(balance).encode(rows[0]))
    two = pa.RecordBatch.from_pylist(rows, schema=balance).serialize().to_pybytes()
    with pytest.raises(ArrowIpcError, match="one row"):
        RecordBatchCodec(balance).decode(two)


def test_a_schema_with_a_type_it_cannot_write_fails_at_once() -> None:
    with pytest.raises(TypeError, match="flag"):
        RecordBatchCodec(pa.schema([("flag", pa.bool_())]))
