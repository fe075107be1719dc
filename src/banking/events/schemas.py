"""The Arrow form of the ledger's records, each defined once.

A leg's columns exist here only: the history export (``rest/statements.py``, Arrow IPC and
Parquet) is ``LEG_SCHEMA`` itself, and the Kafka transaction event v1 is derived from it by
``TRANSACTION_V1`` (columns left out, columns named differently). The balance event v1 is
derived the same way from ``BALANCE_SCHEMA``. Both the JSON payloads of those events
(``events/outbox.py``) and their Arrow encoding (``events/serialization.py``) follow these
columns, so the two encodings cannot disagree on a name or a type. Schema v2 of the events
has exactly these columns (it changed how Arrow values are framed, see ``events.registry``),
so the ``*_V1`` names below are the columns of v1 and v2 alike. The transaction event v3
(``TRANSACTION_V3``) adds a leg's metadata and its reversal and hold links.

Amounts are ``decimal128(18,2)`` (text with two decimal places in JSON), timestamps
microseconds UTC (ISO 8601 in JSON), identifiers and enum values strings.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from decimal import Decimal
from enum import Enum
from functools import partial
from typing import Any, Final

import pyarrow as pa

MONEY: Final = pa.decimal128(18, 2)
TIME: Final = pa.timestamp("us", tz="UTC")
# A string map (metadata): a map in Arrow, an object in JSON, never null (empty when none).
LABELS: Final = pa.map_(pa.string(), pa.string())
# In the events a string map is text: a JSON object with sorted keys and no spaces, in the
# Arrow and the JSON encoding alike (the one-row event codec, ``events.arrow_ipc``, writes flat
# columns only; ``"{}"`` when empty).
LABELS_TEXT: Final = pa.field("metadata", pa.string()).with_metadata(
    {"encoding": "application/json"}
)

# One leg (``domain.records.Transaction``), named as in the record, in wire order.
LEG_SCHEMA: Final = pa.schema(
    [
        ("transaction_id", pa.string()),
        ("account_id", pa.string()),
        ("transaction_type", pa.string()),
        ("amount", MONEY),
        ("currency", pa.string()),
        ("description", pa.string()),
        ("reference_id", pa.string()),
        ("created_at", TIME),
        ("status", pa.string()),
        ("related_transaction_id", pa.string()),
        ("failure_code", pa.string()),
        ("available_balance_after", MONEY),
        ("metadata", LABELS),
        ("reverses_transaction_id", pa.string()),
        ("hold_id", pa.string()),
    ]
)

# A balance (``domain.records.Balance``), named as in the record, in the event's wire order.
BALANCE_SCHEMA: Final = pa.schema(
    [
        ("account_id", pa.string()),
        ("current_balance", MONEY),
        ("available_balance", MONEY),
        ("currency", pa.string()),
        ("version", pa.int64()),
        ("last_updated", TIME),
    ]
)

# Where the Kafka events v1 name a record's field differently. v1 follows the sketch, which
# calls every event's time "timestamp", and it is a published schema version: consumers read
# these names, so a rename needs a v2 (and readers that keep accepting v1). The history export
# is not bound by the sketch and keeps the record's names (``created_at``).
TRANSACTION_V1_NAMES: Final[Mapping[str, str]] = {"created_at": "timestamp"}
BALANCE_V1_NAMES: Final[Mapping[str, str]] = {"last_updated": "timestamp"}
# Leg columns the transaction event leaves out: the balance after a leg is the balance
# event's (published next to it, with its version).
TRANSACTION_OMITS: Final = frozenset({"available_balance_after"})
# The columns that v3 added (metadata, the reversal and hold links): v1 and v2 leave them out.
TRANSACTION_V3_ADDS: Final = frozenset({"metadata", "reverses_transaction_id", "hold_id"})
TRANSACTION_V1_OMITS: Final = TRANSACTION_OMITS | TRANSACTION_V3_ADDS


_Convert = Callable[[Any], object]


class Columns:
    """Some fields of a record as Arrow columns, in wire order, each with its wire name and
    its conversion (chosen once, by the column's Arrow type)."""

    __slots__ = ("_arrow", "_text", "pairs")

    def __init__(self, pairs: tuple[tuple[str, pa.Field], ...]) -> None:
        self.pairs = pairs  # (record field, column)
        self._arrow = tuple((field, col.name, _arrow_value(col)) for field, col in pairs)
        self._text = tuple((field, col.name, _text_value(col)) for field, col in pairs)

    @classmethod
    def of(
        cls,
        schema: pa.Schema,
        *,
        names: Mapping[str, str] | None = None,
        omit: Collection[str] = (),
        labels_as_text: bool = False,
    ) -> Columns:
        """The columns of ``schema`` but ``omit``, renamed to their wire ``names``; with
        ``labels_as_text``, string maps as JSON text (``LABELS_TEXT``)."""
        names = names or {}
        unknown = (set(names) | set(omit)) - set(schema.names)
        if unknown:
            raise ValueError(f"not columns of the schema: {sorted(unknown)}")

        def column(field: pa.Field) -> pa.Field:
            if labels_as_text and pa.types.is_map(field.type):
                field = LABELS_TEXT.with_name(field.name)
            return field.with_name(names.get(field.name, field.name))

        return cls(tuple((field.name, column(field)) for field in schema if field.name not in omit))

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([column for _, column in self.pairs])

    @property
    def wire_names(self) -> dict[str, str]:
        """Record field -> column name."""
        return {field: column.name for field, column in self.pairs}

    def arrow_row(self, source: object) -> dict[str, Any]:
        """The row of a record (or of a mapping keyed by its field names) by column name, in
        values Arrow takes exactly: ``Decimal`` amounts, aware datetimes, strings."""
        value = _getter(source)
        return {name: convert(value(field)) for field, name, convert in self._arrow}

    def text_row(self, source: object) -> dict[str, Any]:
        """The same row as JSON values: decimal strings, ISO 8601 times, strings."""
        value = _getter(source)
        return {name: convert(value(field)) for field, name, convert in self._text}


def _getter(source: object) -> Callable[[str], object]:
    if isinstance(source, Mapping):
        return source.__getitem__
    return partial(getattr, source)


def _arrow_value(column: pa.Field) -> _Convert:
    column_type = column.type
    if pa.types.is_map(column_type):
        return _pairs
    if column.metadata and column.metadata.get(b"encoding") == b"application/json":
        return labels_text
    if pa.types.is_decimal(column_type):
        quantum = Decimal(1).scaleb(-column_type.scale)
        return lambda value: None if value is None else value.quantize(quantum)
    if pa.types.is_string(column_type):
        return _string
    return _as_is


def _text_value(column: pa.Field) -> _Convert:
    column_type = column.type
    if pa.types.is_map(column_type):
        return _mapping
    if pa.types.is_decimal(column_type):
        quantum = Decimal(1).scaleb(-column_type.scale)
        return lambda value: None if value is None else format(value.quantize(quantum), "f")
    if pa.types.is_timestamp(column_type):
        return lambda value: None if value is None else value.isoformat()
    return _arrow_value(column)


def _string(value: object) -> object:
    """Identifiers and enum values as their text."""
    if value is None or type(value) is str:
        return value
    return value.value if isinstance(value, Enum) else str(value)


def _as_is(value: object) -> object:
    return value


def _pairs(value: object) -> object:
    """A string map as Arrow takes it: its (key, value) pairs, sorted by key."""
    return sorted(_mapping(value).items())


def labels_text(value: object) -> str:
    """A string map as the events' JSON text (sorted keys, no spaces); a text passes as is."""
    if isinstance(value, str):
        return value
    return json.dumps(_mapping(value), separators=(",", ":"), sort_keys=True)


def _mapping(value: object) -> dict[str, str]:
    """A string map as a dict, from a mapping or from Arrow's (key, value) pairs."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(sorted(value.items()))
    return dict(sorted(value))  # type: ignore[call-overload]


# --- the schemas in use ----------------------------------------------------------------------

HISTORY: Final = Columns.of(LEG_SCHEMA)
TRANSACTION_V1: Final = Columns.of(
    LEG_SCHEMA, names=TRANSACTION_V1_NAMES, omit=TRANSACTION_V1_OMITS
)
# v3: v2's columns and the leg's metadata and links (an event's time keeps v1's name).
TRANSACTION_V3: Final = Columns.of(
    LEG_SCHEMA, names=TRANSACTION_V1_NAMES, omit=TRANSACTION_OMITS, labels_as_text=True
)
BALANCE_V1: Final = Columns.of(BALANCE_SCHEMA, names=BALANCE_V1_NAMES)

HISTORY_SCHEMA: Final = HISTORY.schema
TRANSACTION_SCHEMA_V1: Final = TRANSACTION_V1.schema
TRANSACTION_SCHEMA_V3: Final = TRANSACTION_V3.schema
BALANCE_SCHEMA_V1: Final = BALANCE_V1.schema
# A command (``domain.records.Command``) is nested (its request, its requester); its event is
# flat in Arrow (``requested_by`` becomes three columns) and nested in JSON, so it is written
# in its wire names. Its one mapping is ``outbox.command_payload`` (and back,
# ``events.commands.command_from_payload``).
COMMAND_SCHEMA_V1: Final = pa.schema(
    [
        ("transaction_id", pa.string()),
        ("command", pa.string()),
        ("account_id", pa.string()),
        ("destination_account_id", pa.string()),
        ("amount", MONEY),
        ("currency", pa.string()),
        ("description", pa.string()),
        ("reference_id", pa.string()),
        ("requested_by_user_id", pa.string()),
        ("requested_by_username", pa.string()),
        ("requested_by_role", pa.string()),
        ("timestamp", TIME),
    ]
)
# v3 adds the movement's metadata (JSON text, as in the transaction event v3).
COMMAND_SCHEMA_V3: Final = COMMAND_SCHEMA_V1.append(LABELS_TEXT)

# A fraud alert (``domain.records.FraudAlert``), flat: the leg's identity and amount, the score
# as decimal text (exact, four places) and the reasons joined by commas, most important first.
FRAUD_ALERT_SCHEMA_V1: Final = pa.schema(
    [
        ("alert_id", pa.string()),
        ("transaction_id", pa.string()),
        ("account_id", pa.string()),
        ("transaction_type", pa.string()),
        ("status", pa.string()),
        ("amount", MONEY),
        ("currency", pa.string()),
        ("counterparty_account_id", pa.string()),
        ("score", pa.string()),
        ("reasons", pa.string()),
        ("model_version", pa.string()),
        ("decision", pa.string()),
        ("timestamp", TIME),
    ]
)
# A held command (``domain.records.CommandHeld``): the command's movement, why it waits.
HELD_SCHEMA_V1: Final = pa.schema(
    [
        ("transaction_id", pa.string()),
        ("command", pa.string()),
        ("account_id", pa.string()),
        ("destination_account_id", pa.string()),
        ("amount", MONEY),
        ("currency", pa.string()),
        ("description", pa.string()),
        ("reference_id", pa.string()),
        ("hold_reason", pa.string()),
        ("score", pa.string()),
        ("reasons", pa.string()),
        ("model_version", pa.string()),
        ("timestamp", TIME),
    ]
)
# A notification (``domain.records.Notification``), keyed by its user.
NOTIFICATION_SCHEMA_V1: Final = pa.schema(
    [
        ("notification_id", pa.string()),
        ("user_id", pa.string()),
        ("source_event_id", pa.string()),
        ("source_event_type", pa.string()),
        ("account_id", pa.string()),
        ("transaction_id", pa.string()),
        ("amount", MONEY),
        ("currency", pa.string()),
        ("message", pa.string()),
        ("timestamp", TIME),
    ]
)
# A staff action that moves no money (``domain.records.StaffAction``), on
# ``banking.audit.actions``: flat, the actor as three columns, each target id its own column,
# the details as JSON text (never a secret). One schema for every ``staff.*`` event type.
STAFF_ACTION_SCHEMA_V1: Final = pa.schema(
    [
        ("action_id", pa.string()),
        ("action", pa.string()),
        ("actor_user_id", pa.string()),
        ("actor_username", pa.string()),
        ("actor_role", pa.string()),
        ("account_id", pa.string()),
        ("user_id", pa.string()),
        ("transaction_id", pa.string()),
        ("webhook_id", pa.string()),
        ("details", pa.string()),
        ("timestamp", TIME),
    ]
)
# A hold (``domain.records.Hold``), named as in the record, on ``banking.holds``: one schema
# for every ``hold.*`` event type (the state after the change).
HOLD_SCHEMA: Final = pa.schema(
    [
        ("hold_id", pa.string()),
        ("account_id", pa.string()),
        ("destination_account_id", pa.string()),
        ("amount", MONEY),
        ("captured_amount", MONEY),
        ("currency", pa.string()),
        ("description", pa.string()),
        ("reference_id", pa.string()),
        ("status", pa.string()),
        ("expires_at", TIME),
        ("created_at", TIME),
        ("updated_at", TIME),
        ("closed_at", TIME),
        ("created_by", pa.string()),
    ]
)
HOLD_V1: Final = Columns.of(HOLD_SCHEMA)
HOLD_SCHEMA_V1: Final = HOLD_V1.schema
