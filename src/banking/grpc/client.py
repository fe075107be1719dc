"""A small typed client for the ``banking.v1`` gRPC API (``grpc.aio``), amounts as ``Decimal``.

    async with BankingClient("localhost:50051", token) as bank:
        movement = await bank.debit(account_id, Decimal("10.00"), "USD", reference_id="order-42")
        print(movement.available_balance, movement.replayed)

A failed call raises ``BankingClientError`` with the gRPC status and what its rich error details
(``google.rpc.Status`` in ``grpc-status-details-bin``, read with ``grpc_status``) say: the API's
stable error code (``ErrorInfo.reason``: ``INSUFFICIENT_FUNDS``, ...), the failed transaction's id
for a declined movement, the bad field (``BadRequest``), how long to wait before a retry
(``RetryInfo``) and the request and trace ids.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from types import TracebackType
from typing import Any, Final, Self, TypeVar
from uuid import UUID

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from banking.grpc.gen import (
    accounts_pb2,
    accounts_pb2_grpc,
    holds_pb2,
    holds_pb2_grpc,
    transactions_pb2,
    transactions_pb2_grpc,
)
from banking.grpc.mapping import from_message

TIMEOUT_SECONDS_DEFAULT: Final = 10.0

_Detail = TypeVar("_Detail", bound=Message)


class BankingClientError(Exception):
    """A call that failed: its status, the stable error code and what the server added.

    ``code`` is None (and so are the rest) when the call failed before the server's error
    handling could describe it: no connection, a deadline, a message above the size limit.
    ``details`` is the whole ``google.rpc.Status`` when the server sent one.
    """

    def __init__(
        self,
        status: grpc.StatusCode,
        message: str,
        *,
        code: str | None,
        field: str | None = None,
        transaction_id: UUID | None = None,
        replayed: bool = False,
        retry_delay: timedelta | None = None,
        request_id: str | None = None,
        trace_id: str | None = None,
        details: status_pb2.Status | None = None,
    ) -> None:
        super().__init__(f"{status.name} {code or ''}: {message}")
        self.status = status
        self.message = message
        self.code = code
        self.field = field
        self.transaction_id = transaction_id
        self.replayed = replayed
        self.retry_delay = retry_delay
        self.request_id = request_id
        self.trace_id = trace_id
        self.details = details


# The records a call returns, read from their messages by ``mapping.from_message`` (by field
# name and type: a new field here needs a message field of the same name).


@dataclass(frozen=True, slots=True)
class Movement:
    """A completed debit, credit or transfer (its initiating leg) and the balance after it."""

    transaction_id: UUID
    status: str
    timestamp: datetime
    account_id: UUID
    transaction_type: str
    amount: Decimal
    currency: str
    available_balance: Decimal
    balance_version: int
    related_transaction_id: UUID | None
    reference_id: str
    replayed: bool
    metadata: dict[str, str] = field(default_factory=dict)
    reverses_transaction_id: UUID | None = None
    hold_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class TransactionInfo:
    transaction_id: UUID
    account_id: UUID
    transaction_type: str
    amount: Decimal
    currency: str
    description: str
    reference_id: str
    created_at: datetime
    status: str
    related_transaction_id: UUID | None
    counterparty_account_id: UUID | None
    failure_code: str
    failure_reason: str
    metadata: dict[str, str] = field(default_factory=dict)
    reverses_transaction_id: UUID | None = None
    hold_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class AccountInfo:
    account_id: UUID
    account_number: str
    customer_id: UUID
    account_type: str
    currency: str
    is_active: bool
    created_at: datetime
    updated_at: datetime
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BalanceInfo:
    account_id: UUID
    currency: str
    current_balance: Decimal
    available_balance: Decimal
    version: int
    last_updated: datetime
    overdraft_limit: Decimal


@dataclass(frozen=True, slots=True)
class TransactionPage:
    transactions: list[TransactionInfo]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class HoldInfo:
    """A hold as ``HoldService`` answers it; ``replayed`` when an authorization with the same
    ``reference_id`` had already created it."""

    hold_id: UUID
    account_id: UUID
    destination_account_id: UUID | None
    amount: Decimal
    captured_amount: Decimal
    currency: str
    description: str
    reference_id: str
    status: str
    expires_at: datetime
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class HoldPage:
    holds: list[HoldInfo]
    next_cursor: str | None


class BankingClient:
    """Typed calls on one channel. ``token`` is a JWT from ``POST /api/v1/auth/token``."""

    def __init__(
        self,
        target: str,
        token: str | None = None,
        *,
        timeout_seconds: float = TIMEOUT_SECONDS_DEFAULT,
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        self._channel = channel or grpc.aio.insecure_channel(target)
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        self._timeout_seconds = timeout_seconds
        self._transactions = transactions_pb2_grpc.TransactionServiceStub(self._channel)
        self._accounts = accounts_pb2_grpc.AccountServiceStub(self._channel)
        self._holds = holds_pb2_grpc.HoldServiceStub(self._channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    # --- money movements ------------------------------------------------------------------

    async def debit(
        self,
        account_id: UUID | str,
        amount: Decimal | str,
        currency: str,
        *,
        description: str | None = None,
        reference_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Movement:
        request = transactions_pb2.DebitRequest(
            **_single_account_fields(
                account_id, amount, currency, description, reference_id, metadata
            )
        )
        return await self._movement(self._transactions.DebitAccount, request)

    async def credit(
        self,
        account_id: UUID | str,
        amount: Decimal | str,
        currency: str,
        *,
        description: str | None = None,
        reference_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Movement:
        request = transactions_pb2.CreditRequest(
            **_single_account_fields(
                account_id, amount, currency, description, reference_id, metadata
            )
        )
        return await self._movement(self._transactions.CreditAccount, request)

    async def transfer(
        self,
        source_account_id: UUID | str,
        destination_account_id: UUID | str,
        amount: Decimal | str,
        currency: str,
        *,
        description: str | None = None,
        reference_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Movement:
        request = transactions_pb2.TransferRequest(
            source_account_id=str(source_account_id),
            destination_account_id=str(destination_account_id),
            amount=_amount_text(amount),
            currency=currency,
            description=description or "",
            reference_id=reference_id or "",
            metadata=dict(metadata or {}),
        )
        return await self._movement(self._transactions.TransferBetweenAccounts, request)

    async def get_transaction(self, transaction_id: UUID | str) -> TransactionInfo:
        request = transactions_pb2.GetTransactionRequest(transaction_id=str(transaction_id))
        return transaction_info(await self._unary(self._transactions.GetTransaction, request))

    async def reverse(
        self,
        transaction_id: UUID | str,
        *,
        reason: str,
        amount: Decimal | str | None = None,
        reference_id: str | None = None,
    ) -> Movement:
        """Reverse all or part (``amount``; what is left when None) of a completed movement."""
        request = transactions_pb2.ReverseTransactionRequest(
            transaction_id=str(transaction_id),
            amount="" if amount is None else _amount_text(amount),
            reason=reason,
            reference_id=reference_id or "",
        )
        return await self._movement(self._transactions.ReverseTransaction, request)

    # --- holds ------------------------------------------------------------------------------

    async def authorize_hold(
        self,
        account_id: UUID | str,
        amount: Decimal | str,
        currency: str,
        *,
        reference_id: str | None = None,
        description: str | None = None,
        expires_at: datetime | None = None,
        destination_account_id: UUID | str | None = None,
    ) -> HoldInfo:
        """Hold ``amount`` of the account's available balance until it is captured, voided or
        expires (``expires_at``: the longest allowed when None)."""
        request = holds_pb2.AuthorizeHoldRequest(
            account_id=str(account_id),
            amount=_amount_text(amount),
            currency=currency,
            description=description or "",
            reference_id=reference_id or "",
            expires_at=expires_at.isoformat() if expires_at else "",
            destination_account_id=str(destination_account_id) if destination_account_id else "",
        )
        call = self._holds.AuthorizeHold(
            request, metadata=self._metadata, timeout=self._timeout_seconds
        )
        try:
            response = await call
            trailing = await call.trailing_metadata()
        except grpc.aio.AioRpcError as error:
            raise client_error(error, await rich_status(call)) from error
        replayed = _metadata_value(trailing, "idempotent-replayed") == "true"
        return hold_info(response, replayed=replayed)

    async def get_hold(self, hold_id: UUID | str) -> HoldInfo:
        request = holds_pb2.GetHoldRequest(hold_id=str(hold_id))
        return hold_info(await self._unary(self._holds.GetHold, request))

    async def list_holds(
        self,
        *,
        account_id: UUID | str | None = None,
        status: str | None = None,
        page_size: int = 0,
        cursor: str | None = None,
    ) -> HoldPage:
        """The holds of an account (every account the caller may read when None), newest
        first."""
        request = holds_pb2.ListHoldsRequest(
            account_id=str(account_id) if account_id else "",
            status=status or "",
            page_size=page_size,
            cursor=cursor or "",
        )
        page = await self._unary(self._holds.ListHolds, request)
        return HoldPage([hold_info(hold) for hold in page.holds], page.next_cursor or None)

    async def capture_hold(
        self,
        hold_id: UUID | str,
        amount: Decimal | str | None = None,
        *,
        final: bool = False,
        reference_id: str | None = None,
    ) -> tuple[HoldInfo, Movement]:
        """Capture ``amount`` (what is left when None) of a hold; ``final`` releases the rest.
        The hold after it, and the capture's completed leg with the balance after it."""
        request = holds_pb2.CaptureHoldRequest(
            hold_id=str(hold_id),
            amount="" if amount is None else _amount_text(amount),
            final=final,
            reference_id=reference_id or "",
        )
        call = self._holds.CaptureHold(
            request, metadata=self._metadata, timeout=self._timeout_seconds
        )
        try:
            response = await call
            trailing = await call.trailing_metadata()
        except grpc.aio.AioRpcError as error:
            raise client_error(error, await rich_status(call)) from error
        replayed = _metadata_value(trailing, "idempotent-replayed") == "true"
        return hold_info(response.hold), movement(response.capture, replayed=replayed)

    async def void_hold(self, hold_id: UUID | str) -> HoldInfo:
        """Release what is left of a hold (a voided hold answers again as it is)."""
        request = holds_pb2.VoidHoldRequest(hold_id=str(hold_id))
        return hold_info(await self._unary(self._holds.VoidHold, request))

    # --- accounts ---------------------------------------------------------------------------

    async def create_account(
        self,
        currency: str,
        *,
        account_type: str = "checking",
        customer_id: UUID | str | None = None,
    ) -> tuple[AccountInfo, BalanceInfo]:
        request = accounts_pb2.CreateAccountRequest(
            account_type=account_type,
            currency=currency,
            customer_id=str(customer_id) if customer_id else "",
        )
        created = await self._unary(self._accounts.CreateAccount, request)
        return account_info(created.account), balance_info(created.balance)

    async def get_account(self, account_id: UUID | str) -> AccountInfo:
        request = accounts_pb2.GetAccountRequest(account_id=str(account_id))
        return account_info(await self._unary(self._accounts.GetAccount, request))

    async def get_balance(self, account_id: UUID | str) -> BalanceInfo:
        request = accounts_pb2.GetBalanceRequest(account_id=str(account_id))
        return balance_info(await self._unary(self._accounts.GetBalance, request))

    async def set_overdraft_limit(
        self, account_id: UUID | str, overdraft_limit: Decimal | str
    ) -> BalanceInfo:
        request = accounts_pb2.SetOverdraftLimitRequest(
            account_id=str(account_id), overdraft_limit=str(overdraft_limit)
        )
        return balance_info(await self._unary(self._accounts.SetOverdraftLimit, request))

    async def list_transactions(
        self,
        account_id: UUID | str,
        *,
        page_size: int = 0,
        cursor: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        transaction_type: str | None = None,
        status: str | None = None,
    ) -> TransactionPage:
        request = accounts_pb2.ListTransactionsRequest(
            account_id=str(account_id),
            page_size=page_size,
            cursor=cursor or "",
            created_from=created_from.isoformat() if created_from else "",
            created_to=created_to.isoformat() if created_to else "",
            transaction_type=transaction_type or "",
            status=status or "",
        )
        page = await self._unary(self._accounts.ListTransactions, request)
        return TransactionPage(
            [transaction_info(leg) for leg in page.transactions], page.next_cursor or None
        )

    async def watch_balance(
        self, account_id: UUID | str, *, after_version: int = 0
    ) -> AsyncIterator[BalanceInfo]:
        """The balance now, then at every change, until the caller stops iterating."""
        request = accounts_pb2.WatchBalanceRequest(
            account_id=str(account_id), after_version=after_version
        )
        call = self._accounts.WatchBalance(request, metadata=self._metadata)
        try:
            async for balance in call:
                yield balance_info(balance)
        except grpc.aio.AioRpcError as error:
            raise client_error(error, await rich_status(call)) from error
        finally:
            call.cancel()

    # --- plumbing -----------------------------------------------------------------------------

    async def _unary(self, method: Any, request: Any) -> Any:
        call = method(request, metadata=self._metadata, timeout=self._timeout_seconds)
        try:
            return await call
        except grpc.aio.AioRpcError as error:
            raise client_error(error, await rich_status(call)) from error

    async def _movement(self, method: Any, request: Any) -> Movement:
        call = method(request, metadata=self._metadata, timeout=self._timeout_seconds)
        try:
            response = await call
            trailing = await call.trailing_metadata()
        except grpc.aio.AioRpcError as error:
            raise client_error(error, await rich_status(call)) from error
        replayed = _metadata_value(trailing, "idempotent-replayed") == "true"
        return movement(response, replayed=replayed)


def _single_account_fields(
    account_id: UUID | str,
    amount: Decimal | str,
    currency: str,
    description: str | None,
    reference_id: str | None,
    metadata: Mapping[str, str] | None,
) -> dict[str, Any]:
    """The fields DebitRequest and CreditRequest share (empty text means "not given")."""
    return {
        "account_id": str(account_id),
        "amount": _amount_text(amount),
        "currency": currency,
        "description": description or "",
        "reference_id": reference_id or "",
        "metadata": dict(metadata or {}),
    }


def _amount_text(amount: Decimal | str) -> str:
    if isinstance(amount, bool | float | int):
        raise TypeError("amount must be a Decimal or a decimal string, never a float")
    return format(amount, "f") if isinstance(amount, Decimal) else amount


def _metadata_value(metadata: Iterable[tuple[str, Any]] | None, key: str) -> str | None:
    for name, value in metadata or ():
        if name == key and isinstance(value, str):
            return value
    return None


async def rich_status(call: grpc.aio.Call) -> status_pb2.Status | None:
    """The ``google.rpc.Status`` a failed call carried, None without one (or with one that
    contradicts the call's own status, which ``grpc_status`` refuses)."""
    try:
        status: status_pb2.Status | None = await rpc_status.aio.from_call(call)
    except ValueError:
        return None
    return status


def client_error(
    error: grpc.aio.AioRpcError, details: status_pb2.Status | None
) -> BankingClientError:
    """The error a failed call raises, described by its rich ``details``."""
    info = _detail(details, error_details_pb2.ErrorInfo)
    bad_request = _detail(details, error_details_pb2.BadRequest)
    retry = _detail(details, error_details_pb2.RetryInfo)
    metadata = dict(info.metadata) if info else {}
    transaction_id = metadata.get("transaction_id")
    violations = bad_request.field_violations if bad_request else ()
    return BankingClientError(
        error.code(),
        error.details() or "",
        code=info.reason if info else None,
        field=violations[0].field if violations else None,
        transaction_id=UUID(transaction_id) if transaction_id else None,
        replayed=metadata.get("idempotent_replayed") == "true",
        retry_delay=retry.retry_delay.ToTimedelta() if retry else None,
        request_id=metadata.get("request_id"),
        trace_id=metadata.get("trace_id"),
        details=details,
    )


def _detail(details: status_pb2.Status | None, kind: type[_Detail]) -> _Detail | None:
    """The first detail of type ``kind`` in a ``google.rpc.Status``."""
    for packed in details.details if details else ():
        message = kind()
        if packed.Unpack(message):  # False when the detail is of another type
            return message
    return None


def movement(response: transactions_pb2.TransactionResponse, *, replayed: bool) -> Movement:
    return from_message(Movement, response, replayed=replayed)


def transaction_info(leg: transactions_pb2.Transaction) -> TransactionInfo:
    return from_message(TransactionInfo, leg)


def hold_info(hold: holds_pb2.Hold, *, replayed: bool = False) -> HoldInfo:
    return from_message(HoldInfo, hold, replayed=replayed)


def account_info(account: accounts_pb2.Account) -> AccountInfo:
    return from_message(AccountInfo, account)


def balance_info(balance: accounts_pb2.Balance) -> BalanceInfo:
    return from_message(BalanceInfo, balance)
