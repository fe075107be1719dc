"""``/api/v1/transactions``: debit, credit, transfer and reading one leg."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Header, Request, Response

from banking.domain.errors import ValidationFailed
from banking.ledger.models import DebitOrCredit, MovementResult, TransferRequest
from banking.observability import context
from banking.rest.dependencies import ContainerDep, CurrentActor, trace_id_of
from banking.rest.jsonbody import ExactJSONRoute
from banking.rest.schemas import (
    DebitCreditBody,
    ErrorEnvelope,
    MovementRead,
    TransactionRead,
    TransferBody,
)

router = APIRouter(prefix="/api/v1/transactions", tags=["transactions"], route_class=ExactJSONRoute)

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Same meaning as reference_id; when both are sent they must be equal.",
    ),
]
_MOVEMENT_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorEnvelope} for code in (401, 403, 404, 409, 413, 422)
}


def _reference(body_reference: str | None, header_reference: str | None) -> str | None:
    if header_reference is not None and body_reference not in (None, header_reference):
        raise ValidationFailed(
            "Idempotency-Key header and reference_id differ", field="reference_id"
        )
    return body_reference if body_reference is not None else header_reference


def _answer(result: MovementResult, response: Response) -> MovementRead:
    context.bind(transaction_id=str(result.transaction.transaction_id))
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return MovementRead.of_movement(result.transaction)


@router.post("/debit", response_model=MovementRead, responses=_MOVEMENT_ERRORS)
async def debit(
    body: DebitCreditBody,
    actor: CurrentActor,
    container: ContainerDep,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> MovementRead:
    """Take money out of an account; declined (422 ``INSUFFICIENT_FUNDS``) below zero."""
    command = DebitOrCredit(
        body.account_id,
        body.amount,
        body.currency,
        body.description,
        _reference(body.reference_id, idempotency_key),
    )
    result = await container.movements.debit(actor, command, trace_id=trace_id_of(request))
    return _answer(result, response)


@router.post("/credit", response_model=MovementRead, responses=_MOVEMENT_ERRORS)
async def credit(
    body: DebitCreditBody,
    actor: CurrentActor,
    container: ContainerDep,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> MovementRead:
    """Put money into an account (money entering the bank: tellers and admins)."""
    command = DebitOrCredit(
        body.account_id,
        body.amount,
        body.currency,
        body.description,
        _reference(body.reference_id, idempotency_key),
    )
    result = await container.movements.credit(actor, command, trace_id=trace_id_of(request))
    return _answer(result, response)


@router.post("/transfer", response_model=MovementRead, responses=_MOVEMENT_ERRORS)
async def transfer(
    body: TransferBody,
    actor: CurrentActor,
    container: ContainerDep,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> MovementRead:
    """Move money between two accounts of the same currency, atomically. The answer is the
    outgoing leg; ``related_transaction_id`` is the incoming leg on the destination."""
    command = TransferRequest(
        body.source_account_id,
        body.destination_account_id,
        body.amount,
        body.currency,
        body.description,
        _reference(body.reference_id, idempotency_key),
    )
    result = await container.movements.transfer(actor, command, trace_id=trace_id_of(request))
    return _answer(result, response)


@router.get(
    "/{transaction_id}",
    response_model=TransactionRead,
    responses={404: {"model": ErrorEnvelope}, 401: {"model": ErrorEnvelope}},
)
async def get_transaction(
    transaction_id: UUID, actor: CurrentActor, container: ContainerDep
) -> TransactionRead:
    """One leg, as stored (completed, failed or pending)."""
    return TransactionRead.of(await container.movements.get_transaction(actor, transaction_id))
