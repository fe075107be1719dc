"""The gRPC servicers: thin adapters from ``banking.v1`` messages to the core and back.

Each method parses its request (UUIDs, exact decimal amounts through ``parse_amount``), calls
one core service as the authenticated actor, and builds the response (``grpc.mapping``, the one
mapping of each record to its message). Errors are raised as domain errors and turned into
status codes by ``interceptors.ErrorInterceptor``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Final, TypeVar
from uuid import UUID

import grpc

from banking.container import Container
from banking.domain.errors import ValidationFailed
from banking.domain.money import parse_amount
from banking.domain.records import (
    DebitOrCredit,
    HistoryFilter,
    MovementResult,
    TransactionStatus,
    TransactionType,
    TransferRequest,
)
from banking.grpc.gen import (
    accounts_pb2,
    accounts_pb2_grpc,
    transactions_pb2,
    transactions_pb2_grpc,
)
from banking.grpc.interceptors import REPLAYED_KEY, current_actor
from banking.grpc.mapping import (
    account_message,
    balance_message,
    movement_message,
    transaction_message,
)
from banking.observability import context as log_context

Context = grpc.aio.ServicerContext[Any, Any]
_Choice = TypeVar("_Choice", TransactionType, TransactionStatus)

WATCH_POLL_INTERVAL_SECONDS: Final = 0.5
WATCH_DURATION_SECONDS_MAX: Final = 3600.0
DEFAULT_ACCOUNT_TYPE: Final = "checking"


class TransactionServicer(transactions_pb2_grpc.TransactionServiceServicer):
    def __init__(self, container: Container) -> None:
        self._movements = container.movements

    async def DebitAccount(
        self, request: transactions_pb2.DebitRequest, context: Context
    ) -> transactions_pb2.TransactionResponse:
        command = _debit_or_credit(request)
        result = await self._movements.debit(current_actor(), command, trace_id=_trace_id())
        return _movement(result, context)

    async def CreditAccount(
        self, request: transactions_pb2.CreditRequest, context: Context
    ) -> transactions_pb2.TransactionResponse:
        command = _debit_or_credit(request)
        result = await self._movements.credit(current_actor(), command, trace_id=_trace_id())
        return _movement(result, context)

    async def TransferBetweenAccounts(
        self, request: transactions_pb2.TransferRequest, context: Context
    ) -> transactions_pb2.TransactionResponse:
        command = TransferRequest(
            source_account_id=_uuid(request.source_account_id, "source_account_id"),
            destination_account_id=_uuid(request.destination_account_id, "destination_account_id"),
            amount=parse_amount(request.amount),
            currency=request.currency,
            description=request.description or None,
            reference_id=request.reference_id or None,
        )
        result = await self._movements.transfer(current_actor(), command, trace_id=_trace_id())
        return _movement(result, context)

    async def GetTransaction(
        self, request: transactions_pb2.GetTransactionRequest, context: Context
    ) -> transactions_pb2.Transaction:
        transaction_id = _uuid(request.transaction_id, "transaction_id")
        return transaction_message(
            await self._movements.get_transaction(current_actor(), transaction_id)
        )


class AccountServicer(accounts_pb2_grpc.AccountServiceServicer):
    def __init__(self, container: Container) -> None:
        self._accounts = container.accounts
        self._history = container.history
        self._tokens = container.tokens

    async def CreateAccount(
        self, request: accounts_pb2.CreateAccountRequest, context: Context
    ) -> accounts_pb2.CreateAccountResponse:
        account, balance = await self._accounts.open(
            current_actor(),
            account_type=request.account_type or DEFAULT_ACCOUNT_TYPE,
            currency=request.currency,
            customer_id=_uuid(request.customer_id, "customer_id") if request.customer_id else None,
        )
        return accounts_pb2.CreateAccountResponse(
            account=account_message(account), balance=balance_message(balance)
        )

    async def GetAccount(
        self, request: accounts_pb2.GetAccountRequest, context: Context
    ) -> accounts_pb2.Account:
        account_id = _uuid(request.account_id, "account_id")
        return account_message(await self._accounts.get(current_actor(), account_id))

    async def GetBalance(
        self, request: accounts_pb2.GetBalanceRequest, context: Context
    ) -> accounts_pb2.Balance:
        account_id = _uuid(request.account_id, "account_id")
        return balance_message(await self._accounts.balance(current_actor(), account_id))

    async def ListTransactions(
        self, request: accounts_pb2.ListTransactionsRequest, context: Context
    ) -> accounts_pb2.ListTransactionsResponse:
        account_id = _uuid(request.account_id, "account_id")
        history = HistoryFilter(
            created_from=_time(request.created_from, "created_from"),
            created_to=_time(request.created_to, "created_to"),
            transaction_type=_choice(TransactionType, request.transaction_type, "transaction_type"),
            status=_choice(TransactionStatus, request.status, "status"),
        )
        page = await self._history.page(
            current_actor(),
            account_id,
            history,
            cursor=request.cursor or None,
            page_size=request.page_size or None,
        )
        return accounts_pb2.ListTransactionsResponse(
            transactions=[transaction_message(leg) for leg in page.transactions],
            next_cursor=page.next_cursor or "",
        )

    async def WatchBalance(
        self, request: accounts_pb2.WatchBalanceRequest, context: Context
    ) -> AsyncIterator[accounts_pb2.Balance]:
        """Poll the balance and send it when its version moves: simple, correct with any
        number of processes writing, and bounded in time."""
        actor = current_actor()
        account_id = _uuid(request.account_id, "account_id")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WATCH_DURATION_SECONDS_MAX
        last_version: int | None = request.after_version or None
        while True:
            # A deactivated user's stream ends (UNAUTHENTICATED) within the user recheck bound.
            actor = await self._tokens.current(actor)
            balance = await self._accounts.balance(actor, account_id)
            if last_version is None or balance.version > last_version:
                last_version = balance.version
                yield balance_message(balance)
            if loop.time() >= deadline:
                return
            await asyncio.sleep(WATCH_POLL_INTERVAL_SECONDS)


# --- request parsing ----------------------------------------------------------------------


def _debit_or_credit(
    request: transactions_pb2.DebitRequest | transactions_pb2.CreditRequest,
) -> DebitOrCredit:
    return DebitOrCredit(
        account_id=_uuid(request.account_id, "account_id"),
        amount=parse_amount(request.amount),
        currency=request.currency,
        description=request.description or None,
        reference_id=request.reference_id or None,
    )


def _uuid(text: str, field: str) -> UUID:
    try:
        return UUID(text)
    except ValueError as error:
        raise ValidationFailed(f"{field} must be a UUID", field=field) from error


def _time(text: str, field: str) -> datetime | None:
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError as error:
        raise ValidationFailed(f"{field} must be an RFC 3339 time", field=field) from error
    if when.tzinfo is None:
        raise ValidationFailed(f"{field} needs a time zone (for example Z)", field=field)
    return when


def _choice(kind: type[_Choice], text: str, field: str) -> _Choice | None:
    if not text:
        return None
    try:
        return kind(text)
    except ValueError as error:
        allowed = ", ".join(member.value for member in kind)
        raise ValidationFailed(f"{field} must be one of {allowed}", field=field) from error


def _trace_id() -> str | None:
    return log_context.current("trace_id")


# --- responses ------------------------------------------------------------------------------


def _movement(result: MovementResult, context: Context) -> transactions_pb2.TransactionResponse:
    leg = result.transaction
    log_context.bind(transaction_id=str(leg.transaction_id))
    if result.replayed:
        context.set_trailing_metadata(((REPLAYED_KEY, "true"),))
    return movement_message(leg)
