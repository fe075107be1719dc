"""The event schemas by id and version, and their publication on ``banking.schemas``.

An event's ``ce_dataschema`` header names its schema: ``urn:banking:schema:transaction.v2``,
the schema id ``transaction.v2``. The columns are ``events.schemas``'; what a version adds is
how an Arrow value is framed:

- **v1**: a one-row Arrow IPC *stream* per message, the schema inside every message
  (``application/vnd.apache.arrow.stream``). Still read, no longer written.
- **v2**: the same columns, the IPC record batch message alone
  (``application/vnd.apache.arrow.recordbatch``, ``events.arrow_ipc``): a reader needs the
  schema, found by the schema id. The JSON encoding is the same in both versions.
- **transaction v3** (current): v2's framing, and three columns more: the leg's ``metadata``
  (a string map) and its ``reverses_transaction_id`` and ``hold_id`` links. A reader of v2
  sees none of them; a reader of v3 reads v1 and v2 events with an empty map and no links.

The schemas that came later (fraud alerts, held commands, notifications, staff actions) were
framed as record batches from their v1.

The schemas are published on the compacted topic ``banking.schemas``, keyed by schema id,
each as an Arrow IPC stream holding only the schema (``pyarrow.ipc.read_schema`` or
``open_stream(...).schema`` reads it), with the schema id, event types and framing in its
metadata. ``banking kafka create-topics`` publishes them, and the relay does before its first
event, so a new version is resolvable before anything uses it. ``banking schemas list|show``
prints them.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Any, Final

import pyarrow as pa

from banking.events import envelope, outbox, topics
from banking.events.arrow_ipc import RecordBatchCodec
from banking.events.schemas import (
    BALANCE_SCHEMA_V1,
    COMMAND_SCHEMA_V1,
    COMMAND_SCHEMA_V3,
    FRAUD_ALERT_SCHEMA_V1,
    HELD_SCHEMA_V1,
    HOLD_SCHEMA_V1,
    NOTIFICATION_SCHEMA_V1,
    STAFF_ACTION_SCHEMA_V1,
    TRANSACTION_SCHEMA_V1,
    TRANSACTION_SCHEMA_V3,
)
from banking.events.transport import Message

ARROW_STREAM_CONTENT_TYPE: Final = "application/vnd.apache.arrow.stream"
# Not a registered media type: one encapsulated IPC message holding a RecordBatch (the
# registered ``.stream`` one is a schema followed by batches, which v1 sent every time).
ARROW_BATCH_CONTENT_TYPE: Final = "application/vnd.apache.arrow.recordbatch"
SCHEMA_EVENT_TYPE: Final = "schema.published"


class Framing(StrEnum):
    STREAM = "stream"  # v1: schema and batch in every message
    RECORD_BATCH = "record_batch"  # v2: the batch alone; the schema by reference


@dataclass(frozen=True)
class EventSchema:
    """One version of one event schema."""

    name: str
    version: int
    schema: pa.Schema
    event_types: tuple[str, ...]
    # Whether v1 of this schema sent the schema in every message (the first three families).
    streamed_v1: bool = True

    @property
    def schema_id(self) -> str:
        return envelope.schema_id(self.name, self.version)

    @property
    def dataschema(self) -> str:
        return envelope.dataschema(self.schema_id)

    @property
    def framing(self) -> Framing:
        if self.version == 1 and self.streamed_v1:
            return Framing.STREAM
        return Framing.RECORD_BATCH

    @property
    def arrow_content_type(self) -> str:
        if self.framing is Framing.STREAM:
            return ARROW_STREAM_CONTENT_TYPE
        return ARROW_BATCH_CONTENT_TYPE

    @cached_property
    def codec(self) -> RecordBatchCodec:
        return RecordBatchCodec(self.schema)

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the schema's IPC form (columns and types; metadata left out)."""
        return fingerprint_of(self.schema)

    @cached_property
    def published_schema(self) -> pa.Schema:
        """The schema as published: the columns, and what they are for in the metadata."""
        return self.schema.with_metadata(
            {
                "banking.schema_id": self.schema_id,
                "banking.event_types": ",".join(self.event_types),
                "banking.framing": self.framing.value,
                "banking.content_type": self.arrow_content_type,
                "banking.fingerprint": self.fingerprint,
            }
        )

    @cached_property
    def ipc_stream(self) -> bytes:
        """The published schema as an Arrow IPC stream with no record batch."""
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, self.published_schema):
            pass
        return bytes(sink.getvalue().to_pybytes())

    def description(self) -> dict[str, Any]:
        """The schema as JSON (what ``banking schemas show`` prints)."""
        return describe(self.ipc_stream)


def fingerprint_of(schema: pa.Schema) -> str:
    """SHA-256 of a schema's IPC form without its metadata: equal for equal columns."""
    plain = schema.remove_metadata()
    return "sha256:" + hashlib.sha256(plain.serialize().to_pybytes()).hexdigest()


def describe(ipc_stream: bytes) -> dict[str, Any]:
    """A published schema (an Arrow IPC stream, as on ``banking.schemas``) as JSON."""
    schema = pa.ipc.open_stream(ipc_stream).schema
    metadata = {key.decode(): value.decode() for key, value in (schema.metadata or {}).items()}
    schema_id = metadata.get("banking.schema_id", "")
    event_types = metadata.get("banking.event_types", "")
    parsed = envelope.parse_schema_id(schema_id)
    return {
        "schema_id": schema_id,
        "dataschema": envelope.dataschema(schema_id),
        "version": parsed[1] if parsed else None,
        "event_types": event_types.split(",") if event_types else [],
        "framing": metadata.get("banking.framing"),
        "content_types": [metadata.get("banking.content_type"), "application/json"],
        "fingerprint": fingerprint_of(schema),
        "fields": [
            {"name": field.name, "type": str(field.type), "nullable": field.nullable}
            for field in schema
        ],
        "arrow_ipc_stream_base64": base64.b64encode(ipc_stream).decode(),
    }


_TRANSACTION_EVENTS: Final = (
    outbox.EVENT_TRANSACTION_COMPLETED,
    outbox.EVENT_TRANSACTION_FAILED,
    outbox.EVENT_TRANSACTION_REJECTED,
)
# name -> (columns, event types, current version); every version from 1 to it is readable.
# Columns are one schema for every version, or {first version: schema} where they changed.
_FAMILIES: Final[dict[str, tuple[pa.Schema | dict[int, pa.Schema], tuple[str, ...], int]]] = {
    "transaction": (
        {1: TRANSACTION_SCHEMA_V1, 3: TRANSACTION_SCHEMA_V3},
        _TRANSACTION_EVENTS,
        outbox.TRANSACTION_SCHEMA_VERSION,
    ),
    "balance": (BALANCE_SCHEMA_V1, (outbox.EVENT_BALANCE_UPDATED,), outbox.BALANCE_SCHEMA_VERSION),
    "command": (
        {1: COMMAND_SCHEMA_V1, 3: COMMAND_SCHEMA_V3},
        (outbox.EVENT_TRANSACTION_SUBMITTED,),
        outbox.COMMAND_SCHEMA_VERSION,
    ),
    "fraud_alert": (
        FRAUD_ALERT_SCHEMA_V1,
        (outbox.EVENT_FRAUD_ALERT,),
        outbox.FRAUD_SCHEMA_VERSION,
    ),
    "held": (HELD_SCHEMA_V1, (outbox.EVENT_TRANSACTION_HELD,), outbox.HELD_SCHEMA_VERSION),
    "notification": (
        NOTIFICATION_SCHEMA_V1,
        (outbox.EVENT_NOTIFICATION,),
        outbox.NOTIFICATION_SCHEMA_VERSION,
    ),
    "staff_action": (
        STAFF_ACTION_SCHEMA_V1,
        outbox.STAFF_EVENT_TYPES,
        outbox.STAFF_ACTION_SCHEMA_VERSION,
    ),
    "hold": (HOLD_SCHEMA_V1, outbox.HOLD_EVENT_TYPES, outbox.HOLD_SCHEMA_VERSION),
}
_STREAMED_V1: Final = frozenset({"transaction", "balance", "command"})


def _columns_at(columns: pa.Schema | dict[int, pa.Schema], version: int) -> pa.Schema:
    """A family's columns in ``version``: those of the latest change at or before it."""
    if isinstance(columns, pa.Schema):
        return columns
    return columns[max(first for first in columns if first <= version)]


SCHEMAS: Final[dict[str, EventSchema]] = {
    entry.schema_id: entry
    for name, (columns, event_types, current) in _FAMILIES.items()
    for entry in (
        EventSchema(
            name,
            version,
            _columns_at(columns, version),
            event_types,
            streamed_v1=name in _STREAMED_V1,
        )
        for version in range(1, current + 1)
    )
}
_BY_EVENT: Final = {
    (event_type, entry.version): entry
    for entry in SCHEMAS.values()
    for event_type in entry.event_types
}
CURRENT_VERSIONS: Final[dict[str, int]] = {
    event_type: current
    for _, event_types, current in _FAMILIES.values()
    for event_type in event_types
}


def lookup(event_type: str, version: int | None = None) -> EventSchema | None:
    """The schema of an event type in a version (the current one by default)."""
    if version is None:
        version = CURRENT_VERSIONS.get(event_type)
    return _BY_EVENT.get((event_type, version)) if version is not None else None


def by_id(schema_id: str) -> EventSchema | None:
    """A schema by its id (``transaction.v2``) or its ``ce_dataschema`` URN."""
    return SCHEMAS.get(schema_id.removeprefix(envelope.DATASCHEMA_PREFIX))


def schema_messages() -> list[Message]:
    """The ``banking.schemas`` records: one per schema version, keyed by schema id."""
    return [
        Message(
            topics.SCHEMAS,
            entry.schema_id,
            entry.ipc_stream,
            {
                envelope.CE_SPECVERSION: envelope.SPEC_VERSION,
                envelope.CE_ID: f"{entry.schema_id}@{entry.fingerprint}",
                envelope.CE_SOURCE: envelope.EVENT_SOURCE,
                envelope.CE_TYPE: SCHEMA_EVENT_TYPE,
                envelope.CE_SUBJECT: entry.schema_id,
                envelope.CONTENT_TYPE: ARROW_STREAM_CONTENT_TYPE,
            },
        )
        for entry in SCHEMAS.values()
    ]
