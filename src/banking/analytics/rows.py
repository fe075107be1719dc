"""One event message as one row of its dataset's Arrow schema.

Each event type the sink reads has a dataset (a view in ``banking analytics query``) whose
columns are the event's own schema (``events.schemas``, exact ``decimal128(18,2)`` amounts and
``timestamp[us, UTC]`` times) followed by the envelope columns: where and when the event was
published. ``event_type`` and ``date`` are not columns of the files: they are the Hive
partition directories (``event_type=<type>/date=<YYYY-MM-DD>/``), so a reader gets them from
the path.

A ``transaction.rejected`` (a command refused before it had a leg) is shaped as a failed leg
(``events.outbox.rejection_event``) and goes to the ``transactions`` dataset with the failed
legs; its JSON payload's ``failure_reason`` has no column in the Arrow schema and is left out
here too, so the rows do not depend on the wire format the relay used.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Final

import pyarrow as pa

from banking.events import outbox
from banking.events.envelope import read_headers
from banking.events.schemas import (
    BALANCE_SCHEMA_V1,
    FRAUD_ALERT_SCHEMA_V1,
    HELD_SCHEMA_V1,
    MONEY,
    TIME,
    TRANSACTION_SCHEMA_V3,
)
from banking.events.serialization import JSON_CONTENT_TYPE, UndecodableEvent, decode
from banking.events.transport import Message

ENVELOPE_COLUMNS: Final = pa.schema(
    [
        ("event_id", pa.string()),
        ("event_time", TIME),
        ("trace_id", pa.string()),
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
    ]
)


def _with_envelope(schema: pa.Schema) -> pa.Schema:
    return pa.schema([*schema, *ENVELOPE_COLUMNS])


@dataclass(frozen=True, slots=True)
class Dataset:
    """A view of the dataset: its name, the event types stored under it, its file schema."""

    view: str
    event_types: tuple[str, ...]
    schema: pa.Schema


DATASETS: Final = (
    Dataset(
        "transactions",
        (
            outbox.EVENT_TRANSACTION_COMPLETED,
            outbox.EVENT_TRANSACTION_FAILED,
            outbox.EVENT_TRANSACTION_REJECTED,
        ),
        _with_envelope(TRANSACTION_SCHEMA_V3),
    ),
    Dataset("balances", (outbox.EVENT_BALANCE_UPDATED,), _with_envelope(BALANCE_SCHEMA_V1)),
    Dataset("fraud_alerts", (outbox.EVENT_FRAUD_ALERT,), _with_envelope(FRAUD_ALERT_SCHEMA_V1)),
    Dataset("held", (outbox.EVENT_TRANSACTION_HELD,), _with_envelope(HELD_SCHEMA_V1)),
)
DATASET_OF: Final = {event_type: d for d in DATASETS for event_type in d.event_types}
EVENT_TYPES: Final = tuple(DATASET_OF)


class UnreadableEvent(ValueError):
    """A message that is no event the sink stores (it is skipped and counted, never stored)."""


@dataclass(frozen=True, slots=True)
class Row:
    """One event as its dataset row; ``values`` by column name, in values Arrow takes exactly."""

    event_type: str
    event_id: str
    event_time: datetime
    values: dict[str, Any]

    @property
    def date(self) -> date:
        """The day of the event's commit time, UTC: its ``date=`` partition."""
        return self.event_time.astimezone(UTC).date()


def row_of(message: Message) -> Row:
    """The dataset row of an event message; ``UnreadableEvent`` when it is none."""
    headers = read_headers(message.headers)
    event_type = headers.event_type
    if event_type not in DATASET_OF:
        raise UnreadableEvent(f"unexpected event type {event_type!r} on {message.topic}")
    if not headers.event_id:
        raise UnreadableEvent("the event has no id")
    try:
        fields = decode(
            message.value,
            content_type=headers.content_type or JSON_CONTENT_TYPE,
            event_type=event_type,
            schema_version=headers.schema_version,
        )
    except UndecodableEvent as error:
        raise UnreadableEvent(str(error)) from error
    event_time = headers.time or fields.get("timestamp")
    if not isinstance(event_time, datetime) or event_time.tzinfo is None:
        raise UnreadableEvent("the event has no commit time")
    schema = DATASET_OF[event_type].schema
    values = {name: fields.get(name) for name in schema.names[: -len(ENVELOPE_COLUMNS)]}
    values |= {
        "event_id": headers.event_id,
        "event_time": event_time,
        "trace_id": headers.trace_id,
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
    }
    for column in schema:
        _check(column, values[column.name])
    try:  # every value fits its column now, so that a flush never fails on one bad event
        pa.RecordBatch.from_pylist([values], schema=schema)
    except (pa.ArrowException, ValueError, TypeError) as error:
        raise UnreadableEvent(f"the event does not fit {event_type}: {error}") from error
    return Row(event_type, headers.event_id, event_time, values)


def _check(column: pa.Field, value: object) -> None:
    """Refuse a value Arrow would convert inexactly (a float amount) or not at all."""
    if value is None:
        return
    if column.type == MONEY and not isinstance(value, Decimal):
        raise UnreadableEvent(f"{column.name} is not an exact decimal")
    if column.type == TIME and not isinstance(value, datetime):
        raise UnreadableEvent(f"{column.name} is not a time")


def table_of(event_type: str, rows: list[Row]) -> pa.Table:
    """The rows of one event type as a table of its dataset's schema."""
    return pa.Table.from_pylist([row.values for row in rows], schema=DATASET_OF[event_type].schema)
