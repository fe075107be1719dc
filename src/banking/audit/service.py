"""Reading the audit trail (staff only): filtered pages, newest first, opaque cursors.

Tellers, auditors and admins read it; to a customer it does not exist (404 ``NOT_FOUND``, as
the review queue is "not found" to them), so its presence cannot be probed. Filters are
checked here, in the core: a bad one is ``VALIDATION_ERROR`` and reads nothing.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from banking.audit import store
from banking.domain.errors import BankingError, ValidationFailed
from banking.domain.roles import Actor
from banking.ledger.history import in_utc, page_size_within
from banking.storage.database import Database

CURSOR_PREFIX: Final = "audit:"
CURSOR_LENGTH_MAX: Final = 200
ACTOR_LENGTH_MAX: Final = 64
EVENT_TYPE_LENGTH_MAX: Final = 64


class AuditTrailNotFound(BankingError):
    """What a customer gets for the audit trail."""

    code = "NOT_FOUND"


@dataclass(frozen=True, slots=True)
class AuditFilter:
    account_id: UUID | None = None
    actor: str | None = None
    time_from: datetime | None = None
    time_to: datetime | None = None
    event_type: str | None = None


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit row as the API shows it (the payload parsed back from its JSON text)."""

    audit_id: int
    event_id: UUID
    event_id_derived: bool
    topic: str
    delivery: int
    event_type: str | None
    source: str | None
    specversion: str | None
    time: datetime | None
    subject: str | None
    dataschema: str | None
    content_type: str | None
    key: str | None
    partition: int | None
    offset: int | None
    account_id: UUID | None
    actor_id: str | None
    actor_name: str
    trace_id: str | None
    payload: dict[str, Any] | None
    unreadable_reason: str | None
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class AuditPage:
    records: list[AuditRecord]
    next_cursor: str | None


def encode_cursor(audit_id: int) -> str:
    return base64.urlsafe_b64encode(f"{CURSOR_PREFIX}{audit_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        if len(cursor) > CURSOR_LENGTH_MAX:
            raise ValueError("too long")
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith(CURSOR_PREFIX):
            raise ValueError("not an audit cursor")
        digits = text.removeprefix(CURSOR_PREFIX)
        if not digits.isdigit() or len(digits) > 19:
            raise ValueError("not a position")
        return int(digits)
    except (ValueError, binascii.Error, UnicodeDecodeError) as error:
        raise ValidationFailed("cursor is not valid", field="cursor") from error


def _checked_text(value: str | None, field: str, length_max: int) -> str | None:
    if value is None:
        return None
    if not 1 <= len(value) <= length_max or not value.isprintable():
        raise ValidationFailed(
            f"{field} must be 1 to {length_max} printable characters", field=field
        )
    return value


def require_audit_reader(actor: Actor) -> None:
    """Staff (teller, auditor, admin) read the audit trail; customers do not know it exists."""
    if not actor.reads_everything:
        raise AuditTrailNotFound("not found")


def _record(row: Any) -> AuditRecord:
    return AuditRecord(
        audit_id=row.audit_id,
        event_id=row.event_id,
        event_id_derived=row.event_id_derived,
        topic=row.topic,
        delivery=row.delivery,
        event_type=row.event_type,
        source=row.source,
        specversion=row.specversion,
        time=row.event_time,
        subject=row.subject,
        dataschema=row.dataschema,
        content_type=row.content_type,
        key=row.event_key,
        partition=row.kafka_partition,
        offset=row.kafka_offset,
        account_id=row.account_id,
        actor_id=row.actor_id,
        actor_name=row.actor_name,
        trace_id=row.trace_id,
        payload=json.loads(row.payload) if row.payload is not None else None,
        unreadable_reason=row.unreadable_reason,
        recorded_at=row.recorded_at,
    )


class AuditService:
    def __init__(self, database: Database, *, page_size_default: int, page_size_max: int) -> None:
        self._database = database
        self.page_size_default = page_size_default
        self.page_size_max = page_size_max

    async def page(
        self,
        actor: Actor,
        audit_filter: AuditFilter,
        *,
        cursor: str | None = None,
        page_size: int | None = None,
    ) -> AuditPage:
        """One page of the audit trail, newest first."""
        require_audit_reader(actor)
        size = page_size_within(
            page_size, default=self.page_size_default, maximum=self.page_size_max
        )
        time_from = in_utc(audit_filter.time_from, "from")
        time_to = in_utc(audit_filter.time_to, "to")
        if time_from is not None and time_to is not None and time_from >= time_to:
            raise ValidationFailed("from must be before to", field="from")
        query = store.AuditQuery(
            account_id=audit_filter.account_id,
            actor=_checked_text(audit_filter.actor, "actor", ACTOR_LENGTH_MAX),
            time_from=time_from,
            time_to=time_to,
            event_type=_checked_text(audit_filter.event_type, "type", EVENT_TYPE_LENGTH_MAX),
            before_audit_id=decode_cursor(cursor) if cursor is not None else None,
        )
        async with self._database.read() as connection:
            rows = await store.list_records(connection, query, limit=size + 1)
        records = [_record(row) for row in rows[:size]]
        has_more = len(rows) > size
        return AuditPage(records, encode_cursor(records[-1].audit_id) if has_more else None)
