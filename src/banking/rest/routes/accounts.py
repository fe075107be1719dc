"""``/api/v1/accounts``: open, read, look up by number, freeze, balance and history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Header, Query, Request, Response, status

from banking.domain.records import HistoryFilter, TransactionStatus, TransactionType
from banking.rest.dependencies import ContainerDep, CurrentActor
from banking.rest.jsonbody import ExactJSONRoute
from banking.rest.schemas import (
    AccountCreateBody,
    AccountCreated,
    AccountList,
    AccountPatchBody,
    AccountRead,
    BalanceRead,
    ErrorEnvelope,
    TransactionPage,
    TransactionRead,
)
from banking.rest.statements import (
    ARROW_STREAM_MEDIA_TYPE,
    PARQUET_MEDIA_TYPE,
    to_arrow_stream,
    to_parquet,
)

router = APIRouter(prefix="/api/v1/accounts", tags=["accounts"], route_class=ExactJSONRoute)
_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorEnvelope} for code in (401, 403, 404, 422)
}


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=AccountCreated, responses=_ERRORS
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


@router.get("", response_model=AccountList, responses=_ERRORS)
async def list_accounts(
    actor: CurrentActor,
    container: ContainerDep,
    account_number: Annotated[str | None, Query(max_length=20)] = None,
) -> AccountList:
    """The caller's accounts (all accounts for staff), or the one with ``account_number``."""
    if account_number is not None:
        account = await container.accounts.find_by_number(actor, account_number)
        return AccountList(accounts=[AccountRead.of(account)])
    accounts = await container.accounts.list(actor)
    return AccountList(accounts=[AccountRead.of(account) for account in accounts])


@router.get("/{account_id}", response_model=AccountRead, responses=_ERRORS)
async def get_account(
    account_id: UUID, actor: CurrentActor, container: ContainerDep
) -> AccountRead:
    return AccountRead.of(await container.accounts.get(actor, account_id))


@router.patch("/{account_id}", response_model=AccountRead, responses=_ERRORS)
async def update_account(
    account_id: UUID, body: AccountPatchBody, actor: CurrentActor, container: ContainerDep
) -> AccountRead:
    """Freeze (``is_active: false``) or re-open an account: tellers and admins."""
    account = await container.accounts.set_active(actor, account_id, is_active=body.is_active)
    return AccountRead.of(account)


@router.get("/{account_id}/balance", response_model=BalanceRead, responses=_ERRORS)
async def get_balance(
    account_id: UUID,
    actor: CurrentActor,
    container: ContainerDep,
    response: Response,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
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
    responses={
        **_ERRORS,
        200: {
            "content": {
                "application/json": {},
                ARROW_STREAM_MEDIA_TYPE: {},
                PARQUET_MEDIA_TYPE: {},
            },
            "description": "JSON page, or the same rows as Arrow IPC stream or Parquet "
            "(by Accept header); the next cursor is then in the X-Next-Cursor header.",
        },
    },
)
async def list_transactions(
    account_id: UUID,
    actor: CurrentActor,
    container: ContainerDep,
    request: Request,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    page_size: Annotated[int | None, Query(ge=1)] = None,
    created_from: Annotated[datetime | None, Query(alias="from")] = None,
    created_to: Annotated[datetime | None, Query(alias="to")] = None,
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
