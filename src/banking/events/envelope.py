"""Event headers: the CloudEvents Kafka protocol binding, binary content mode, and W3C tracing.

Every event the service publishes (the relay's, the dead-letter topics', the rejections')
carries, as Kafka headers:

- ``ce_specversion`` ``1.0``, ``ce_id`` (the event id: consumers dedupe by it), ``ce_type``
  (``transaction.completed``, ``transaction.failed``, ``transaction.rejected``,
  ``balance.updated``, ``transaction.submitted``), ``ce_source`` (``/banking/ledger``),
  ``ce_time`` (the commit time, RFC 3339 UTC: consumers measure their lag from it),
  ``ce_subject`` (the account id, also the Kafka key), ``ce_dataschema``
  (``urn:banking:schema:transaction.v2``: the schema id, published on ``banking.schemas``)
  and ``content-type`` (the value's media type);
- ``traceparent`` (W3C Trace Context): version ``00``, the trace id of the request that
  caused the event, a parent id derived from the event id (no span is recorded when the
  outbox row is written), flags ``01``. A trace id that is not 32 hex digits (a client's own
  ``X-Trace-ID``) cannot be a W3C trace id: the traceparent then gets one derived from it and
  the original travels in the ``ce_traceid`` extension, so the workers log the same id as the
  API did;
- ``ce_sequence`` (the CloudEvents sequence extension): the event's outbox position, 20 digits
  zero-padded so that it also compares as text. On the transaction and balance topics an
  account's rows are numbered while its balance row is locked, so per account it grows in
  commit order: a consumer that sees a sequence not above the last one it saw for that key has
  the event already (a re-sent batch). Sequences are not contiguous (other accounts' events
  take the numbers in between).

Readers also accept the headers written before schema v2 (``event_id``, ``event_type``,
``schema_version``, ``content_type``, ``trace_id``, ``created_at``) when a message has no
``ce_specversion``: those messages may still be on the topics (or parked in a dead-letter
topic) during and after an upgrade. Nothing writes them any more; messages re-published by
the dead-letter handler or ``banking dlq replay`` get the CloudEvents headers.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from uuid import UUID

SPEC_VERSION: Final = "1.0"
EVENT_SOURCE: Final = "/banking/ledger"
CE_ID: Final = "ce_id"
CE_TYPE: Final = "ce_type"
CE_SOURCE: Final = "ce_source"
CE_SPECVERSION: Final = "ce_specversion"
CE_TIME: Final = "ce_time"
CE_SUBJECT: Final = "ce_subject"
CE_DATASCHEMA: Final = "ce_dataschema"
CE_TRACEID: Final = "ce_traceid"  # extension: a trace id that is not a W3C one
CE_SEQUENCE: Final = "ce_sequence"  # extension: the outbox position (see the module's text)
CONTENT_TYPE: Final = "content-type"
TRACEPARENT: Final = "traceparent"
DATASCHEMA_PREFIX: Final = "urn:banking:schema:"

# The headers of schema v1 (read, never written).
LEGACY_EVENT_ID: Final = "event_id"
LEGACY_EVENT_TYPE: Final = "event_type"
LEGACY_SCHEMA_VERSION: Final = "schema_version"
LEGACY_CONTENT_TYPE: Final = "content_type"
LEGACY_TRACE_ID: Final = "trace_id"
LEGACY_CREATED_AT: Final = "created_at"
_LEGACY: Final = frozenset(
    {
        LEGACY_EVENT_ID,
        LEGACY_EVENT_TYPE,
        LEGACY_SCHEMA_VERSION,
        LEGACY_CONTENT_TYPE,
        LEGACY_TRACE_ID,
        LEGACY_CREATED_AT,
    }
)

_W3C_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_SAFE_TRACE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # what the doors accept from clients
_SCHEMA_ID = re.compile(r"^([a-z][a-z0-9_]*)\.v([1-9][0-9]{0,5})$")
_ZERO_TRACE_ID: Final = "0" * 32


def schema_id(name: str, version: int) -> str:
    """The id of a schema version, ``transaction.v2``: the key on ``banking.schemas``."""
    return f"{name}.v{version}"


def dataschema(schema_id_: str) -> str:
    """The ``ce_dataschema`` of events in a schema: ``urn:banking:schema:transaction.v2``."""
    return DATASCHEMA_PREFIX + schema_id_


def parse_schema_id(text: str) -> tuple[str, int] | None:
    """``(name, version)`` of a schema id or of its ``ce_dataschema`` URN; None otherwise."""
    match = _SCHEMA_ID.fullmatch(text.removeprefix(DATASCHEMA_PREFIX))
    return (match.group(1), int(match.group(2))) if match else None


def traceparent(trace_id: str | None, event_id: UUID) -> str:
    """The W3C ``traceparent`` of an event: its request's trace (or one started from the event
    id when there is none), with a parent id derived from the event id."""
    w3c = _w3c_trace_id(trace_id) if trace_id else event_id.hex
    parent_id = event_id.hex[16:] if event_id.hex[16:] != "0" * 16 else "1" * 16
    return f"00-{w3c}-{parent_id}-01"


def trace_id_of(traceparent_: str) -> str | None:
    """The trace id of a W3C ``traceparent``; None when it is not a valid one."""
    match = _TRACEPARENT.match(traceparent_.strip())
    if match is None or match.group(1) == "ff" or match.group(2) == _ZERO_TRACE_ID:
        return None
    return match.group(2)


def _w3c_trace_id(trace_id: str) -> str:
    if _W3C_TRACE_ID.fullmatch(trace_id) and trace_id != _ZERO_TRACE_ID:
        return trace_id
    return hashlib.sha256(trace_id.encode()).hexdigest()[:32]


def write_headers(
    *,
    event_id: UUID,
    event_type: str,
    content_type: str,
    time: datetime | None,
    subject: str | None,
    trace_id: str | None,
    schema: str | None,
    sequence: int | None = None,
) -> dict[str, str]:
    """The Kafka headers of one event (binary content mode); ``schema`` is its schema id and
    ``sequence`` its outbox position."""
    headers = {
        CE_SPECVERSION: SPEC_VERSION,
        CE_ID: str(event_id),
        CE_SOURCE: EVENT_SOURCE,
        CE_TYPE: event_type,
        CONTENT_TYPE: content_type,
    }
    if time is not None:
        headers[CE_TIME] = rfc3339(time)
    if subject:
        headers[CE_SUBJECT] = subject
    if schema is not None:
        headers[CE_DATASCHEMA] = dataschema(schema)
    if sequence is not None:
        headers[CE_SEQUENCE] = f"{sequence:020d}"
    headers[TRACEPARENT] = traceparent(trace_id, event_id)
    if trace_id and _w3c_trace_id(trace_id) != trace_id:
        headers[CE_TRACEID] = trace_id
    return headers


def rfc3339(time: datetime) -> str:
    """An aware time as RFC 3339 in UTC with a ``Z`` (what CloudEvents SDKs write)."""
    return time.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class EventHeaders:
    """What a reader needs from a message's headers; None where a header is absent or
    unreadable (a message from another producer may carry fewer)."""

    event_id: str | None = None
    event_type: str | None = None
    content_type: str | None = None
    schema_version: int | None = None
    time: datetime | None = None
    subject: str | None = None
    trace_id: str | None = None
    sequence: int | None = None
    legacy: bool = False


def read_headers(headers: Mapping[str, str]) -> EventHeaders:
    """The event attributes of a message, from CloudEvents headers or, on a message without
    ``ce_specversion``, from the headers of schema v1. Never raises."""
    if CE_SPECVERSION not in headers and _LEGACY & headers.keys():
        return _read_legacy(headers)
    trace_id = _safe_trace_id(headers.get(CE_TRACEID))
    if trace_id is None and TRACEPARENT in headers:
        trace_id = trace_id_of(headers[TRACEPARENT])
    parsed = parse_schema_id(headers.get(CE_DATASCHEMA, ""))
    return EventHeaders(
        event_id=headers.get(CE_ID),
        event_type=headers.get(CE_TYPE),
        content_type=headers.get(CONTENT_TYPE),
        schema_version=parsed[1] if parsed else None,
        time=_time(headers.get(CE_TIME)),
        subject=headers.get(CE_SUBJECT),
        trace_id=trace_id,
        sequence=_sequence(headers.get(CE_SEQUENCE)),
    )


def _read_legacy(headers: Mapping[str, str]) -> EventHeaders:
    version = headers.get(LEGACY_SCHEMA_VERSION, "")
    return EventHeaders(
        event_id=headers.get(LEGACY_EVENT_ID),
        event_type=headers.get(LEGACY_EVENT_TYPE),
        content_type=headers.get(LEGACY_CONTENT_TYPE),
        schema_version=int(version) if version.isdigit() and len(version) < 7 else None,
        time=_time(headers.get(LEGACY_CREATED_AT)),
        trace_id=_safe_trace_id(headers.get(LEGACY_TRACE_ID)),
        legacy=True,
    )


def event_time(headers: Mapping[str, str]) -> datetime | None:
    """When the event was committed (``ce_time``, or ``created_at`` of schema v1)."""
    return _time(headers.get(CE_TIME) or headers.get(LEGACY_CREATED_AT))


def upgraded(
    headers: Mapping[str, str], *, subject: str | None, schema: str | None
) -> dict[str, str]:
    """The same headers with those of schema v1 replaced by their CloudEvents equivalents
    (for re-publishing a message read with old headers); others are kept as they are.
    ``subject`` is the message's key, ``schema`` the schema id its value is in."""
    if CE_SPECVERSION in headers or not _LEGACY & headers.keys():
        return dict(headers)
    read = _read_legacy(headers)
    try:
        event_id = UUID(read.event_id or "")
    except ValueError:
        return dict(headers)  # not an event of this service's: left as it came
    if read.event_type is None:
        return dict(headers)
    kept = {name: value for name, value in headers.items() if name not in _LEGACY}
    return kept | write_headers(
        event_id=event_id,
        event_type=read.event_type,
        content_type=read.content_type or "application/json",
        time=read.time,
        subject=subject,
        trace_id=read.trace_id,
        schema=schema,
    )


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _sequence(text: str | None) -> int | None:
    return int(text) if text and text.isascii() and text.isdigit() and len(text) <= 20 else None


def _safe_trace_id(text: str | None) -> str | None:
    return text if text and _SAFE_TRACE_ID.fullmatch(text) else None
