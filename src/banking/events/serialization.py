"""The one module that owns the events' wire formats (their schemas are ``events.schemas``).

Values are an Arrow IPC stream of one record batch (default) or JSON, chosen by the
``EVENT_FORMAT`` setting; the ``content-type`` header says which, and ``decode`` reads both.
Amounts are ``decimal128(18,2)`` in Arrow and decimal strings in JSON; decoding always gives
``Decimal``. Timestamps are microseconds UTC. Each event type has a versioned schema; a new
field means a new version, and readers keep accepting the old ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final

import pyarrow as pa

from banking.events import outbox
from banking.events.schemas import BALANCE_SCHEMA_V1, COMMAND_SCHEMA_V1, TRANSACTION_SCHEMA_V1

ARROW_CONTENT_TYPE: Final = "application/vnd.apache.arrow.stream"
JSON_CONTENT_TYPE: Final = "application/json"

SCHEMAS: Final[dict[tuple[str, int], pa.Schema]] = {
    (outbox.EVENT_TRANSACTION_COMPLETED, 1): TRANSACTION_SCHEMA_V1,
    (outbox.EVENT_TRANSACTION_FAILED, 1): TRANSACTION_SCHEMA_V1,
    (outbox.EVENT_TRANSACTION_REJECTED, 1): TRANSACTION_SCHEMA_V1,
    (outbox.EVENT_BALANCE_UPDATED, 1): BALANCE_SCHEMA_V1,
    (outbox.EVENT_TRANSACTION_SUBMITTED, 1): COMMAND_SCHEMA_V1,
}
_COLUMNS: Final = [column for schema in SCHEMAS.values() for column in schema]
_MONEY_FIELDS: Final = frozenset(c.name for c in _COLUMNS if pa.types.is_decimal(c.type))
_TIME_FIELDS: Final = frozenset(c.name for c in _COLUMNS if pa.types.is_timestamp(c.type))


class EventFormat(StrEnum):
    ARROW = "arrow"
    JSON = "json"


class UndecodableEvent(ValueError):
    """Bytes that are not an event of a known type, version and format."""


def _flatten(event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The Arrow row of a payload: nested ``requested_by`` becomes three columns."""
    row = dict(payload)
    if event_type == outbox.EVENT_TRANSACTION_SUBMITTED:
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
        typed[name] = Decimal(typed[name]).quantize(Decimal("0.01"))
    for name in _TIME_FIELDS & typed.keys():
        typed[name] = datetime.fromisoformat(typed[name])
    return typed


def encode(
    event_type: str, schema_version: int, payload: dict[str, Any], event_format: EventFormat
) -> tuple[bytes, str]:
    """The value bytes and content type of an event payload (as stored in the outbox)."""
    if event_format is EventFormat.JSON:
        text = json.dumps(payload, separators=(",", ":"), sort_keys=True)
        return text.encode(), JSON_CONTENT_TYPE
    schema = SCHEMAS.get((event_type, schema_version))
    if schema is None:
        raise UndecodableEvent(f"no schema for {event_type} v{schema_version}")
    row = _typed(_flatten(event_type, payload))
    batch = pa.RecordBatch.from_pylist([row], schema=schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes(), ARROW_CONTENT_TYPE


def decode(value: bytes, *, content_type: str, event_type: str) -> dict[str, Any]:
    """An event's fields with amounts as ``Decimal`` and timestamps as aware ``datetime``."""
    try:
        if content_type == JSON_CONTENT_TYPE:
            loaded = json.loads(value, parse_float=Decimal)
            if not isinstance(loaded, dict):
                raise UndecodableEvent("a JSON event must be an object")
            return _typed(loaded)
        if content_type == ARROW_CONTENT_TYPE:
            reader = pa.ipc.open_stream(value)
            rows = reader.read_all().to_pylist()
            if len(rows) != 1:
                raise UndecodableEvent(f"expected one row, got {len(rows)}")
            return _nest(event_type, rows[0])
    except UndecodableEvent:
        raise
    except (pa.ArrowException, ValueError, TypeError, KeyError) as error:
        raise UndecodableEvent(f"cannot decode {content_type} event: {error}") from error
    raise UndecodableEvent(f"unknown content type {content_type!r}")


def payload_text(fields: dict[str, Any]) -> dict[str, Any]:
    """Decoded fields back to the JSON payload form (decimal strings, ISO timestamps)."""
    convert: dict[type, Callable[[Any], Any]] = {
        Decimal: lambda value: format(value.quantize(Decimal("0.01")), "f"),
        datetime: lambda value: value.isoformat(),
    }
    return {
        key: convert[type(value)](value) if type(value) in convert else value
        for key, value in fields.items()
    }
