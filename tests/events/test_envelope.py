"""Event headers: CloudEvents binary mode and W3C traceparent as written, the CloudEvents SDK's
own validation of them, and the schema v1 headers still read (no broker needed)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat

from banking.events import envelope, outbox, relay
from banking.events.serialization import EventFormat, decode, encode
from banking.events.transport import InProcessBus, Message
from banking.workers.dead_letters import DeadLetters, as_original
from banking.workers.processor import read_command

EVENT_ID = uuid.UUID("6f1c1b8e-9a38-4a2e-8d8c-0f5b1f3c2a10")
ACCOUNT = "0d4f5b3e-1c2a-4e7f-9b8d-3a2c1e0f9d8b"
COMMITTED = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)
W3C_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def _headers(trace_id: str | None) -> dict[str, str]:
    return envelope.write_headers(
        event_id=EVENT_ID,
        event_type="transaction.completed",
        content_type="application/json",
        time=COMMITTED,
        subject=ACCOUNT,
        trace_id=trace_id,
        schema="transaction.v2",
    )


def test_the_cloudevents_sdk_reads_the_headers_as_a_valid_event() -> None:
    headers = _headers(W3C_TRACE)
    message = KafkaMessage(
        headers={name: value.encode() for name, value in headers.items()},
        key=ACCOUNT.encode(),
        value=b'{"amount":"100.10"}',
    )
    event = from_binary(message, JSONFormat())  # validates required and optional attributes
    assert event.get_id() == str(EVENT_ID)
    assert event.get_type() == "transaction.completed"
    assert event.get_source() == "/banking/ledger"
    assert event.get_specversion() == "1.0"
    assert event.get_time() == COMMITTED
    assert event.get_subject() == ACCOUNT
    assert event.get_dataschema() == "urn:banking:schema:transaction.v2"
    assert event.get_datacontenttype() == "application/json"
    assert event.get_data() == {"amount": "100.10"}
    assert headers["ce_time"] == "2026-11-25T12:00:00.123456Z"


def test_the_sequence_extension_is_a_valid_cloudevents_attribute() -> None:
    headers = envelope.write_headers(
        event_id=EVENT_ID,
        event_type="transaction.completed",
        content_type="application/json",
        time=COMMITTED,
        subject=ACCOUNT,
        trace_id=None,
        schema="transaction.v2",
        sequence=12,
    )
    message = KafkaMessage(
        headers={name: value.encode() for name, value in headers.items()},
        key=ACCOUNT.encode(),
        value=b"{}",
    )
    assert from_binary(message, JSONFormat()).get_extension("sequence") == "00000000000000000012"
    for unreadable in ("-1", "1e3", "٣", "1" * 21, ""):
        assert envelope.read_headers(headers | {"ce_sequence": unreadable}).sequence is None


def test_traceparent_carries_the_requests_trace_id() -> None:
    headers = _headers(W3C_TRACE)
    version, trace_id, parent_id, flags = headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", W3C_TRACE, "01")
    assert len(parent_id) == 16 and parent_id != "0" * 16
    assert "ce_traceid" not in headers
    assert envelope.read_headers(headers).trace_id == W3C_TRACE


def test_a_trace_id_that_is_not_w3c_still_reaches_the_workers() -> None:
    headers = _headers("checkout-42")
    w3c = envelope.trace_id_of(headers["traceparent"])
    assert w3c is not None and len(w3c) == 32  # a valid W3C trace id, derived
    assert headers["ce_traceid"] == "checkout-42"
    assert envelope.read_headers(headers).trace_id == "checkout-42"


def test_an_event_without_a_trace_starts_one_from_its_id() -> None:
    headers = _headers(None)
    assert envelope.trace_id_of(headers["traceparent"]) == EVENT_ID.hex
    assert envelope.read_headers(headers).trace_id == EVENT_ID.hex


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        "not a traceparent",
    ],
)
def test_an_invalid_traceparent_gives_no_trace_id(traceparent: str) -> None:
    headers = {**_headers(W3C_TRACE), "traceparent": traceparent}
    assert envelope.read_headers(headers).trace_id is None


def test_the_headers_read_back_as_written() -> None:
    read = envelope.read_headers(_headers(W3C_TRACE))
    assert read == envelope.EventHeaders(
        event_id=str(EVENT_ID),
        event_type="transaction.completed",
        content_type="application/json",
        schema_version=2,
        time=COMMITTED,
        subject=ACCOUNT,
        trace_id=W3C_TRACE,
    )


LEGACY_HEADERS = {
    "event_id": str(EVENT_ID),
    "event_type": "transaction.submitted",
    "schema_version": "1",
    "content_type": "application/vnd.apache.arrow.stream",
    "trace_id": W3C_TRACE,
    "created_at": COMMITTED.isoformat(),
}
COMMAND = {
    "transaction_id": "7f1c1b8e-9a38-4a2e-8d8c-0f5b1f3c2a10",
    "command": "debit",
    "account_id": ACCOUNT,
    "destination_account_id": None,
    "amount": "12.34",
    "currency": "USD",
    "description": None,
    "reference_id": "old-1",
    "requested_by": {
        "user_id": "3d4f5b3e-1c2a-4e7f-9b8d-3a2c1e0f9d8b",
        "username": "alice",
        "role": "customer",
    },
    "timestamp": COMMITTED.isoformat(),
}


def _legacy_command() -> Message:
    """A command as the relay published it before schema v2: old headers, v1 Arrow stream."""
    value, _ = encode(outbox.EVENT_TRANSACTION_SUBMITTED, 1, COMMAND, EventFormat.ARROW)
    return Message("banking.transactions.submitted", ACCOUNT, value, dict(LEGACY_HEADERS))


def test_a_command_published_before_the_upgrade_is_read_with_its_trace() -> None:
    command = read_command(_legacy_command())
    assert str(command.transaction_id) == COMMAND["transaction_id"]
    assert str(command.request.amount) == "12.34"
    assert command.trace_id == W3C_TRACE
    read = envelope.read_headers(LEGACY_HEADERS)
    assert read.legacy and read.schema_version == 1 and read.time == COMMITTED


async def test_a_dead_letter_of_an_old_message_gets_the_cloudevents_headers() -> None:
    bus = InProcessBus()
    parked: list[Message] = []

    async def keep(message: Message) -> None:
        parked.append(message)

    bus.subscribe("banking.transactions.permanent.dlq", keep)
    await DeadLetters(bus).give_up(_legacy_command(), RuntimeError("database gone"), attempts=4)

    [dead] = parked
    assert not set(LEGACY_HEADERS) & set(dead.headers)
    assert dead.headers["ce_id"] == str(EVENT_ID)  # still the same event: consumers dedupe
    assert dead.headers["ce_type"] == "transaction.submitted"
    assert dead.headers["ce_dataschema"] == "urn:banking:schema:command.v1"
    assert dead.headers["content-type"] == "application/vnd.apache.arrow.stream"
    assert dead.headers["ce_subject"] == ACCOUNT
    assert envelope.trace_id_of(dead.headers["traceparent"]) == W3C_TRACE
    assert (dead.headers["attempts"], dead.headers["error"]) == ("4", "database gone")
    replayed = as_original(dead)  # what `banking dlq replay` re-submits
    assert replayed.topic == "banking.transactions.submitted"
    assert "attempts" not in replayed.headers
    assert read_command(replayed).trace_id == W3C_TRACE


async def test_a_foreign_message_keeps_the_headers_it_came_with() -> None:
    bus = InProcessBus()
    parked: list[Message] = []

    async def keep(message: Message) -> None:
        parked.append(message)

    bus.subscribe("banking.transactions.permanent.dlq", keep)
    poison = Message("banking.transactions.submitted", None, b"\x00garbage", {"x-origin": "crm"})
    await DeadLetters(bus).give_up(poison, ValueError("unreadable"), attempts=1)
    assert parked[0].value == b"\x00garbage"
    assert parked[0].headers["x-origin"] == "crm"
    assert "ce_id" not in parked[0].headers  # the service never invents an event id


def test_a_json_command_from_another_service_needs_no_headers() -> None:
    message = Message("banking.transactions.submitted", ACCOUNT, json.dumps(COMMAND).encode())
    assert str(read_command(message).request.amount) == "12.34"


def _outbox_row(version: int) -> SimpleNamespace:
    payload = {
        "account_id": ACCOUNT,
        "current_balance": "10.00",
        "available_balance": "10.00",
        "currency": "USD",
        "version": 3,
        "timestamp": COMMITTED.isoformat(),
    }
    return SimpleNamespace(
        event_id=EVENT_ID,
        topic="banking.accounts.balances",
        event_key=ACCOUNT,
        event_type="balance.updated",
        schema_version=version,
        payload=json.dumps(payload),
        trace_id=W3C_TRACE,
        created_at=COMMITTED,
        outbox_id=4711,
    )


@pytest.mark.parametrize(
    ("version", "content_type"),
    [
        (2, "application/vnd.apache.arrow.recordbatch"),
        (1, "application/vnd.apache.arrow.stream"),  # written before the upgrade, still queued
    ],
)
def test_the_relay_publishes_an_outbox_row_in_its_schema_version(
    version: int, content_type: str
) -> None:
    message = relay.message_of(_outbox_row(version), EventFormat.ARROW)
    assert message.headers["content-type"] == content_type
    assert message.headers["ce_dataschema"] == f"urn:banking:schema:balance.v{version}"
    assert message.headers["ce_subject"] == ACCOUNT
    read = envelope.read_headers(message.headers)
    fields = decode(
        message.value,
        content_type=content_type,
        event_type=read.event_type or "",
        schema_version=read.schema_version,
    )
    assert str(fields["current_balance"]) == "10.00"
    assert (read.trace_id, read.time, read.schema_version) == (W3C_TRACE, COMMITTED, version)
    assert message.headers["ce_sequence"] == "00000000000000004711"  # compares as text too
    assert read.sequence == 4711
