"""Every field of a domain record is in every format that carries the record, unless
``NOT_CARRIED`` says why not; and the formats with a way back give the exact values back.

A field is carried by a format when changing it changes what the format writes (under the
field's wire name, where the format names its fields after the record's). So a new field of
``Account``, ``Balance``, ``Transaction`` or ``Command`` fails here until each format carries
it or ``NOT_CARRIED`` lists it with the reason. No database, broker or server is needed.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields, is_dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, get_type_hints
from uuid import UUID

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.protobuf.message import Message

from banking.domain.records import (
    Account,
    Balance,
    Command,
    DebitOrCredit,
    Hold,
    HoldChange,
    HoldChanged,
    HoldStatus,
    Transaction,
    TransactionStatus,
    TransactionType,
    TransferRequest,
)
from banking.domain.roles import Actor, Role
from banking.events import outbox, registry, schemas
from banking.events.commands import command_from_payload
from banking.events.serialization import EventFormat, decode, encode, payload_text
from banking.grpc import client, mapping
from banking.rest import statements
from banking.rest.schemas import (
    AccountRead,
    BalanceRead,
    HoldRead,
    MovementRead,
    TransactionRead,
)

RECORDS = (Account, Balance, Transaction, Command, Hold)

# Samples with every optional field set, amounts at both ends of decimal128(18, 2).
CREATED = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)
LEG = Transaction(
    transaction_id=UUID("6f1c1b8e-9a38-4a2e-8d8c-0f5b1f3c2a10"),
    account_id=UUID("0d4f5b3e-1c2a-4e7f-9b8d-3a2c1e0f9d8b"),
    transaction_type=TransactionType.TRANSFER_OUT,
    amount=Decimal("9999999999999999.99"),
    currency="USD",
    description="rent",
    reference_id="TEST-1",
    status=TransactionStatus.COMPLETED,
    created_at=CREATED,
    related_transaction_id=UUID("7f1c1b8e-9a38-4a2e-8d8c-0f5b1f3c2a10"),
    counterparty_account_id=UUID("1d4f5b3e-1c2a-4e7f-9b8d-3a2c1e0f9d8b"),
    failure_code="INSUFFICIENT_FUNDS",
    failure_reason="balance too low",
    available_balance_after=Decimal("0.10"),
    balance_version_after=7,
    hold_reason="fraud score 0.9500 (new_counterparty)",
    metadata={"order_id": "42", "channel": "web"},
    reverses_transaction_id=UUID("8f1c1b8e-9a38-4a2e-8d8c-0f5b1f3c2a10"),
    hold_id=UUID("9f1c1b8e-9a38-4a2e-8d8c-0f5b1f3c2a10"),
)
BARE_LEG = replace(
    LEG,
    transaction_type=TransactionType.DEBIT,
    amount=Decimal("0.1"),
    description=None,
    related_transaction_id=None,
    counterparty_account_id=None,
    failure_code=None,
    failure_reason=None,
    available_balance_after=None,
    balance_version_after=None,
    hold_reason=None,
    metadata={},
    reverses_transaction_id=None,
    hold_id=None,
)
ACCOUNT = Account(
    account_id=LEG.account_id,
    account_number="1234567890",
    customer_id=UUID("2d4f5b3e-1c2a-4e7f-9b8d-3a2c1e0f9d8b"),
    account_type="checking",
    currency="USD",
    is_active=True,
    created_at=CREATED,
    updated_at=CREATED + timedelta(days=1),
    metadata={"branch": "north"},
)
BALANCE = Balance(
    account_id=LEG.account_id,
    currency="USD",
    current_balance=Decimal("9999999999999999.99"),
    available_balance=Decimal("0.1"),
    version=3,
    last_updated=CREATED,
)
ACTOR = Actor(UUID("3d4f5b3e-1c2a-4e7f-9b8d-3a2c1e0f9d8b"), "alice", Role.TELLER)
TRANSFER = Command(
    transaction_id=LEG.transaction_id,
    kind=TransactionType.TRANSFER_OUT,
    request=TransferRequest(
        LEG.account_id, ACCOUNT.customer_id, Decimal("0.10"), "EUR", "rent", "TEST-1"
    ),
    actor=ACTOR,
    trace_id="0af7651916cd43dd8448eb211c80319c",
)
DEBIT = Command(
    transaction_id=LEG.transaction_id,
    kind=TransactionType.DEBIT,
    request=DebitOrCredit(LEG.account_id, Decimal("9999999999999999.99"), "USD", None, "r-2"),
    actor=replace(ACTOR, role=Role.CUSTOMER),
    trace_id=None,
)
HOLD = Hold(
    hold_id=UUID("8f1c1b8e-9a38-4a2e-8d8c-0f5b1f3c2a10"),
    account_id=LEG.account_id,
    destination_account_id=LEG.counterparty_account_id,
    amount=Decimal("9999999999999999.99"),
    captured_amount=Decimal("0.10"),
    currency="USD",
    description="deposit",
    reference_id="HOLD-1",
    status=HoldStatus.OPEN,
    expires_at=CREATED + timedelta(days=7),
    created_at=CREATED,
    updated_at=CREATED + timedelta(hours=1),
    closed_at=CREATED + timedelta(hours=2),
    created_by=ACTOR.user_id,
)
SAMPLES: dict[type, Any] = {
    Account: ACCOUNT,
    Balance: BALANCE,
    Transaction: LEG,
    Command: TRANSFER,
    Hold: HOLD,
}

# --- deliberate exclusions: the one table -------------------------------------------------
# format family -> record field (``request.x`` for a field of a nested record) -> why not.
_BALANCE_AFTER = "a leg read later has no balance after it: only a movement's answer carries it"
_HELD = (
    "the fraud review is REST only for now; a held leg is published on "
    "banking.transactions.held with its reason"
)
_CREATED_BY = "who authorized a hold is kept for the audit (its event carries it), not shown"
NOT_CARRIED: dict[str, dict[str, str]] = {
    "REST HoldRead": {"created_by": _CREATED_BY},
    "gRPC Hold": {"created_by": _CREATED_BY},
    "REST TransactionRead": {
        "available_balance_after": _BALANCE_AFTER,
        "balance_version_after": _BALANCE_AFTER,
    },
    "gRPC Transaction": {
        "available_balance_after": _BALANCE_AFTER,
        "balance_version_after": _BALANCE_AFTER,
        "hold_reason": _HELD,
    },
    "gRPC TransactionResponse": {
        "description": "the sketch's response to a movement: the caller sent it",
        "counterparty_account_id": "the sketch's response to a movement: the caller sent it",
        "failure_code": "a completed movement has none (a decline is an error status)",
        "failure_reason": "a completed movement has none (a decline is an error status)",
        "hold_reason": "a movement's answer is never held (only asynchronous commands are)",
    },
    "Kafka transaction event": {
        "counterparty_account_id": "not in the published schema (v1, v2); "
        "related_transaction_id links a transfer's legs",
        "failure_reason": "not in the published schema (free text; failure_code is stable)",
        "available_balance_after": "the balance event published with it carries the balance",
        "balance_version_after": "the balance event published with it carries the version",
        "hold_reason": "a held leg's event is the banking.transactions.held one, with its reason",
    },
    "Kafka command event": {
        "trace_id": "travels as the outbox row's trace_id (the traceparent Kafka header), not "
        "in the payload",
    },
    "Kafka rejection event (transaction schema)": {
        "actor": "a transaction event has no requester (the command event has it)",
        "trace_id": "travels as the outbox row's trace_id (the traceparent Kafka header), not "
        "in the payload",
        "request.destination_account_id": "the transaction schema has no counterparty column",
    },
    "Kafka balance event": {
        "overdraft_limit": "a balance event follows a movement, which never changes the limit; "
        "a change of the limit is its own event (staff.overdraft_limit_set on "
        "banking.audit.actions, with the new and the previous limit)",
    },
    "history export": {
        "counterparty_account_id": "not an export column; related_transaction_id links the legs",
        "failure_reason": "not an export column (free text; failure_code is stable)",
        "balance_version_after": "internal: the export shows the balance, not its version",
        "hold_reason": "not an export column (free text; the fraud review shows it)",
    },
}


# --- the formats: a record -> the fields it writes, by wire name ----------------------------


@dataclass(frozen=True)
class Format:
    family: str
    encoding: str
    record: type
    write: Callable[[Any], dict[str, Any]]
    # record field -> wire name where they differ; None: the format does not name its fields
    # after the record's (a command's request and requester are flattened or nested).
    names: Mapping[str, str] | None = dataclasses.field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.family}, {self.encoding}"


def _rest(build: Callable[[Any], Any]) -> Callable[[Any], dict[str, Any]]:
    return lambda record: json.loads(build(record).model_dump_json())


def _grpc(build: Callable[[Any], Message]) -> Callable[[Any], dict[str, Any]]:
    def write(record: Any) -> dict[str, Any]:
        message = build(record)
        message = type(message).FromString(message.SerializeToString())
        # Not the leg's fields: what has been reversed of its movement (``Reversals``), which
        # GetTransaction adds to the leg (tests/grpc/test_reversals.py).
        return {
            field.name: getattr(message, field.name)
            for field in message.DESCRIPTOR.fields
            if field.name not in mapping.REVERSAL_FIELDS
        }

    return write


def _arrow_row(value: bytes) -> dict[str, Any]:
    rows = pa.ipc.open_stream(value).read_all().to_pylist()
    assert len(rows) == 1
    return dict(rows[0])


def _kafka(
    event_type: str, payload: Callable[[Any], dict[str, Any]], event_format: EventFormat
) -> Callable[[Any], dict[str, Any]]:
    """The event as published (the current schema version), read back by a generic reader:
    ``json`` or pyarrow given the published schema."""
    published = registry.lookup(event_type)
    assert published is not None

    def write(record: Any) -> dict[str, Any]:
        text = json.loads(json.dumps(payload(record)))  # as stored in the outbox
        value, _ = encode(event_type, published.version, text, event_format)
        if event_format is EventFormat.JSON:
            return dict(json.loads(value))
        batch = pa.ipc.read_record_batch(pa.py_buffer(value), published.schema)
        [row] = batch.to_pylist()
        return dict(row)

    return write


def _rejection(command: Command) -> dict[str, Any]:
    payload = json.loads(
        outbox.rejection_event(command, "ACCOUNT_NOT_FOUND", "no account")["payload"]
    )
    del payload["timestamp"]  # the time of the rejection, not of the command
    return dict(payload)


def _parquet_row(legs: list[Transaction]) -> dict[str, Any]:
    return dict(pq.read_table(io.BytesIO(statements.to_parquet(legs))).to_pylist()[0])


def _inverse(renamed: Mapping[str, str]) -> dict[str, str]:
    return {record_field: wire for wire, record_field in renamed.items()}


FORMATS = [
    Format("REST TransactionRead", "JSON", Transaction, _rest(TransactionRead.of)),
    Format(
        "REST MovementRead",
        "JSON",
        Transaction,
        _rest(MovementRead.of_movement),
        _inverse(MovementRead.RENAMED),
    ),
    Format("REST AccountRead", "JSON", Account, _rest(AccountRead.of)),
    Format("REST BalanceRead", "JSON", Balance, _rest(BalanceRead.of)),
    Format("gRPC Transaction", "protobuf", Transaction, _grpc(mapping.transaction_message)),
    Format(
        "gRPC TransactionResponse",
        "protobuf",
        Transaction,
        _grpc(mapping.movement_message),
        _inverse(mapping.MOVEMENT_FIELDS),
    ),
    Format("gRPC Account", "protobuf", Account, _grpc(mapping.account_message)),
    Format("gRPC Balance", "protobuf", Balance, _grpc(mapping.balance_message)),
    *[
        Format(
            "Kafka transaction event",
            event_format.value,
            Transaction,
            _kafka(outbox.EVENT_TRANSACTION_COMPLETED, outbox.transaction_payload, event_format),
            schemas.TRANSACTION_V3.wire_names,
        )
        for event_format in EventFormat
    ],
    *[
        Format(
            "Kafka balance event",
            event_format.value,
            Balance,
            _kafka(outbox.EVENT_BALANCE_UPDATED, outbox.balance_payload, event_format),
            schemas.BALANCE_V1.wire_names,
        )
        for event_format in EventFormat
    ],
    *[
        Format(
            "Kafka command event",
            event_format.value,
            Command,
            _kafka(
                outbox.EVENT_TRANSACTION_SUBMITTED,
                lambda command: outbox.command_payload(command, at=CREATED),
                event_format,
            ),
            None,
        )
        for event_format in EventFormat
    ],
    Format("Kafka rejection event (transaction schema)", "JSON", Command, _rejection, None),
    Format("REST HoldRead", "JSON", Hold, _rest(HoldRead.of)),
    Format("gRPC Hold", "protobuf", Hold, _grpc(mapping.hold_message)),
    *[
        Format(
            "Kafka hold event",
            event_format.value,
            Hold,
            _kafka(
                "hold.authorized",
                lambda hold: outbox.hold_payload(
                    HoldChanged(hold, HoldChange.AUTHORIZED, (), None)
                ),
                event_format,
            ),
            schemas.HOLD_V1.wire_names,
        )
        for event_format in EventFormat
    ],
    Format(
        "history export",
        "Arrow IPC",
        Transaction,
        lambda leg: _arrow_row(statements.to_arrow_stream([leg])),
        schemas.HISTORY.wire_names,
    ),
    Format(
        "history export",
        "Parquet",
        Transaction,
        lambda leg: _parquet_row([leg]),
        schemas.HISTORY.wire_names,
    ),
]


# --- changing one field ---------------------------------------------------------------------


def _other(value: object) -> object:
    """A different valid value of the same type."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, Enum):
        members = list(type(value))
        return members[members.index(value) - 1]
    if isinstance(value, int):
        return value + 1
    if isinstance(value, Decimal):
        return value - Decimal("1.01") if value > 2 else value + Decimal("1.01")
    if isinstance(value, str):
        return f"{value}-other"
    if isinstance(value, UUID):
        return UUID(int=value.int ^ 1)
    if isinstance(value, datetime):
        return value + timedelta(seconds=1, microseconds=1)
    if isinstance(value, Mapping):
        return {**value, "other": "value"}
    raise TypeError(f"no other value for {value!r}: extend _other")


def _variants(record: Any) -> Iterator[tuple[str, str, Any]]:
    """``(top-level field, label, record with that field changed)`` for every field, and for
    every field of a nested record (``request.amount``)."""
    for field in fields(record):
        value = getattr(record, field.name)
        if is_dataclass(value) and not isinstance(value, type):
            for inner in fields(value):
                changed = replace(value, **{inner.name: _other(getattr(value, inner.name))})
                yield (
                    field.name,
                    f"{field.name}.{inner.name}",
                    replace(record, **{field.name: changed}),
                )
        else:
            yield field.name, field.name, replace(record, **{field.name: _other(value)})


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda fmt: fmt.id)
def test_every_field_is_carried_or_left_out_on_purpose(fmt: Format) -> None:
    sample = SAMPLES[fmt.record]
    left_out = NOT_CARRIED.get(fmt.family, {})
    written = fmt.write(sample)
    for field, label, variant in _variants(sample):
        changed = fmt.write(variant)
        if field in left_out or label in left_out:
            assert changed == written, (
                f"{fmt.id} now carries {fmt.record.__name__}.{label}: "
                f"remove it from NOT_CARRIED[{fmt.family!r}]"
            )
        elif fmt.names is None:
            assert changed != written, (
                f"{fmt.record.__name__}.{label} is missing from {fmt.id}: map it, or list it "
                f"in NOT_CARRIED[{fmt.family!r}] with the reason"
            )
        else:
            wire = fmt.names.get(field, field)
            assert wire in written, (
                f"{fmt.record.__name__}.{field} is missing from {fmt.id} (no field {wire!r}): "
                f"map it, or list it in NOT_CARRIED[{fmt.family!r}] with the reason"
            )
            assert changed[wire] != written[wire], f"{fmt.id}: {wire!r} ignores {label}"


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f.names is not None], ids=lambda f: f.id)
def test_a_format_writes_only_record_fields(fmt: Format) -> None:
    left_out = NOT_CARRIED.get(fmt.family, {})
    expected = {
        (fmt.names or {}).get(field.name, field.name)
        for field in fields(fmt.record)
        if field.name not in left_out
    }
    assert set(fmt.write(SAMPLES[fmt.record])) == expected


def test_every_record_has_formats_and_the_table_names_real_fields() -> None:
    assert {fmt.record for fmt in FORMATS} == set(RECORDS)
    families = {fmt.family: fmt.record for fmt in FORMATS}
    for family, left_out in NOT_CARRIED.items():
        assert family in families, f"NOT_CARRIED names an unknown format {family!r}"
        labels = {label for _, label, _ in _variants(SAMPLES[families[family]])}
        names = labels | {field.name for field in fields(families[family])}
        assert set(left_out) <= names, f"NOT_CARRIED[{family!r}]: no such field"
        assert all(reason.strip() for reason in left_out.values())


# --- the published contracts stay as they are -----------------------------------------------


def _columns(*names_and_types: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema(list(names_and_types))


MONEY, TIME, TEXT = pa.decimal128(18, 2), pa.timestamp("us", tz="UTC"), pa.string()
LEG_COLUMNS = [
    ("transaction_id", TEXT),
    ("account_id", TEXT),
    ("transaction_type", TEXT),
    ("amount", MONEY),
    ("currency", TEXT),
    ("description", TEXT),
    ("reference_id", TEXT),
    ("created_at", TIME),
    ("status", TEXT),
    ("related_transaction_id", TEXT),
    ("failure_code", TEXT),
]


def test_the_leg_schema_gives_the_published_event_and_export_schemas() -> None:
    event = [("timestamp", TIME) if name == "created_at" else (name, t) for name, t in LEG_COLUMNS]
    assert _columns(*event) == schemas.TRANSACTION_SCHEMA_V1
    links = [("reverses_transaction_id", TEXT), ("hold_id", TEXT)]
    v3 = _columns(*event, ("metadata", TEXT), *links)
    assert v3 == schemas.TRANSACTION_SCHEMA_V3
    assert schemas.TRANSACTION_SCHEMA_V3.field("metadata").metadata == {
        b"encoding": b"application/json"
    }
    labels = ("metadata", pa.map_(TEXT, TEXT))
    history = _columns(*LEG_COLUMNS, ("available_balance_after", MONEY), labels, *links)
    assert history == statements.HISTORY_SCHEMA
    assert (
        _columns(
            ("account_id", TEXT),
            ("current_balance", MONEY),
            ("available_balance", MONEY),
            ("currency", TEXT),
            ("version", pa.int64()),
            ("timestamp", TIME),
        )
        == schemas.BALANCE_SCHEMA_V1
    )


# --- round trips, with exact amounts --------------------------------------------------------


def _same(wire: object, value: object) -> bool:
    """A decoded wire value equals the record's value (identifiers and enums travel as text)."""
    if isinstance(value, UUID):
        return UUID(str(wire)) == value
    if isinstance(value, Enum):
        return type(value)(wire) is value
    if isinstance(value, Decimal):
        return isinstance(wire, Decimal) and wire == value
    if isinstance(value, Mapping):  # Arrow reads a map back as its (key, value) pairs
        return dict(wire) == value  # type: ignore[call-overload]
    return wire == value


def _reparsed(message: Message) -> Any:
    return type(message).FromString(message.SerializeToString())


def test_grpc_client_reads_back_what_the_servicers_write() -> None:
    hints = get_type_hints(client.TransactionInfo)
    for leg in (LEG, BARE_LEG):
        info = client.transaction_info(_reparsed(mapping.transaction_message(leg)))
        for field in fields(info):
            value = getattr(leg, field.name)
            if value is None:  # proto3 has no null: empty text, read back as None for a UUID
                value = None if hints[field.name] == UUID | None else ""
            assert getattr(info, field.name) == value, field.name
        assert info.amount == leg.amount and isinstance(info.amount, Decimal)

    moved = client.movement(_reparsed(mapping.movement_message(LEG)), replayed=True)
    assert moved.replayed is True
    for field in fields(moved):
        if field.name != "replayed":
            leg_field = mapping.MOVEMENT_FIELDS.get(field.name, field.name)
            assert getattr(moved, field.name) == getattr(LEG, leg_field), field.name
    assert moved.amount == Decimal("9999999999999999.99")
    assert moved.available_balance == Decimal("0.10")

    account = client.account_info(_reparsed(mapping.account_message(ACCOUNT)))
    assert dataclasses.asdict(account) == dataclasses.asdict(ACCOUNT)
    balance = client.balance_info(_reparsed(mapping.balance_message(BALANCE)))
    assert dataclasses.asdict(balance) == dataclasses.asdict(BALANCE)
    assert balance.current_balance == Decimal("9999999999999999.99")


@pytest.mark.parametrize("event_format", list(EventFormat))
def test_kafka_events_decode_to_the_record_values(event_format: EventFormat) -> None:
    for leg in (LEG, BARE_LEG):
        row = outbox.transaction_event(leg, trace_id="t")
        value, content_type = encode(
            row["event_type"], row["schema_version"], json.loads(row["payload"]), event_format
        )
        decoded = decode(value, content_type=content_type, event_type=row["event_type"])
        for field, wire in schemas.TRANSACTION_V1.wire_names.items():
            assert _same(decoded[wire], getattr(leg, field)), field

    value, content_type = encode(
        outbox.EVENT_BALANCE_UPDATED,
        outbox.BALANCE_SCHEMA_VERSION,
        outbox.balance_payload(BALANCE),
        event_format,
    )
    decoded = decode(value, content_type=content_type, event_type=outbox.EVENT_BALANCE_UPDATED)
    for field, wire in schemas.BALANCE_V1.wire_names.items():
        assert _same(decoded[wire], getattr(BALANCE, field)), field


@pytest.mark.parametrize("event_format", list(EventFormat))
@pytest.mark.parametrize("command", [TRANSFER, DEBIT], ids=["transfer", "debit"])
def test_commands_come_back_from_their_event(command: Command, event_format: EventFormat) -> None:
    payload = outbox.command_payload(command, at=CREATED)
    value, content_type = encode(
        outbox.EVENT_TRANSACTION_SUBMITTED, outbox.COMMAND_SCHEMA_VERSION, payload, event_format
    )
    fields_ = decode(
        value, content_type=content_type, event_type=outbox.EVENT_TRANSACTION_SUBMITTED
    )
    assert command_from_payload(payload_text(fields_), trace_id=command.trace_id) == command


def test_the_command_event_of_a_pending_leg_carries_its_command() -> None:
    pending = replace(LEG, status=TransactionStatus.PENDING, related_transaction_id=None)
    row = outbox.command_event(pending, ACTOR, trace_id="abc")
    command = command_from_payload(json.loads(row["payload"]), trace_id=row["trace_id"])
    assert command == Command(
        pending.transaction_id,
        TransactionType.TRANSFER_OUT,
        TransferRequest(
            pending.account_id,
            pending.counterparty_account_id,  # type: ignore[arg-type]
            pending.amount,
            pending.currency,
            pending.description,
            pending.reference_id,
            pending.metadata,
        ),
        ACTOR,
        "abc",
    )


def test_the_history_export_reads_back_exactly() -> None:
    legs = [LEG, BARE_LEG]
    stream = pa.ipc.open_stream(statements.to_arrow_stream(legs)).read_all().to_pylist()
    parquet = pq.read_table(io.BytesIO(statements.to_parquet(legs))).to_pylist()
    for rows in (stream, parquet):
        for row, leg in zip(rows, legs, strict=True):
            for field, column in schemas.HISTORY.wire_names.items():
                value = getattr(leg, field)
                assert (row[column] is None) if value is None else _same(row[column], value), field


class _DriverUUID(UUID):
    """Like asyncpg's UUID: a subclass of ``uuid.UUID``, as the stores may return it."""

    __slots__ = ()


def test_values_from_a_database_driver_map_like_plain_ones() -> None:
    leg = replace(
        LEG,
        transaction_id=_DriverUUID(str(LEG.transaction_id)),
        account_id=_DriverUUID(str(LEG.account_id)),
        related_transaction_id=_DriverUUID(str(LEG.related_transaction_id)),
    )
    for fmt in FORMATS:
        if fmt.record is Transaction:
            assert fmt.write(leg) == fmt.write(LEG), fmt.id
