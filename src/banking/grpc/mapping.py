"""The gRPC form of the ledger's records: one mapping per message, each way.

Out (the servicers): a message is filled from a record by the message's own fields, each from
the record's field of the same name (``MOVEMENT_FIELDS`` lists the exceptions), as the API's
text: UUIDs, amounts (two decimal places), times (RFC 3339) and enum values become strings, and
``None`` leaves a field empty (proto3 has no null). Back (``grpc.client``): ``from_message``
reads a message into one of the client's dataclasses by that dataclass's field types.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Final, TypeVar, get_type_hints
from uuid import UUID

from google.protobuf.message import Message

from banking.domain.errors import BankingError, Declined, InvariantViolated, ValidationFailed
from banking.domain.money import format_amount
from banking.domain.records import (
    Account,
    Balance,
    Hold,
    HoldResult,
    MovementResult,
    Reversals,
    Transaction,
)
from banking.grpc.gen import accounts_pb2, holds_pb2, transactions_pb2
from banking.ledger.accounts import AccountPage
from banking.ledger.statements import Statement

_Message = TypeVar("_Message", bound=Message)
_Record = TypeVar("_Record")

# TransactionResponse field -> leg field, where the names differ: the sketch's response calls
# the leg's time "timestamp" and the balance after it available_balance / balance_version.
MOVEMENT_FIELDS: Final[Mapping[str, str]] = {
    "timestamp": "created_at",
    "available_balance": "available_balance_after",
    "balance_version": "balance_version_after",
}


# Transaction fields that are not the leg's own: what has been reversed of its movement,
# filled by GetTransaction only (``Movements.get_reversals``).
REVERSAL_FIELDS: Final = frozenset({"reversed_amount", "reversal_ids"})


def transaction_message(
    leg: Transaction, reversals: Reversals | None = None
) -> transactions_pb2.Transaction:
    message = _message(transactions_pb2.Transaction, leg, skipped=REVERSAL_FIELDS)
    if reversals is not None:
        message.reversed_amount = format_amount(reversals.reversed_amount)
        message.reversal_ids.extend(str(reversal_id) for reversal_id in reversals.reversal_ids)
    return message


def movement_message(leg: Transaction) -> transactions_pb2.TransactionResponse:
    """A completed movement: its initiating leg and the balance after it."""
    return _message(transactions_pb2.TransactionResponse, leg, MOVEMENT_FIELDS)


def hold_message(hold: Hold) -> holds_pb2.Hold:
    return _message(holds_pb2.Hold, hold)


def capture_message(result: HoldResult) -> holds_pb2.CaptureHoldResponse:
    """A capture's answer: the hold after it and the capture's completed leg."""
    if result.capture is None:
        raise InvariantViolated("a capture has its leg")
    return holds_pb2.CaptureHoldResponse(
        hold=hold_message(result.hold), capture=movement_message(result.capture)
    )


def batch_message(
    results: Sequence[MovementResult | BankingError], *, atomic: bool
) -> transactions_pb2.BatchMovementsResponse:
    """A batch's results (``Movements.batch``), each item as the single call would answer it:
    ``completed`` with its movement, ``failed`` (a decline, stored as a failed leg) or
    ``rejected`` (refused, nothing stored) with its error."""
    items = [_batch_item_message(index, result) for index, result in enumerate(results)]
    counts = Counter(item.status for item in items)
    return transactions_pb2.BatchMovementsResponse(
        atomic=atomic,
        completed=counts[BATCH_COMPLETED],
        failed=counts[BATCH_FAILED],
        rejected=counts[BATCH_REJECTED],
        items=items,
    )


BATCH_COMPLETED: Final = "completed"
BATCH_FAILED: Final = "failed"
BATCH_REJECTED: Final = "rejected"


def _batch_item_message(
    index: int, result: MovementResult | BankingError
) -> transactions_pb2.BatchItemResult:
    if isinstance(result, MovementResult):
        return transactions_pb2.BatchItemResult(
            index=index,
            status=BATCH_COMPLETED,
            replayed=result.replayed,
            transaction=movement_message(result.transaction),
        )
    error = transactions_pb2.BatchItemError(
        code=result.code,
        message=result.message,
        transaction_id=str(result.transaction_id) if result.transaction_id else "",
        field=(result.field or "") if isinstance(result, ValidationFailed) else "",
    )
    return transactions_pb2.BatchItemResult(
        index=index,
        status=BATCH_FAILED if isinstance(result, Declined) else BATCH_REJECTED,
        replayed=result.replayed,
        error=error,
    )


def account_message(account: Account) -> accounts_pb2.Account:
    return _message(accounts_pb2.Account, account)


def account_page_message(page: AccountPage) -> accounts_pb2.ListAccountsResponse:
    return accounts_pb2.ListAccountsResponse(
        accounts=[account_message(account) for account in page.accounts],
        next_cursor=page.next_cursor or "",
    )


def balance_message(balance: Balance) -> accounts_pb2.Balance:
    return _message(accounts_pb2.Balance, balance)


def statement_message(statement: Statement) -> accounts_pb2.Statement:
    """REST's JSON statement, field for field (``from``/``to`` are ``period_from``/``_to``)."""
    return accounts_pb2.Statement(
        account_id=str(statement.account.account_id),
        currency=statement.account.currency,
        period_from=statement.period_from.isoformat(),
        period_to=statement.period_to.isoformat(),
        opening_balance=format_amount(statement.opening_balance),
        closing_balance=format_amount(statement.closing_balance),
        credits_total=format_amount(statement.credits_total),
        debits_total=format_amount(statement.debits_total),
        count=statement.count,
        transactions=[
            accounts_pb2.StatementLine(
                transaction=transaction_message(line.leg),
                running_balance=format_amount(line.running_balance),
            )
            for line in statement.lines
        ],
    )


def _message(
    message_type: type[_Message],
    record: object,
    renamed: Mapping[str, str] | None = None,
    *,
    skipped: frozenset[str] = frozenset(),
) -> _Message:
    values: dict[str, Any] = {}
    for name in message_type.DESCRIPTOR.fields_by_name:
        if name in skipped:
            continue
        value = getattr(record, renamed.get(name, name) if renamed else name)
        if value is not None:
            convert = _WIRE.get(type(value))
            values[name] = convert(value) if convert else _wire(value)
    return message_type(**values)


_WIRE: Final[Mapping[type, Callable[[Any], object]]] = {
    str: str,
    bool: bool,
    int: int,
    UUID: str,
    Decimal: format_amount,
    datetime: datetime.isoformat,
    dict: dict,  # a string map (metadata): a proto map field
}


def _wire(value: object) -> object:
    """The slow path, for subclasses (asyncpg's UUID, enums)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return dict(value)
    for kind, convert in _WIRE.items():
        if isinstance(value, kind):
            return convert(value)
    raise TypeError(f"no gRPC form for {type(value).__name__}")


# --- back: a message into a client record ---------------------------------------------------


def from_message(record_type: type[_Record], message: Message, **given: object) -> _Record:
    """A dataclass from a message: each field from the message field of the same name, read by
    the field's type (an empty ``UUID | None`` is None); ``given`` fills the fields a message
    has not (such as ``replayed``, from trailing metadata)."""
    values: dict[str, object] = dict(given)
    readers = _READERS_OF.get(record_type) or _READERS_OF.setdefault(
        record_type, _readers(record_type)
    )
    for name, read in readers:
        if name not in values:
            values[name] = read(getattr(message, name))
    return record_type(**values)


_READERS: Final[Mapping[object, Callable[[Any], object]]] = {
    UUID: UUID,
    UUID | None: lambda text: UUID(text) if text else None,
    Decimal: Decimal,
    datetime: datetime.fromisoformat,
    datetime | None: lambda text: datetime.fromisoformat(text) if text else None,
    dict[str, str]: dict,  # a proto map field
}


_Readers = tuple[tuple[str, Callable[[Any], object]], ...]
_READERS_OF: Final[dict[type[Any], _Readers]] = {}  # each client record's readers, by its type


def _readers(record_type: type[Any]) -> _Readers:
    hints = get_type_hints(record_type)
    readers = []
    for field in fields(record_type):
        kind = hints[field.name]
        if kind not in _READERS and kind not in _AS_IS:
            raise TypeError(f"no reader for {record_type.__name__}.{field.name}: {kind}")
        readers.append((field.name, _READERS.get(kind, _as_is)))
    return tuple(readers)


_AS_IS: Final = (str, int, bool)


def _as_is(value: object) -> object:
    return value
