"""What the audit trail keeps of one message: its CloudEvents attributes, key, topic, Kafka
position, account, actor, trace id and payload (JSON text, exact decimal strings).

``record_of`` never raises: a message that cannot be read is recorded with what can be read
and the reason (an audit trail drops nothing). A message without a usable event id (no
``ce_id``, or one that is not a UUID) gets a derived one, stable across redeliveries: uuid5 of
its topic and ``ce_id`` text, else of its topic, partition and offset, else (the embedded bus
has no offsets) of its topic, key, headers and value.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from uuid import UUID, uuid5

from banking.domain.roles import SYSTEM_ACTOR_NAME
from banking.events import envelope, topics
from banking.events.envelope import read_headers
from banking.events.serialization import JSON_CONTENT_TYPE, UndecodableEvent, decode, payload_text
from banking.events.transport import Message

# The namespace of derived event ids (a fixed, random UUID: never change it).
DERIVED_ID_NAMESPACE: Final = UUID("5b0c3a8e-6f1d-4c55-9a3e-2f1b7d9c4e60")
# The dead-letter header that counts attempts (``workers.dead_letters.ATTEMPTS``).
ATTEMPTS_HEADER: Final = "attempts"
DEAD_LETTER_TOPICS: Final = frozenset({topics.TRANSACTIONS_DLQ, topics.TRANSACTIONS_PERMANENT_DLQ})
UNREADABLE_REASON_LENGTH_MAX: Final = 500
# Column lengths of ``storage.tables.audit_records``: longer header values are cut, never
# refused (a message from another producer must still be recorded).
_LENGTHS: Final = {
    "ce_id": 255,
    "topic": 128,
    "event_type": 64,
    "source": 255,
    "specversion": 16,
    "subject": 255,
    "dataschema": 255,
    "content_type": 128,
    "event_key": 255,
    "actor_id": 64,
    "actor_name": 64,
    "trace_id": 128,
}


@dataclass(frozen=True, slots=True)
class Actor:
    """Who caused an event, as far as the event (or the ledger behind it) says."""

    actor_id: str | None
    name: str


SYSTEM: Final = Actor(None, SYSTEM_ACTOR_NAME)


@dataclass(frozen=True, slots=True)
class ReadMessage:
    """A message as read, before the actor is resolved (``values`` are the audit row's)."""

    values: dict[str, Any]
    payload: dict[str, Any] | None
    actor: Actor | None  # None: to be looked up in the ledger (``store.actor_of_movement``)


def _cut(name: str, value: str | None) -> str | None:
    return value[: _LENGTHS[name]] if value is not None else None


def delivery_of(message: Message) -> int:
    """The delivery of a dead letter (its ``attempts`` header); 0 on the other topics."""
    if message.topic not in DEAD_LETTER_TOPICS:
        return 0
    text = message.headers.get(ATTEMPTS_HEADER, "")
    return int(text) if text.isdigit() and len(text) < 9 else 0


def event_id_of(message: Message, ce_id: str | None) -> tuple[UUID, bool]:
    """The event id and whether it was derived (see the module's docstring)."""
    if ce_id:
        try:
            return UUID(ce_id), False
        except ValueError:
            return uuid5(DERIVED_ID_NAMESPACE, f"{message.topic}/ce_id/{ce_id}"), True
    if message.partition is not None and message.offset is not None:
        position = f"{message.topic}/{message.partition}/{message.offset}"
        return uuid5(DERIVED_ID_NAMESPACE, position), True
    digest = hashlib.sha256()
    for part in (message.topic, message.key or "", json.dumps(message.headers, sort_keys=True)):
        digest.update(part.encode(errors="replace") + b"\0")
    digest.update(message.value)
    return uuid5(DERIVED_ID_NAMESPACE, f"{message.topic}/content/{digest.hexdigest()}"), True


def _uuid(value: object) -> UUID | None:
    if value is None:
        return None
    try:
        return UUID(str(value))
    except ValueError:
        return None


def actor_in_payload(payload: dict[str, Any]) -> Actor | None:
    """The actor a payload names: a command's ``requested_by``, a staff action's actor."""
    requested_by = payload.get("requested_by")
    if isinstance(requested_by, dict) and requested_by.get("username"):
        user_id = requested_by.get("user_id")
        return Actor(str(user_id) if user_id else None, str(requested_by["username"]))
    if payload.get("actor_username"):
        user_id = payload.get("actor_user_id")
        return Actor(str(user_id) if user_id else None, str(payload["actor_username"]))
    return None


# Events caused by a person's movement (their actor is the leg's ``created_by``); the others
# (holds, fraud alerts, notifications) are the service's own doing.
MOVEMENT_EVENT_TYPES: Final = frozenset(
    {
        "transaction.completed",
        "transaction.failed",
        "transaction.rejected",
        "balance.updated",
        "transaction.submitted",
    }
)


def read_message(message: Message, *, recorded_at: datetime) -> ReadMessage:
    """The audit row of a message (never raises)."""
    headers = read_headers(message.headers)
    event_id, derived = event_id_of(message, headers.event_id)
    payload: dict[str, Any] | None = None
    unreadable: str | None = None
    try:
        fields = decode(
            message.value,
            content_type=headers.content_type or JSON_CONTENT_TYPE,
            event_type=headers.event_type or "",
            schema_version=headers.schema_version,
        )
        payload = payload_text(fields)
    except UndecodableEvent as error:
        unreadable = str(error) or type(error).__name__
    except Exception as error:  # noqa: BLE001 - a malformed message is recorded, never fatal
        unreadable = f"{type(error).__name__}: {error}"
    payload_json = None
    if payload is not None:
        payload_json = json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str)
    account_id = (_uuid(payload.get("account_id")) if payload is not None else None) or _uuid(
        headers.subject
    )
    actor = actor_in_payload(payload) if payload is not None else None
    if actor is None and (payload is None or headers.event_type not in MOVEMENT_EVENT_TYPES):
        actor = SYSTEM
    values = {
        "event_id": event_id,
        "event_id_derived": derived,
        "ce_id": _cut("ce_id", headers.event_id),
        "topic": _cut("topic", message.topic),
        "delivery": delivery_of(message),
        "event_type": _cut("event_type", headers.event_type),
        "source": _cut("source", message.headers.get(envelope.CE_SOURCE)),
        "specversion": _cut("specversion", message.headers.get(envelope.CE_SPECVERSION)),
        "event_time": headers.time,
        "subject": _cut("subject", headers.subject),
        "dataschema": _cut("dataschema", message.headers.get(envelope.CE_DATASCHEMA)),
        "content_type": _cut("content_type", headers.content_type),
        "event_key": _cut("event_key", message.key),
        "kafka_partition": message.partition,
        "kafka_offset": message.offset,
        "account_id": account_id,
        "trace_id": _cut("trace_id", headers.trace_id),
        "payload": payload_json,
        "unreadable_reason": unreadable[:UNREADABLE_REASON_LENGTH_MAX] if unreadable else None,
        "recorded_at": recorded_at,
    }
    return ReadMessage(values, payload, actor)


def with_actor(read: ReadMessage, actor: Actor) -> dict[str, Any]:
    """The row to insert, with its actor."""
    return {
        **read.values,
        "actor_id": _cut("actor_id", actor.actor_id),
        "actor_name": _cut("actor_name", actor.name) or SYSTEM_ACTOR_NAME,
    }
