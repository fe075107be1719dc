"""The one module that owns the events' wire formats (their schemas are ``events.schemas``,
their versions ``events.registry``).

Values are Arrow (default) or JSON, chosen by the ``EVENT_FORMAT`` setting; the
``content-type`` header says which, and ``decode`` reads every form this service ever wrote:

- ``application/vnd.apache.arrow.recordbatch`` (schema v2): the IPC record batch message
  alone, one row; the schema is the registry's for the event type and version;
- ``application/vnd.apache.arrow.stream`` (schema v1): a one-row IPC stream, schema inside;
- ``application/json``: an object, amounts as decimal strings (v1 and v2 alike).

Amounts are ``decimal128(18,2)`` in Arrow and decimal strings in JSON; decoding always gives
``Decimal``. Timestamps are microseconds UTC. A new field means a new schema version, and
readers keep accepting the old ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final

import pyarrow as pa

from banking.events import outbox, registry
from banking.events.arrow_ipc import ArrowIpcError, UnsupportedLayout
from banking.events.registry import ARROW_BATCH_CONTENT_TYPE, ARROW_STREAM_CONTENT_TYPE

JSON_CONTENT_TYPE: Final = "application/json"
# Kept for readers written against schema v1's name for the stream media type.
ARROW_CONTENT_TYPE: Final = ARROW_STREAM_CONTENT_TYPE
_COLUMNS: Final = [column for entry in registry.SCHEMAS.values() for column in entry.schema]
_MONEY_FIELDS: Final = frozenset(c.name for c in _COLUMNS if pa.types.is_decimal(c.type))
_TIME_FIELDS: Final = frozenset(c.name for c in _COLUMNS if pa.types.is_timestamp(c.type))
_CENT: Final = Decimal("0.01")

__all__ = [
    "ARROW_BATCH_CONTENT_TYPE",
    "ARROW_CONTENT_TYPE",
    "ARROW_STREAM_CONTENT_TYPE",
    "JSON_CONTENT_TYPE",
    "EventFormat",
    "UndecodableEvent",
    "decode",
    "encode",
    "payload_text",
]


class EventFormat(StrEnum):
    ARROW = "arrow"
    JSON = "json"


class UndecodableEvent(ValueError):
    """Bytes that are not an event of a known type, version and format."""


def _flatten(event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The Arrow row of a payload: nested ``requested_by`` becomes three columns."""
    if event_type != outbox.EVENT_TRANSACTION_SUBMITTED:
        return payload
    row = dict(payload)
    requested_by = row.pop("requested_by")
    row["requested_by_user_id"] = requested_by["user_id"]
    row["requested_by_username"] = requested_by["username"]
    row["requested_by_role"] = requested_by["role"]
    return row


def _nest(event_type: str, row: dict[str, Any]) -> dict[str, Any]:
    if event_type == outbox.EVENT_TRANSACTION_SUBMITTED:
        row["requested_by"] = {
            "user_id": row.pop("requested_by_user_id"),
            "username": row.pop("requested_by_username"),
            "role": row.pop("requested_by_role"),
        }
    return row


def _typed(row: dict[str, Any]) -> dict[str, Any]:
    """Payload text → Python values Arrow takes exactly: Decimal amounts, aware datetimes."""
    typed = dict(row)
    for name in _MONEY_FIELDS & typed.keys():
        if typed[name] is not None:
            typed[name] = Decimal(typed[name]).quantize(_CENT)
    for name in _TIME_FIELDS & typed.keys():
        if typed[name] is not None:
            typed[name] = datetime.fromisoformat(typed[name])
    return typed


def _schema(event_type: str, schema_version: int | None) -> registry.EventSchema:
    entry = registry.lookup(event_type, schema_version)
    if entry is None:
        raise UndecodableEvent(f"no schema for {event_type} v{schema_version}")
    return entry


def encode(
    event_type: str, schema_version: int, payload: dict[str, Any], event_format: EventFormat
) -> tuple[bytes, str]:
    """The value bytes and content type of an event payload (as stored in the outbox), in the
    framing of its schema version."""
    if event_format is EventFormat.JSON:
        text = json.dumps(payload, separators=(",", ":"), sort_keys=True)
        return text.encode(), JSON_CONTENT_TYPE
    entry = _schema(event_type, schema_version)
    row = _flatten(event_type, payload)
    if entry.framing is registry.Framing.RECORD_BATCH:
        try:
            return entry.codec.encode(row), ARROW_BATCH_CONTENT_TYPE
        except (ArrowIpcError, KeyError) as error:
            raise UndecodableEvent(f"payload does not fit {entry.schema_id}: {error}") from error
    batch = pa.RecordBatch.from_pylist([_typed(row)], schema=entry.schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, entry.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes(), ARROW_STREAM_CONTENT_TYPE


def decode(
    value: bytes, *, content_type: str, event_type: str, schema_version: int | None = None
) -> dict[str, Any]:
    """An event's fields with amounts as ``Decimal`` and timestamps as aware ``datetime``.
    ``schema_version`` (from the headers) chooses the schema of a record batch; the current
    version of the event type when it is not known."""
    media_type = content_type.partition(";")[0].strip().lower()
    try:
        if media_type == JSON_CONTENT_TYPE:
            loaded = json.loads(value, parse_float=Decimal)
            if not isinstance(loaded, dict):
                raise UndecodableEvent("a JSON event must be an object")
            return _typed(loaded)
        if media_type == ARROW_BATCH_CONTENT_TYPE:
            return _nest(event_type, _read_batch(value, _schema(event_type, schema_version)))
        if media_type == ARROW_STREAM_CONTENT_TYPE:
            rows = pa.ipc.open_stream(value).read_all().to_pylist()
            if len(rows) != 1:
                raise UndecodableEvent(f"expected one row, got {len(rows)}")
            return _nest(event_type, rows[0])
    except UndecodableEvent:
        raise
    except (pa.ArrowException, ValueError, TypeError, KeyError) as error:
        raise UndecodableEvent(f"cannot decode {content_type} event: {error}") from error
    raise UndecodableEvent(f"unknown content type {content_type!r}")


def _read_batch(value: bytes, entry: registry.EventSchema) -> dict[str, Any]:
    try:
        return entry.codec.decode(value)
    except UnsupportedLayout:
        # Valid, but not the layout this service writes (another producer compressed it).
        rows = pa.ipc.read_record_batch(pa.py_buffer(value), entry.schema).to_pylist()
        if len(rows) != 1:
            raise UndecodableEvent(f"expected one row, got {len(rows)}") from None
        return dict(rows[0])


def payload_text(fields: dict[str, Any]) -> dict[str, Any]:
    """Decoded fields back to the JSON payload form (decimal strings, ISO timestamps)."""
    convert: dict[type, Callable[[Any], Any]] = {
        Decimal: lambda value: format(value.quantize(_CENT), "f"),
        datetime: lambda value: value.isoformat(),
    }
    return {
        key: convert[type(value)](value) if type(value) in convert else value
        for key, value in fields.items()
    }
