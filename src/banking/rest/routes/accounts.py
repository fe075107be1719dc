"""``/api/v1/accounts``: open, read, look up by number, freeze, balance and history."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Header, Query, Request, Response, status

from banking.domain.money import format_amount
from banking.domain.records import HistoryFilter, TransactionStatus, TransactionType
from banking.rest.dependencies import ContainerDep, CurrentActor, trace_id_of
from banking.rest.errors import ErrorCode
from banking.rest.openapi import body_link, header, link, responses
from banking.rest.routes import Route
from banking.rest.schemas import (
    EXAMPLE_ACCOUNT_NUMBER,
    AccountCreateBody,
    AccountCreated,
    AccountList,
    AccountPatchBody,
    AccountRead,
    BalanceRead,
    CreationIdempotencyKey,
    CursorQuery,
    DateTimeQuery,
    OverdraftLimitBody,
    StatementLineRead,
    StatementRead,
    TransactionPage,
    TransactionRead,
)
from banking.rest.statements import (
    ARROW_STREAM_MEDIA_TYPE,
    CSV_MEDIA_TYPE,
    PARQUET_MEDIA_TYPE,
    statement_arrow_stream,
    statement_csv,
    statement_headers,
    statement_parquet,
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
        E.IDEMPOTENCY_CONFLICT,
        success={
            201: {
                "headers": {"Location": header("Location", required=True)},
                "links": _OPENED_LINKS,
            }
        },
        replayable=True,
    ),
)
async def open_account(
    body: AccountCreateBody,
    actor: CurrentActor,
    container: ContainerDep,
    response: Response,
    idempotency_key: CreationIdempotencyKey = None,
) -> AccountCreated:
    """Open an account with a zero balance in one currency. With `Idempotency-Key`, a retry
    answers the account the first request opened (`Idempotent-Replayed: true`, its balance
    as it is now)."""
    opened = await container.accounts.open_once(
        actor,
        account_type=body.account_type,
        currency=body.currency,
        customer_id=body.customer_id,
        idempotency_key=idempotency_key,
        metadata=body.metadata,
    )
    account, balance = opened.account, opened.balance
    if opened.replayed:
        response.headers["Idempotent-Replayed"] = "true"
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
    cursor: CursorQuery = None,
    page_size: Annotated[
        int | None,
        Query(ge=1, description="Accounts per page (500 when absent; at most PAGE_SIZE_MAX)."),
    ] = None,
) -> AccountList:
    """The caller's accounts (all accounts for staff), oldest first, a page at a time
    (`next_cursor`); or the one with ``account_number``."""
    if account_number is not None:
        account = await container.accounts.find_by_number(actor, account_number)
        return AccountList(accounts=[AccountRead.of(account)])
    page = await container.accounts.page(actor, cursor=cursor, page_size=page_size)
    return AccountList(
        accounts=[AccountRead.of(account) for account in page.accounts],
        next_cursor=page.next_cursor,
    )


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


@router.put(
    "/{account_id}/overdraft-limit",
    response_model=BalanceRead,
    responses=responses(*_READ_ERRORS, E.FORBIDDEN),
)
async def set_overdraft_limit(
    account_id: UUID,
    body: OverdraftLimitBody,
    actor: CurrentActor,
    container: ContainerDep,
    request: Request,
) -> BalanceRead:
    """Set how far below zero the account's balances may go (tellers and admins; `0` for
    not at all). A limit the account already uses more than is refused (422) and changes
    nothing. The balance's version (its ETag) increases."""
    balance = await container.accounts.set_overdraft_limit(
        actor, account_id, body.overdraft_limit, trace_id=trace_id_of(request)
    )
    return BalanceRead.of(balance)


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
    as_of: Annotated[
        DateTimeQuery | None,
        Query(
            description="The balance at this time (RFC 3339 with a zone), computed exactly "
            "from the completed legs created at or before it; `available_balance` then equals "
            "`current_balance` (no holds), `version` is the version after the last such leg.",
            examples=["2026-01-31T12:00:00Z"],
        ),
    ] = None,
) -> BalanceRead | Response:
    """Current and available balance; ``ETag`` is the balance version. With ``as_of``, the
    balance at that time."""
    if as_of is None:
        balance = await container.accounts.balance(actor, account_id)
    else:
        balance = await container.statements.balance_as_of(actor, account_id, as_of)
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
    cursor: CursorQuery = None,
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


_STATEMENT_FORMATS = {
    "json": "application/json",
    "csv": CSV_MEDIA_TYPE,
    "arrow": ARROW_STREAM_MEDIA_TYPE,
    "parquet": PARQUET_MEDIA_TYPE,
}
_SUMMARY_HEADERS = {
    f"X-Statement-{name}": header(f"X-Statement-{name}", required=False)
    for name in ("Opening-Balance", "Closing-Balance", "Credits-Total", "Debits-Total", "Count")
}


@router.get(
    "/{account_id}/statement",
    response_model=StatementRead,
    responses=responses(
        *_READ_ERRORS,
        success={
            200: {
                "content": {
                    "application/json": {},
                    CSV_MEDIA_TYPE: {"schema": {"type": "string"}},
                    ARROW_STREAM_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
                    PARQUET_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
                },
                "description": "The statement as JSON, or its legs as CSV, an Arrow IPC stream "
                "or Parquet (by `format` or `Accept`); the opening and closing balances and "
                "totals are then in the `X-Statement-*` headers (and in the Arrow/Parquet "
                "schema metadata).",
                "headers": _SUMMARY_HEADERS,
            }
        },
    ),
)
async def get_statement(
    account_id: UUID,
    actor: CurrentActor,
    container: ContainerDep,
    request: Request,
    period_from: Annotated[
        DateTimeQuery,
        Query(
            alias="from",
            description="Start of the period (exclusive; RFC 3339 with a zone): the opening "
            "balance is the balance as of this time.",
            examples=["2026-01-01T00:00:00Z"],
        ),
    ],
    period_to: Annotated[
        DateTimeQuery,
        Query(
            alias="to",
            description="End of the period (inclusive): the closing balance is the balance "
            "as of this time.",
            examples=["2026-02-01T00:00:00Z"],
        ),
    ],
    statement_format: Annotated[
        Literal["json", "csv", "arrow", "parquet"] | None,
        Query(alias="format", description="Overrides `Accept`."),
    ] = None,
) -> StatementRead | Response:
    """An account's statement: opening balance, every completed leg of the period oldest first
    with its running balance, closing balance and totals (at most `STATEMENT_LEGS_MAX` legs)."""
    statement = await container.statements.statement(actor, account_id, period_from, period_to)
    accept = request.headers.get("accept", "")
    chosen: str = statement_format or next(
        (name for name, media in _STATEMENT_FORMATS.items() if name != "json" and media in accept),
        "json",
    )
    headers = statement_headers(statement)
    if chosen == "csv":
        return Response(
            statement_csv(statement), media_type=f"{CSV_MEDIA_TYPE}; charset=utf-8", headers=headers
        )
    if chosen == "arrow":
        return Response(
            statement_arrow_stream(statement), media_type=ARROW_STREAM_MEDIA_TYPE, headers=headers
        )
    if chosen == "parquet":
        return Response(
            statement_parquet(statement), media_type=PARQUET_MEDIA_TYPE, headers=headers
        )
    return StatementRead(
        account_id=statement.account.account_id,
        currency=statement.account.currency,
        period_from=statement.period_from,
        period_to=statement.period_to,
        opening_balance=format_amount(statement.opening_balance),
        closing_balance=format_amount(statement.closing_balance),
        credits_total=format_amount(statement.credits_total),
        debits_total=format_amount(statement.debits_total),
        count=statement.count,
        transactions=[
            StatementLineRead.model_validate(
                {
                    **TransactionRead.of(line.leg).model_dump(),
                    "running_balance": format_amount(line.running_balance),
                }
            )
            for line in statement.lines
        ],
    )
