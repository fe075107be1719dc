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
from banking.domain.money import normalize_currency, parse_amount
from banking.domain.records import (
    BatchItem,
    DebitOrCredit,
    HistoryFilter,
    MovementResult,
    ReversalRequest,
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
from banking.grpc.interceptors import (
    REPLAYED_KEY,
    current_actor,
)
from banking.grpc.mapping import (
    account_message,
    account_page_message,
    balance_message,
    batch_message,
    movement_message,
    statement_message,
    transaction_message,
)
from banking.ledger.metadata import check_metadata
from banking.ledger.movements import keyed_batch
from banking.ledger.statements import TransactionSearch
from banking.observability import context as log_context

Context = grpc.aio.ServicerContext[Any, Any]
_Choice = TypeVar("_Choice", TransactionType, TransactionStatus)

WATCH_POLL_INTERVAL_SECONDS: Final = 0.5
WATCH_DURATION_SECONDS_MAX: Final = 3600.0
DEFAULT_ACCOUNT_TYPE: Final = "checking"
# The call metadata entry that carries an account creation's idempotency key.
IDEMPOTENCY_KEY_METADATA: Final = "idempotency-key"
# The batch's idempotency key makes each item's key "<key>:<index>": short enough that the
# longest (index 999) is still a valid reference_id (the same bound as REST's header).
# ErrorInfo.metadata key of an atomic batch's failure: the failing item's position.


class TransactionServicer(transactions_pb2_grpc.TransactionServiceServicer):
    def __init__(self, container: Container) -> None:
        self._movements = container.movements
        self._settings = container.settings
        self._statements = container.statements

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
        command = _transfer(request)
        result = await self._movements.transfer(current_actor(), command, trace_id=_trace_id())
        return _movement(result, context)

    async def BatchMovements(
        self, request: transactions_pb2.BatchMovementsRequest, context: Context
    ) -> transactions_pb2.BatchMovementsResponse:
        items_max = self._settings.batch_items_max
        if len(request.items) > items_max:
            raise ValidationFailed(f"a batch has at most {items_max} items", field="items")
        items = keyed_batch(
            [_batch_item(item, index) for index, item in enumerate(request.items)],
            request.idempotency_key or None,
        )
        # An atomic failure (BatchItemFailed) is answered by the interceptor, as the failing
        # item's status with its index (banking.grpc.interceptors).
        results = await self._movements.batch(
            current_actor(), items, atomic=request.atomic, trace_id=_trace_id()
        )
        if results and all(result.replayed for result in results):
            context.set_trailing_metadata(((REPLAYED_KEY, "true"),))
        return batch_message(results, atomic=request.atomic)

    async def GetTransaction(
        self, request: transactions_pb2.GetTransactionRequest, context: Context
    ) -> transactions_pb2.Transaction:
        transaction_id = _uuid(request.transaction_id, "transaction_id")
        leg, reversals = await self._movements.get_reversals(current_actor(), transaction_id)
        return transaction_message(leg, reversals)

    async def ReverseTransaction(
        self, request: transactions_pb2.ReverseTransactionRequest, context: Context
    ) -> transactions_pb2.TransactionResponse:
        reversal = ReversalRequest(
            transaction_id=_uuid(request.transaction_id, "transaction_id"),
            reason=request.reason,
            amount=parse_amount(request.amount) if request.amount else None,
            reference_id=request.reference_id or None,
        )
        result = await self._movements.reverse(current_actor(), reversal, trace_id=_trace_id())
        return _movement(result, context)

    async def SearchTransactions(
        self, request: transactions_pb2.SearchTransactionsRequest, context: Context
    ) -> transactions_pb2.SearchTransactionsResponse:
        if request.page_size < 0:
            raise ValidationFailed("page_size must not be negative", field="page_size")
        search = TransactionSearch(
            reference_id=request.reference_id or None,
            account_id=_uuid(request.account_id, "account_id") if request.account_id else None,
            transaction_type=_choice(TransactionType, request.transaction_type, "transaction_type"),
            status=_choice(TransactionStatus, request.status, "status"),
            created_from=_time(request.created_from, "created_from"),
            created_to=_time(request.created_to, "created_to"),
            metadata=dict(request.metadata),
        )
        page = await self._statements.search(
            current_actor(),
            search,
            cursor=request.cursor or None,
            page_size=request.page_size or None,
        )
        return transactions_pb2.SearchTransactionsResponse(
            transactions=[transaction_message(leg) for leg in page.transactions],
            next_cursor=page.next_cursor or "",
        )


class AccountServicer(accounts_pb2_grpc.AccountServiceServicer):
    def __init__(self, container: Container) -> None:
        self._accounts = container.accounts
        self._history = container.history
        self._statements = container.statements
        self._tokens = container.tokens

    async def CreateAccount(
        self, request: accounts_pb2.CreateAccountRequest, context: Context
    ) -> accounts_pb2.CreateAccountResponse:
        opened = await self._accounts.open_once(
            current_actor(),
            account_type=request.account_type or DEFAULT_ACCOUNT_TYPE,
            currency=request.currency,
            customer_id=_uuid(request.customer_id, "customer_id") if request.customer_id else None,
            idempotency_key=_creation_key(request.idempotency_key, context),
            metadata=dict(request.metadata),
        )
        if opened.replayed:
            context.set_trailing_metadata(((REPLAYED_KEY, "true"),))
        return accounts_pb2.CreateAccountResponse(
            account=account_message(opened.account), balance=balance_message(opened.balance)
        )

    async def ListAccounts(
        self, request: accounts_pb2.ListAccountsRequest, context: Context
    ) -> accounts_pb2.ListAccountsResponse:
        if request.page_size < 0:
            raise ValidationFailed("page_size must not be negative", field="page_size")
        page = await self._accounts.page(
            current_actor(), cursor=request.cursor or None, page_size=request.page_size or None
        )
        return account_page_message(page)

    async def GetAccount(
        self, request: accounts_pb2.GetAccountRequest, context: Context
    ) -> accounts_pb2.Account:
        account_id = _uuid(request.account_id, "account_id")
        return account_message(await self._accounts.get(current_actor(), account_id))

    async def GetBalance(
        self, request: accounts_pb2.GetBalanceRequest, context: Context
    ) -> accounts_pb2.Balance:
        account_id = _uuid(request.account_id, "account_id")
        as_of = _time(request.as_of, "as_of")
        if as_of is not None:
            return balance_message(
                await self._statements.balance_as_of(current_actor(), account_id, as_of)
            )
        return balance_message(await self._accounts.balance(current_actor(), account_id))

    async def GetStatement(
        self, request: accounts_pb2.GetStatementRequest, context: Context
    ) -> accounts_pb2.Statement:
        account_id = _uuid(request.account_id, "account_id")
        period_from = _time(request.period_from, "period_from")
        period_to = _time(request.period_to, "period_to")
        if period_from is None or period_to is None:
            field = "period_from" if period_from is None else "period_to"
            raise ValidationFailed(f"{field} is required", field=field)
        return statement_message(
            await self._statements.statement(current_actor(), account_id, period_from, period_to)
        )

    async def SetOverdraftLimit(
        self, request: accounts_pb2.SetOverdraftLimitRequest, context: Context
    ) -> accounts_pb2.Balance:
        account_id = _uuid(request.account_id, "account_id")
        balance = await self._accounts.set_overdraft_limit(
            current_actor(), account_id, request.overdraft_limit, trace_id=_trace_id()
        )
        return balance_message(balance)

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
        metadata=dict(request.metadata),
    )


def _transfer(request: transactions_pb2.TransferRequest) -> TransferRequest:
    return TransferRequest(
        source_account_id=_uuid(request.source_account_id, "source_account_id"),
        destination_account_id=_uuid(request.destination_account_id, "destination_account_id"),
        amount=parse_amount(request.amount),
        currency=request.currency,
        description=request.description or None,
        reference_id=request.reference_id or None,
        metadata=dict(request.metadata),
    )


def _batch_item(item: transactions_pb2.BatchItem, index: int) -> BatchItem:
    """One item of a batch, read like the single call's request. What REST's document calls
    invalid (a bad UUID or amount, an unknown currency, non-printable text) refuses the whole
    batch here too, naming ``items[index].<movement>.<field>`` (the batch's key is applied by
    ``keyed_batch``)."""
    movement = item.WhichOneof("movement")
    if movement is None:
        raise ValidationFailed(
            f"items[{index}] needs a debit, credit or transfer", field=f"items[{index}]"
        )
    try:
        request: DebitOrCredit | TransferRequest
        if movement == "transfer":
            request = _transfer(item.transfer)
        else:
            request = _debit_or_credit(item.debit if movement == "debit" else item.credit)
        normalize_currency(request.currency)
        for field in ("description", "reference_id"):
            text = getattr(request, field)
            if text is not None and not text.isprintable():
                raise ValidationFailed(f"{field} must be printable text", field=field)
        check_metadata(request.metadata)
    except ValidationFailed as error:
        raise ValidationFailed(
            f"items[{index}]: {error.message}",
            field=f"items[{index}].{movement}.{error.field}" if error.field else None,
        ) from error
    kind = _BATCH_KINDS[movement]
    return BatchItem(kind, request)


_BATCH_KINDS: Final = {
    "debit": TransactionType.DEBIT,
    "credit": TransactionType.CREDIT,
    "transfer": TransactionType.TRANSFER_OUT,
}


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


def _creation_key(field_key: str, context: Context) -> str | None:
    """The idempotency key of a creation: the ``idempotency-key`` metadata entry or the
    request's ``idempotency_key`` field (equal when both are sent); None without either.
    An empty metadata value is a key (refused as invalid), not an absent one."""
    sent = [
        value
        for name, value in context.invocation_metadata() or ()
        if name.lower() == IDEMPOTENCY_KEY_METADATA and isinstance(value, str)
    ]
    metadata_key = sent[0] if sent else None
    if metadata_key is not None and field_key and metadata_key != field_key:
        raise ValidationFailed(
            "the idempotency-key metadata and idempotency_key differ", field="idempotency_key"
        )
    return metadata_key if metadata_key is not None else (field_key or None)


def _trace_id() -> str | None:
    return log_context.current("trace_id")


# --- responses ------------------------------------------------------------------------------


def _movement(result: MovementResult, context: Context) -> transactions_pb2.TransactionResponse:
    leg = result.transaction
    log_context.bind(transaction_id=str(leg.transaction_id))
    if result.replayed:
        context.set_trailing_metadata(((REPLAYED_KEY, "true"),))
    return movement_message(leg)
