"""``/api/v1/audit``: the audit trail (staff only), newest first, with filters and cursors.

Who may read it is decided in the core (``audit.service.require_audit_reader``): tellers,
auditors and admins; a customer gets 404 ``NOT_FOUND``. docs/audit.md says what is recorded.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Self
from uuid import UUID

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from banking.audit.service import (
    ACTOR_LENGTH_MAX,
    EVENT_TYPE_LENGTH_MAX,
    AuditFilter,
    AuditRecord,
)
from banking.rest.dependencies import ContainerDep, CurrentActor
from banking.rest.errors import ErrorCode
from banking.rest.openapi import responses
from banking.rest.routes import Route
from banking.rest.schemas import (
    EXAMPLE_ACCOUNT_ID,
    EXAMPLE_TIME,
    CursorQuery,
    DateTimeQuery,
    printable,
)

router = APIRouter(prefix="/api/v1/audit", tags=["audit"], route_class=Route)
E = ErrorCode

_RECORD_EXAMPLE: dict[str, Any] = {
    "audit_id": 1042,
    "event_id": "2a1b0c9d-8e7f-4a6b-8c5d-4e3f2a1b0c9d",
    "event_id_derived": False,
    "topic": "banking.transactions.completed",
    "delivery": 0,
    "event_type": "transaction.completed",
    "source": "/banking/ledger",
    "specversion": "1.0",
    "time": EXAMPLE_TIME,
    "subject": EXAMPLE_ACCOUNT_ID,
    "dataschema": "urn:banking:schema:transaction.v2",
    "content_type": "application/vnd.apache.arrow.recordbatch",
    "key": EXAMPLE_ACCOUNT_ID,
    "partition": 3,
    "offset": 1187,
    "account_id": EXAMPLE_ACCOUNT_ID,
    "actor": {"user_id": "9b2f4c1d-3e5a-4b6c-8d7e-0f1a2b3c4d5e", "name": "teller-ann"},
    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    "payload": {"account_id": EXAMPLE_ACCOUNT_ID, "amount": "100.00", "currency": "USD"},
    "unreadable_reason": None,
    "recorded_at": EXAMPLE_TIME,
}


class AuditActorRead(BaseModel):
    user_id: str | None = Field(description="The user's id; null for the service itself.")
    name: str = Field(description="The username, or `system` when no person caused it.")


class AuditRecordRead(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_RECORD_EXAMPLE]})

    audit_id: int = Field(ge=1, description="The recording order (newest is highest).")
    event_id: UUID = Field(description="The event's `ce_id` (or a derived id, see below).")
    event_id_derived: bool = Field(
        description="True when the message had no usable `ce_id` and the id was derived."
    )
    topic: str
    delivery: int = Field(
        ge=0, description="The dead-letter attempt of a DLQ copy; 0 on the other topics."
    )
    event_type: str | None = Field(description="CloudEvents `type`.")
    source: str | None
    specversion: str | None
    time: datetime | None = Field(description="CloudEvents `time`: when it was committed.")
    subject: str | None
    dataschema: str | None
    content_type: str | None
    key: str | None = Field(description="The Kafka key.")
    partition: int | None = Field(description="Kafka partition (null in the embedded shape).")
    offset: int | None = Field(description="Kafka offset (null in the embedded shape).")
    account_id: UUID | None
    actor: AuditActorRead
    trace_id: str | None
    payload: dict[str, Any] | None = Field(
        description="The event's payload as JSON (amounts as exact decimal strings); null "
        "when it could not be read (`unreadable_reason` says why)."
    )
    unreadable_reason: str | None
    recorded_at: datetime

    @classmethod
    def of(cls, record: AuditRecord) -> Self:
        fields = {name: getattr(record, name) for name in cls.model_fields if name not in {"actor"}}
        fields["actor"] = AuditActorRead(user_id=record.actor_id, name=record.actor_name)
        return cls.model_validate(fields)


class AuditPageRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"records": [_RECORD_EXAMPLE], "next_cursor": None}]}
    )

    records: list[AuditRecordRead]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page.")


@router.get(
    "",
    response_model=AuditPageRead,
    responses=responses(E.UNAUTHENTICATED, E.VALIDATION_ERROR, E.NOT_FOUND),
)
async def list_audit_records(
    actor: CurrentActor,
    container: ContainerDep,
    account_id: Annotated[UUID | None, Query(description="Only events about this account.")] = None,
    actor_filter: Annotated[
        str | None,
        Query(
            alias="actor",
            json_schema_extra=printable(
                "Only events caused by this user (username or user id; `system` for the "
                "service's own).",
                ACTOR_LENGTH_MAX,
            ),
            min_length=1,
            max_length=ACTOR_LENGTH_MAX,
        ),
    ] = None,
    time_from: Annotated[
        DateTimeQuery | None,
        Query(alias="from", description="Events committed at or after this time (RFC 3339)."),
    ] = None,
    time_to: Annotated[
        DateTimeQuery | None,
        Query(alias="to", description="Events committed before this time (RFC 3339)."),
    ] = None,
    event_type: Annotated[
        str | None,
        Query(
            alias="type",
            json_schema_extra=printable(
                "Only this CloudEvents type (`transaction.completed`, `staff.account_frozen`, "
                "...).",
                EVENT_TYPE_LENGTH_MAX,
            ),
            min_length=1,
            max_length=EVENT_TYPE_LENGTH_MAX,
        ),
    ] = None,
    cursor: CursorQuery = None,
    page_size: Annotated[
        int | None, Query(ge=1, description="Records per page (at most PAGE_SIZE_MAX).")
    ] = None,
) -> AuditPageRead:
    """The audit trail (tellers, auditors, admins): every event recorded, newest first."""
    page = await container.audit.page(
        actor,
        AuditFilter(
            account_id=account_id,
            actor=actor_filter,
            time_from=time_from,
            time_to=time_to,
            event_type=event_type,
        ),
        cursor=cursor,
        page_size=page_size,
    )
    return AuditPageRead(
        records=[AuditRecordRead.of(record) for record in page.records],
        next_cursor=page.next_cursor,
    )
