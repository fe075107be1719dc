"""``/api/v1/transactions``: debit, credit, transfer, batches of them, reading one leg, the
fraud review of held asynchronous movements (the queue, release, reject), and reversals."""

from __future__ import annotations

import re
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from banking.container import Container
from banking.domain.errors import InvariantViolated, ValidationFailed
from banking.domain.records import (
    BatchItem,
    DebitOrCredit,
    MovementResult,
    ReversalRequest,
    ReviewDecision,
    TransactionStatus,
    TransactionType,
    TransferRequest,
)
from banking.domain.roles import Actor
from banking.ledger.checks import REFERENCE_ID_LENGTH_MAX
from banking.ledger.metadata import METADATA_FIELD
from banking.ledger.movements import BATCH_KEY_LENGTH_MAX, keyed_batch
from banking.ledger.statements import TransactionSearch
from banking.observability import context
from banking.rest.dependencies import ContainerDep, CurrentActor, trace_id_of
from banking.rest.errors import ErrorCode
from banking.rest.openapi import header, link, responses
from banking.rest.routes import Route
from banking.rest.schemas import (
    METADATA_SCHEMA,
    BatchBody,
    BatchCredit,
    BatchDebit,
    BatchRead,
    BatchTransfer,
    CursorQuery,
    DateTimeQuery,
    DebitCreditBody,
    HeldPage,
    MovementRead,
    ReverseBody,
    TransactionDetail,
    TransactionRead,
    TransactionView,
    TransferBody,
    printable,
)

router = APIRouter(prefix="/api/v1/transactions", tags=["transactions"], route_class=Route)
# The one route with a body limit of its own (BATCH_BODY_BYTES_MAX, banking.rest.app).
BATCH_PATH = "/api/v1/transactions/batch"
E = ErrorCode

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Same meaning as reference_id; when both are sent they must be equal.",
        json_schema_extra={"minLength": 1, **printable("", REFERENCE_ID_LENGTH_MAX)},
        examples=["atm-2026-01-31-0001"],
    ),
]
_LEG_LINKS = {
    "getTransaction": link("getTransaction", "The leg as stored.", transaction_id="transaction_id"),
    "getBalance": link("getBalance", "The account's balance.", account_id="account_id"),
    "reverseTransaction": link(
        "reverseTransaction", "Reverse the movement, all or part.", transaction_id="transaction_id"
    ),
}
_MOVEMENT_RESPONSES = responses(
    E.UNAUTHENTICATED,
    E.FORBIDDEN,
    E.VALIDATION_ERROR,
    E.ACCOUNT_NOT_FOUND,
    E.INSUFFICIENT_FUNDS,
    E.CURRENCY_MISMATCH,
    E.ACCOUNT_INACTIVE,
    E.IDEMPOTENCY_CONFLICT,
    E.ACCOUNT_BUSY,
    success={
        200: {"links": _LEG_LINKS},
        202: {
            "model": TransactionRead,
            "description": "Accepted for asynchronous processing: a pending leg, applied "
            "through the event backbone; read its outcome at `Location`.",
            "headers": {
                "Location": header("Location", required=True),
                "Preference-Applied": header("Preference-Applied", required=True),
            },
            "links": {"getTransaction": _LEG_LINKS["getTransaction"]},
        },
    },
    replayable=True,
)


def _reference(body_reference: str | None, header_reference: str | None) -> str | None:
    if header_reference is not None and body_reference not in (None, header_reference):
        raise ValidationFailed(
            "Idempotency-Key header and reference_id differ", field="reference_id"
        )
    return body_reference if body_reference is not None else header_reference


Prefer = Annotated[
    str | None,
    Header(
        alias="Prefer",
        description="`respond-async`: answer 202 with a pending transaction at once and apply "
        "the command through the event backbone; poll `Location` for the outcome.",
    ),
]
Movement = DebitOrCredit | TransferRequest


async def _move(
    kind: TransactionType,
    movement: Movement,
    actor: Actor,
    container: Container,
    request: Request,
    response: Response,
    prefer: str | None,
) -> MovementRead | JSONResponse:
    trace_id = trace_id_of(request)
    movements = container.movements
    if prefer is not None and "respond-async" in prefer.lower():
        submitted = await movements.submit(actor, kind, movement, trace_id=trace_id)
        return _accepted(submitted)
    result: MovementResult
    if isinstance(movement, TransferRequest):
        result = await movements.transfer(actor, movement, trace_id=trace_id)
    elif kind is TransactionType.CREDIT:
        result = await movements.credit(actor, movement, trace_id=trace_id)
    else:
        result = await movements.debit(actor, movement, trace_id=trace_id)
    context.bind(transaction_id=str(result.transaction.transaction_id))
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return MovementRead.of_movement(result.transaction)


def _accepted(submitted: MovementResult) -> JSONResponse:
    leg = submitted.transaction
    context.bind(transaction_id=str(leg.transaction_id))
    headers = {
        "Location": f"/api/v1/transactions/{leg.transaction_id}",
        "Preference-Applied": "respond-async",
    }
    if submitted.replayed:
        headers["Idempotent-Replayed"] = "true"
    body = TransactionRead.of(leg).model_dump(mode="json")
    return JSONResponse(body, status_code=202, headers=headers)


def _debit_or_credit(body: DebitCreditBody, idempotency_key: str | None) -> DebitOrCredit:
    return DebitOrCredit(
        body.account_id,
        body.amount,
        body.currency,
        body.description,
        _reference(body.reference_id, idempotency_key),
        body.metadata or {},
    )


@router.post("/debit", response_model=MovementRead, responses=_MOVEMENT_RESPONSES)
async def debit_account(
    body: DebitCreditBody,
    actor: CurrentActor,
    container: ContainerDep,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKey = None,
    prefer: Prefer = None,
) -> MovementRead | JSONResponse:
    """Take money out of an account; declined (422 ``INSUFFICIENT_FUNDS``) below zero."""
    movement = _debit_or_credit(body, idempotency_key)
    return await _move(TransactionType.DEBIT, movement, actor, container, request, response, prefer)


@router.post("/credit", response_model=MovementRead, responses=_MOVEMENT_RESPONSES)
async def credit_account(
    body: DebitCreditBody,
    actor: CurrentActor,
    container: ContainerDep,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKey = None,
    prefer: Prefer = None,
) -> MovementRead | JSONResponse:
    """Put money into an account (money entering the bank: tellers and admins)."""
    movement = _debit_or_credit(body, idempotency_key)
    return await _move(
        TransactionType.CREDIT, movement, actor, container, request, response, prefer
    )


@router.post("/transfer", response_model=MovementRead, responses=_MOVEMENT_RESPONSES)
async def transfer_between_accounts(
    body: TransferBody,
    actor: CurrentActor,
    container: ContainerDep,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKey = None,
    prefer: Prefer = None,
) -> MovementRead | JSONResponse:
    """Move money between two accounts of the same currency, atomically. The answer is the
    outgoing leg; ``related_transaction_id`` is the incoming leg on the destination."""
    movement = TransferRequest(
        body.source_account_id,
        body.destination_account_id,
        body.amount,
        body.currency,
        body.description,
        _reference(body.reference_id, idempotency_key),
        body.metadata or {},
    )
    return await _move(
        TransactionType.TRANSFER_OUT, movement, actor, container, request, response, prefer
    )


BatchIdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=BATCH_KEY_LENGTH_MAX,
        description="The batch's idempotency key: an item without `reference_id` gets "
        "`<key>:<index>` (its position from 0), so a retry of the same batch with the same key "
        "replays every item; an item changed since answers `IDEMPOTENCY_CONFLICT`. Without "
        "it, only the items with a `reference_id` are idempotent.",
        json_schema_extra={"minLength": 1, **printable("", BATCH_KEY_LENGTH_MAX)},
        examples=["payroll-2026-01"],
    ),
]
_BATCH_RESPONSES = responses(
    E.UNAUTHENTICATED,
    E.FORBIDDEN,
    E.VALIDATION_ERROR,
    E.ACCOUNT_NOT_FOUND,
    E.INSUFFICIENT_FUNDS,
    E.CURRENCY_MISMATCH,
    E.ACCOUNT_INACTIVE,
    E.IDEMPOTENCY_CONFLICT,
    E.ACCOUNT_BUSY,
    E.PAYLOAD_TOO_LARGE,
    success={200: {"description": "Each item's outcome (for `atomic`, every item completed)."}},
    replayable=True,
)
_BATCH_RESPONSES[413]["description"] = (
    "The request body is larger than `BATCH_BODY_BYTES_MAX` (1 MiB by default; this route "
    "only). Codes: `PAYLOAD_TOO_LARGE`."
)
_BATCH_RESPONSES[422]["description"] = (
    "The body is not valid (also more than `BATCH_ITEMS_MAX` items, or none), or an atomic "
    "batch's item failed with a 422 (its index in `details`; nothing was stored). Codes: "
    "`VALIDATION_ERROR`, `INSUFFICIENT_FUNDS`, `CURRENCY_MISMATCH`."
)


def _batch_item(item: BatchDebit | BatchCredit | BatchTransfer) -> BatchItem:
    reference = item.reference_id
    if isinstance(item, BatchTransfer):
        return BatchItem(
            TransactionType.TRANSFER_OUT,
            TransferRequest(
                item.source_account_id,
                item.destination_account_id,
                item.amount,
                item.currency,
                item.description,
                reference,
                item.metadata or {},
            ),
        )
    kind = TransactionType.CREDIT if isinstance(item, BatchCredit) else TransactionType.DEBIT
    request = DebitOrCredit(
        item.account_id,
        item.amount,
        item.currency,
        item.description,
        reference,
        item.metadata or {},
    )
    return BatchItem(kind, request)


@router.post("/batch", response_model=BatchRead, responses=_BATCH_RESPONSES)
async def batch_movements(
    body: BatchBody,
    actor: CurrentActor,
    container: ContainerDep,
    request: Request,
    response: Response,
    idempotency_key: BatchIdempotencyKey = None,
) -> BatchRead:
    """Up to `BATCH_ITEMS_MAX` (1000) debits, credits and transfers in one transaction and one
    commit, decided in order, each authorized and checked like a single request.

    `atomic: false`: 200 with each item's outcome: `completed` (its leg and balance, as a single
    request answers), `failed` (declined and stored as a failed leg, `error.transaction_id`) or
    `rejected` (refused, nothing stored). `atomic: true`: 200 when every item completed;
    otherwise nothing is stored and the answer is the first failing item's error, with the
    status a single request would get and `details: [{"index": i}]`. A body the document calls
    invalid is refused whole (422). `Prefer: respond-async` is ignored: a batch is always
    answered synchronously (no `Preference-Applied`). `Idempotent-Replayed: true` when every
    item is a replay."""
    items_max = container.settings.batch_items_max
    if len(body.items) > items_max:
        raise ValidationFailed(f"a batch has at most {items_max} items", field="items")
    if idempotency_key is not None and not idempotency_key.isprintable():
        raise ValidationFailed(
            "Idempotency-Key must be printable text", field="header.Idempotency-Key"
        )
    items = keyed_batch([_batch_item(item) for item in body.items], idempotency_key)
    # An atomic failure (BatchItemFailed) is answered by the error handler, as the failing
    # item's error with its index (banking.rest.errors).
    results = await container.movements.batch(
        actor, items, atomic=body.atomic, trace_id=trace_id_of(request)
    )
    for result in results:
        if isinstance(result, InvariantViolated):
            raise result
    if all(result.replayed for result in results):
        response.headers["Idempotent-Replayed"] = "true"
    return BatchRead.of_results(results, atomic=body.atomic)


# The lookup's metadata filter: ``metadata[key]=value`` pairs (OpenAPI's deepObject style),
# which FastAPI does not parse: read from the query string by ``_metadata_pairs``.
_METADATA_PARAMETER = {
    "name": "metadata",
    "in": "query",
    "required": False,
    "style": "deepObject",
    "explode": True,
    "description": "Legs whose metadata holds every pair: `metadata[order_id]=42` (repeat "
    "with other keys to narrow). The rules of a movement's metadata apply to the pairs.",
    "schema": {k: v for k, v in METADATA_SCHEMA.items() if k != "description"},
}
_METADATA_QUERY = re.compile(r"metadata\[([^\[\]]*)\]")


def _metadata_pairs(request: Request) -> dict[str, str]:
    """The ``metadata[key]=value`` pairs of the query (validated by the core); a bare
    ``metadata`` or a key given twice is refused."""
    pairs: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if not name.startswith("metadata"):
            continue
        match = _METADATA_QUERY.fullmatch(name)
        if match is None:
            raise ValidationFailed(
                "search by metadata as metadata[key]=value", field=METADATA_FIELD
            )
        key = match.group(1)
        if key in pairs:
            raise ValidationFailed(f"metadata[{key}] is given twice", field=METADATA_FIELD)
        pairs[key] = value
    return pairs


@router.get(
    "",
    response_model=HeldPage,
    responses=responses(E.UNAUTHENTICATED, E.FORBIDDEN, E.VALIDATION_ERROR, E.ACCOUNT_NOT_FOUND),
    openapi_extra={"parameters": [_METADATA_PARAMETER]},
)
async def list_transactions(
    actor: CurrentActor,
    container: ContainerDep,
    request: Request,
    transaction_status: Annotated[
        Literal["held", "pending", "completed", "failed"] | None,
        Query(
            alias="status",
            description="`held`: the fraud review queue (staff; asynchronous movements the "
            "fraud detector held, oldest first, with their scores; the other filters do not "
            "apply). Otherwise the lookup across accounts, newest first, by leg status. An "
            "account's history is `/accounts/{account_id}/transactions`.",
        ),
    ] = None,
    reference_id: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=REFERENCE_ID_LENGTH_MAX,
            description="Legs with this reference (the `Idempotency-Key` of a movement): did "
            "my payment go through? A customer sees only the legs of their own accounts.",
            examples=["atm-2026-01-31-0001"],
        ),
    ] = None,
    account_id: Annotated[
        UUID | None,
        Query(description="Legs of this account (another customer's: 404)."),
    ] = None,
    transaction_type: Annotated[TransactionType | None, Query(alias="type")] = None,
    created_from: Annotated[
        DateTimeQuery | None,
        Query(alias="from", description="Legs created at or after this time (RFC 3339)."),
    ] = None,
    created_to: Annotated[
        DateTimeQuery | None,
        Query(alias="to", description="Legs created before this time (RFC 3339)."),
    ] = None,
    cursor: CursorQuery = None,
    page_size: Annotated[int | None, Query(ge=1, description="Legs per page.")] = None,
) -> HeldPage:
    """The lookup of legs across accounts (a customer sees only their own), or with
    ``status=held`` the fraud review queue (staff)."""
    metadata = _metadata_pairs(request)
    if transaction_status == "held":
        page = await container.review.queue(
            actor, cursor=cursor, page_size=page_size or container.history.page_size_default
        )
        return HeldPage(
            transactions=[TransactionDetail.of_scored(leg, score) for leg, score in page.items],
            next_cursor=page.next_cursor,
        )
    found = await container.statements.search(
        actor,
        TransactionSearch(
            reference_id=reference_id,
            account_id=account_id,
            transaction_type=transaction_type,
            status=None if transaction_status is None else TransactionStatus(transaction_status),
            created_from=created_from,
            created_to=created_to,
            metadata=metadata,
        ),
        cursor=cursor,
        page_size=page_size,
    )
    return HeldPage(
        transactions=[TransactionDetail.of_scored(leg, None) for leg in found.transactions],
        next_cursor=found.next_cursor,
    )


@router.get(
    "/{transaction_id}",
    response_model=TransactionView,
    responses=responses(E.UNAUTHENTICATED, E.VALIDATION_ERROR, E.TRANSACTION_NOT_FOUND),
)
async def get_transaction(
    transaction_id: UUID, actor: CurrentActor, container: ContainerDep
) -> TransactionView:
    """One leg, as stored (completed, failed or pending); for staff with its fraud score; with
    what has been reversed of its movement (`reversed_amount`, `reversals`)."""
    leg, reversals = await container.movements.get_reversals(actor, transaction_id)
    score = await container.review.score_of(actor, transaction_id)
    return TransactionView.of_reversed(leg, score, reversals)


_REVIEW_RESPONSES = responses(
    E.UNAUTHENTICATED,
    E.FORBIDDEN,
    E.VALIDATION_ERROR,
    E.TRANSACTION_NOT_FOUND,
    E.TRANSACTION_NOT_HELD,
    E.ACCOUNT_BUSY,
    success={200: {"links": {"getTransaction": _LEG_LINKS["getTransaction"]}}},
    replayable=True,
)


async def _review(
    decision: ReviewDecision,
    transaction_id: UUID,
    actor: Actor,
    container: Container,
    request: Request,
    response: Response,
) -> TransactionDetail:
    context.bind(transaction_id=str(transaction_id))
    result = await container.movements.review(
        actor, transaction_id, decision, trace_id=trace_id_of(request)
    )
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    else:
        container.metrics.fraud_reviewed(decision.value)
        container.metrics.fraud_review_queue(await container.review.held_count())
    score = await container.review.score_of(actor, transaction_id)
    return TransactionDetail.of_scored(result.transaction, score)


@router.post(
    "/{transaction_id}/release", response_model=TransactionDetail, responses=_REVIEW_RESPONSES
)
async def release_transaction(
    transaction_id: UUID,
    actor: CurrentActor,
    container: ContainerDep,
    request: Request,
    response: Response,
) -> TransactionDetail:
    """Apply a held movement now (tellers and admins), with the same decisions as any
    command: it completes, or declines (for example ``INSUFFICIENT_FUNDS``) as a failed leg.
    Releasing it again answers the same leg (``Idempotent-Replayed: true``)."""
    return await _review(
        ReviewDecision.RELEASED, transaction_id, actor, container, request, response
    )


@router.post(
    "/{transaction_id}/reject", response_model=TransactionDetail, responses=_REVIEW_RESPONSES
)
async def reject_transaction(
    transaction_id: UUID,
    actor: CurrentActor,
    container: ContainerDep,
    request: Request,
    response: Response,
) -> TransactionDetail:
    """Reject a held movement (tellers and admins): it fails with ``FRAUD_REJECTED`` and no
    money moves. Rejecting it again answers the same leg (``Idempotent-Replayed: true``)."""
    return await _review(
        ReviewDecision.REJECTED, transaction_id, actor, container, request, response
    )


_REVERSE_RESPONSES = responses(
    E.UNAUTHENTICATED,
    E.FORBIDDEN,
    E.VALIDATION_ERROR,
    E.TRANSACTION_NOT_FOUND,
    E.INSUFFICIENT_FUNDS,
    E.ACCOUNT_INACTIVE,
    E.TRANSACTION_NOT_REVERSIBLE,
    E.IDEMPOTENCY_CONFLICT,
    # A reversal cannot be reversed: its answer links to reading it only.
    success={200: {"links": {name: _LEG_LINKS[name] for name in ("getTransaction", "getBalance")}}},
    replayable=True,
)


@router.post("/{transaction_id}/reverse", response_model=MovementRead, responses=_REVERSE_RESPONSES)
async def reverse_transaction(
    transaction_id: UUID,
    body: ReverseBody,
    actor: CurrentActor,
    container: ContainerDep,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> MovementRead:
    """Reverse all or part of a completed debit, credit or transfer: a new movement in the
    opposite direction (a credit back, a debit back, or a transfer back from the destination),
    linked to the original by `reverses_transaction_id`, decided like any movement (a reversal
    of a credit whose money is gone declines with `INSUFFICIENT_FUNDS`, a failed leg).

    `amount` defaults to what is left; the reversals of a movement never exceed it in total
    (422 `VALIDATION_ERROR`, field `amount`, naming what is left). Either leg of a transfer
    names it. Only completed movements that are not reversals themselves can be reversed
    (409 `TRANSACTION_NOT_REVERSIBLE`). Tellers and admins reverse anything; a customer only a
    transfer into their own account (a refund); another customer's movement is 404.
    Idempotent like every movement (`reference_id` or `Idempotency-Key`, on the account the
    reversal moves money from or into). `GET /transactions/{id}` of the original shows
    `reversed_amount` and its `reversals`. Always answered synchronously."""
    context.bind(transaction_id=str(transaction_id))
    reversal = ReversalRequest(
        transaction_id,
        body.reason,
        body.amount,
        _reference(body.reference_id, idempotency_key),
    )
    result = await container.movements.reverse(actor, reversal, trace_id=trace_id_of(request))
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return MovementRead.of_movement(result.transaction)
