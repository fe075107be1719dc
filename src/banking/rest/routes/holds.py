"""``/api/v1/holds``: authorize an amount, then capture it (in one or several parts) or void it;
read one hold or a page of them. The rules are the core's (``banking.ledger.holds``)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Body, Header, Query, Request, Response

from banking.domain.errors import ValidationFailed
from banking.domain.records import CaptureRequest, HoldRequest, HoldResult, HoldStatus
from banking.ledger.checks import REFERENCE_ID_LENGTH_MAX
from banking.observability import context
from banking.rest.dependencies import ContainerDep, CurrentActor, trace_id_of
from banking.rest.errors import ErrorCode
from banking.rest.openapi import link, responses
from banking.rest.routes import Route
from banking.rest.schemas import (
    CaptureBody,
    CursorQuery,
    HoldBody,
    HoldCaptured,
    HoldList,
    HoldRead,
    printable,
)

router = APIRouter(prefix="/api/v1/holds", tags=["holds"], route_class=Route)
E = ErrorCode

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Same meaning as reference_id; when both are sent they must be equal.",
        json_schema_extra={"minLength": 1, **printable("", REFERENCE_ID_LENGTH_MAX)},
        examples=["order-2026-01-31-0001"],
    ),
]
# The body of a capture is optional (none: capture all of it).
OptionalCaptureBody = Annotated[
    CaptureBody | None,
    Body(
        openapi_examples={
            "part": {
                "summary": "Capture part of the hold and close it",
                "value": {"amount": "60.00", "final": True, "reference_id": "checkout-0001"},
            },
            "all": {"summary": "Capture what is left of the hold", "value": {}},
        }
    ),
]
_HOLD_LINKS = {
    "getHold": link("getHold", "The hold as it is now.", hold_id="hold_id"),
    "getBalance": link("getBalance", "The account's balance.", account_id="account_id"),
}


def _reference(body_reference: str | None, header_reference: str | None) -> str | None:
    if header_reference is not None and body_reference not in (None, header_reference):
        raise ValidationFailed(
            "Idempotency-Key header and reference_id differ", field="reference_id"
        )
    return body_reference if body_reference is not None else header_reference


def _answered(result: HoldResult, response: Response) -> None:
    context.bind(hold_id=str(result.hold.hold_id))
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"


@router.post(
    "",
    status_code=201,
    response_model=HoldRead,
    responses=responses(
        E.UNAUTHENTICATED,
        E.FORBIDDEN,
        E.VALIDATION_ERROR,
        E.ACCOUNT_NOT_FOUND,
        E.INSUFFICIENT_FUNDS,
        E.CURRENCY_MISMATCH,
        E.ACCOUNT_INACTIVE,
        E.IDEMPOTENCY_CONFLICT,
        success={201: {"links": _HOLD_LINKS}},
        replayable=True,
    ),
)
async def authorize_hold(
    body: HoldBody,
    actor: CurrentActor,
    container: ContainerDep,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> HoldRead:
    """Hold an amount of the account's available balance (its current balance does not
    change) until it is captured, voided or expires; declined (422 ``INSUFFICIENT_FUNDS``)
    when that much is not available. With ``destination_account_id`` a capture is a transfer
    to that account. The same ``reference_id`` again answers the same hold."""
    result = await container.holds.authorize(
        actor,
        HoldRequest(
            account_id=body.account_id,
            amount=body.amount,
            currency=body.currency,
            description=body.description,
            reference_id=_reference(body.reference_id, idempotency_key),
            expires_at=body.expires_at,
            destination_account_id=body.destination_account_id,
        ),
        trace_id=trace_id_of(request),
    )
    _answered(result, response)
    return HoldRead.of(result.hold)


@router.get(
    "",
    response_model=HoldList,
    responses=responses(E.UNAUTHENTICATED, E.VALIDATION_ERROR, E.ACCOUNT_NOT_FOUND),
)
async def list_holds(
    actor: CurrentActor,
    container: ContainerDep,
    account_id: Annotated[
        UUID | None, Query(description="Holds of this account (another customer's: 404).")
    ] = None,
    status: Annotated[HoldStatus | None, Query(description="Holds in this state.")] = None,
    cursor: CursorQuery = None,
    page_size: Annotated[int | None, Query(ge=1, description="Holds per page.")] = None,
) -> HoldList:
    """Holds, newest first: a customer's own, or for staff and auditors every account's."""
    page = await container.holds.page(
        actor, account_id=account_id, status=status, cursor=cursor, page_size=page_size
    )
    return HoldList(holds=[HoldRead.of(hold) for hold in page.holds], next_cursor=page.next_cursor)


@router.get(
    "/{hold_id}",
    response_model=HoldRead,
    responses=responses(E.UNAUTHENTICATED, E.VALIDATION_ERROR, E.HOLD_NOT_FOUND),
)
async def get_hold(hold_id: UUID, actor: CurrentActor, container: ContainerDep) -> HoldRead:
    """One hold (another customer's: 404 ``HOLD_NOT_FOUND``)."""
    return HoldRead.of(await container.holds.get(actor, hold_id))


@router.post(
    "/{hold_id}/capture",
    response_model=HoldCaptured,
    responses=responses(
        E.UNAUTHENTICATED,
        E.FORBIDDEN,
        E.VALIDATION_ERROR,
        E.HOLD_NOT_FOUND,
        E.HOLD_NOT_OPEN,
        E.HOLD_AMOUNT_EXCEEDED,
        E.ACCOUNT_INACTIVE,
        E.IDEMPOTENCY_CONFLICT,
        success={200: {"links": _HOLD_LINKS}},
        replayable=True,
    ),
)
async def capture_hold(
    hold_id: UUID,
    actor: CurrentActor,
    container: ContainerDep,
    request: Request,
    response: Response,
    body: OptionalCaptureBody = None,
    idempotency_key: IdempotencyKey = None,
) -> HoldCaptured:
    """Capture part (``amount``) or all (no amount) of an open hold: the account's current
    balance drops by the amount, as a completed debit leg (a transfer to the hold's
    destination) with the hold's id. Captured in full, or with ``final: true``, the hold is
    closed and what is left of it is released. 422 ``HOLD_AMOUNT_EXCEEDED`` above what is
    left; 409 ``HOLD_NOT_OPEN`` once it is closed or expired. The same ``reference_id``
    again answers the same capture."""
    body = body or CaptureBody()
    result = await container.holds.capture(
        actor,
        hold_id,
        CaptureRequest(
            amount=body.amount,
            final=body.final,
            reference_id=_reference(body.reference_id, idempotency_key),
        ),
        trace_id=trace_id_of(request),
    )
    _answered(result, response)
    return HoldCaptured.of_capture(result)


@router.post(
    "/{hold_id}/void",
    response_model=HoldRead,
    responses=responses(
        E.UNAUTHENTICATED,
        E.FORBIDDEN,
        E.VALIDATION_ERROR,
        E.HOLD_NOT_FOUND,
        E.HOLD_NOT_OPEN,
        success={200: {"links": _HOLD_LINKS}},
        replayable=True,
    ),
)
async def void_hold(
    hold_id: UUID,
    actor: CurrentActor,
    container: ContainerDep,
    request: Request,
    response: Response,
) -> HoldRead:
    """Close an open hold and release what is left of it to the available balance. Voiding
    it again answers the same hold (``Idempotent-Replayed: true``); a captured or expired
    hold is 409 ``HOLD_NOT_OPEN``."""
    result = await container.holds.void(actor, hold_id, trace_id=trace_id_of(request))
    _answered(result, response)
    return HoldRead.of(result.hold)
