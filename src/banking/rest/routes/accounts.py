"""``/api/v1/accounts``: open, read, look up by number, freeze, balance and history."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Header, Query, Request, Response, status

from banking.domain.records import HistoryFilter, TransactionStatus, TransactionType
from banking.rest.dependencies import ContainerDep, CurrentActor, trace_id_of
from banking.rest.errors import ErrorCode
from banking.rest.openapi import body_link, header, link, responses
from banking.rest.routes import Route
from banking.rest.schemas import (
    EXAMPLE_ACCOUNT_NUMBER,
    EXAMPLE_CURSOR,
    AccountCreateBody,
    AccountCreated,
    AccountList,
    AccountPatchBody,
    AccountRead,
    BalanceRead,
    DateTimeQuery,
    TransactionPage,
    TransactionRead,
)
from banking.rest.statements import (
    ARROW_STREAM_MEDIA_TYPE,
    PARQUET_MEDIA_TYPE,
    to_arrow_stream,
    to_parquet,
)

router = APIRouter(prefix="/api/v1/accounts", tags=["accounts"], route_class=Route)
E = ErrorCode
# What a read of one account can answer (another customer's account is "not found").
_READ_ERRORS = (E.UNAUTHENTICATED, E.VALIDATION_ERROR, E.ACCOUNT_NOT_FOUND)
_OPENED_LINKS = {
    "getAccount": link("getAccount", "The account just opened.", account_id="account_id"),
    "getBalance": link("getBalance", "Its balance.", account_id="account_id"),
    "listAccountTransactions": link(
        "listAccountTransactions", "Its history.", account_id="account_id"
    ),
    "updateAccount": link("updateAccount", "Freeze or re-open it.", account_id="account_id"),
    "creditAccount": body_link(
        "creditAccount", "Put money into it.", account_id="account_id", currency="currency"
    ),
    "debitAccount": body_link(
        "debitAccount", "Take money out of it.", account_id="account_id", currency="currency"
    ),
    "transferBetweenAccounts": body_link(
        "transferBetweenAccounts",
        "Move money from it to another account.",
        source_account_id="account_id",
        currency="currency",
    ),
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=AccountCreated,
    responses=responses(
        E.UNAUTHENTICATED,
        E.FORBIDDEN,
        E.VALIDATION_ERROR,
        success={
            201: {
                "headers": {"Location": header("Location", required=True)},
                "links": _OPENED_LINKS,
            }
        },
    ),
)
async def open_account(
    body: AccountCreateBody, actor: CurrentActor, container: ContainerDep, response: Response
) -> AccountCreated:
    """Open an account with a zero balance in one currency."""
    account, balance = await container.accounts.open(
        actor,
        account_type=body.account_type,
        currency=body.currency,
        customer_id=body.customer_id,
    )
    response.headers["Location"] = f"/api/v1/accounts/{account.account_id}"
    return AccountCreated(**AccountRead.of(account).model_dump(), balance=BalanceRead.of(balance))


@router.get("", response_model=AccountList, responses=responses(*_READ_ERRORS))
async def list_accounts(
    actor: CurrentActor,
    container: ContainerDep,
    account_number: Annotated[
        str | None,
        Query(
            max_length=20,
            description="The account with this number (its last digit is a Luhn check "
            "digit): a list of one, or 404.",
            json_schema_extra={"pattern": "^[0-9]{2,20}$"},
            examples=[EXAMPLE_ACCOUNT_NUMBER],
        ),
    ] = None,
) -> AccountList:
    """The caller's accounts (all accounts for staff), or the one with ``account_number``."""
    if account_number is not None:
        account = await container.accounts.find_by_number(actor, account_number)
        return AccountList(accounts=[AccountRead.of(account)])
    accounts = await container.accounts.list(actor)
    return AccountList(accounts=[AccountRead.of(account) for account in accounts])


@router.get("/{account_id}", response_model=AccountRead, responses=responses(*_READ_ERRORS))
async def get_account(
    account_id: UUID, actor: CurrentActor, container: ContainerDep
) -> AccountRead:
    """One account."""
    return AccountRead.of(await container.accounts.get(actor, account_id))


@router.patch(
    "/{account_id}", response_model=AccountRead, responses=responses(*_READ_ERRORS, E.FORBIDDEN)
)
async def update_account(
    account_id: UUID,
    body: AccountPatchBody,
    actor: CurrentActor,
    container: ContainerDep,
    request: Request,
) -> AccountRead:
    """Freeze (``is_active: false``) or re-open an account: tellers and admins."""
    account = await container.accounts.set_active(
        actor, account_id, is_active=body.is_active, trace_id=trace_id_of(request)
    )
    return AccountRead.of(account)


@router.get(
    "/{account_id}/balance",
    response_model=BalanceRead,
    responses=responses(
        *_READ_ERRORS,
        success={
            200: {"headers": {"ETag": header("ETag", required=True)}},
            304: {
                "description": "Not modified: `If-None-Match` holds the current version.",
                "headers": {"ETag": header("ETag", required=True)},
            },
        },
    ),
)
async def get_balance(
    account_id: UUID,
    actor: CurrentActor,
    container: ContainerDep,
    response: Response,
    if_none_match: Annotated[
        str | None,
        Header(
            alias="If-None-Match",
            description="ETags of a balance the client holds: 304 when one is current.",
            examples=['"3"'],
        ),
    ] = None,
) -> BalanceRead | Response:
    """Current and available balance; ``ETag`` is the balance version."""
    balance = await container.accounts.balance(actor, account_id)
    etag = f'"{balance.version}"'
    if if_none_match is not None and etag in [tag.strip() for tag in if_none_match.split(",")]:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
    response.headers["ETag"] = etag
    return BalanceRead.of(balance)


@router.get(
    "/{account_id}/transactions",
    response_model=TransactionPage,
    responses=responses(
        *_READ_ERRORS,
        success={
            200: {
                "content": {
                    "application/json": {},
                    ARROW_STREAM_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
                    PARQUET_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
                },
                "description": "JSON page, or the same rows as an Arrow IPC stream or Parquet "
                "(by `Accept`); the next cursor is then only in the `X-Next-Cursor` header.",
                "headers": {"X-Next-Cursor": header("X-Next-Cursor", required=False)},
            }
        },
    ),
)
async def list_account_transactions(
    account_id: UUID,
    actor: CurrentActor,
    container: ContainerDep,
    request: Request,
    cursor: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="`next_cursor` of the previous page (opaque).",
            json_schema_extra={"pattern": "^[A-Za-z0-9_-]+$"},
            examples=[EXAMPLE_CURSOR],
        ),
    ] = None,
    page_size: Annotated[int | None, Query(ge=1, description="Legs per page.")] = None,
    created_from: Annotated[
        DateTimeQuery | None,
        Query(alias="from", description="Legs created at or after this time (RFC 3339)."),
    ] = None,
    created_to: Annotated[
        DateTimeQuery | None,
        Query(alias="to", description="Legs created before this time (RFC 3339)."),
    ] = None,
    transaction_type: Annotated[TransactionType | None, Query(alias="type")] = None,
    transaction_status: Annotated[TransactionStatus | None, Query(alias="status")] = None,
) -> TransactionPage | Response:
    """History, newest first, with cursor pagination and filters."""
    page = await container.history.page(
        actor,
        account_id,
        HistoryFilter(created_from, created_to, transaction_type, transaction_status),
        cursor=cursor,
        page_size=page_size,
    )
    accept = request.headers.get("accept", "")
    headers = {"X-Next-Cursor": page.next_cursor} if page.next_cursor else {}
    if ARROW_STREAM_MEDIA_TYPE in accept:
        return Response(
            to_arrow_stream(page.transactions), media_type=ARROW_STREAM_MEDIA_TYPE, headers=headers
        )
    if PARQUET_MEDIA_TYPE in accept:
        return Response(
            to_parquet(page.transactions), media_type=PARQUET_MEDIA_TYPE, headers=headers
        )
    return TransactionPage(
        transactions=[TransactionRead.of(leg) for leg in page.transactions],
        next_cursor=page.next_cursor,
    )
