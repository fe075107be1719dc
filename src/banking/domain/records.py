"""The ledger's records: plain immutable values, independent of any door, table or format.

Every door and every format converts from these through one mapping each (see
``docs/architecture.md``); a test fails when a field is missing from a format.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from uuid import UUID

from banking.domain.roles import Actor


class TransactionType(StrEnum):
    DEBIT = "debit"
    CREDIT = "credit"
    TRANSFER_OUT = "transfer_out"
    TRANSFER_IN = "transfer_in"


class TransactionStatus(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Account:
    account_id: UUID
    account_number: str
    customer_id: UUID
    account_type: str
    currency: str
    is_active: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Balance:
    account_id: UUID
    currency: str
    current_balance: Decimal
    available_balance: Decimal
    version: int
    last_updated: datetime


@dataclass(frozen=True, slots=True)
class Transaction:
    """One leg: a debit, a credit, or one side of a transfer."""

    transaction_id: UUID
    account_id: UUID
    transaction_type: TransactionType
    amount: Decimal
    currency: str
    description: str | None
    reference_id: str
    status: TransactionStatus
    created_at: datetime
    related_transaction_id: UUID | None
    counterparty_account_id: UUID | None
    failure_code: str | None
    failure_reason: str | None
    available_balance_after: Decimal | None
    balance_version_after: int | None


@dataclass(frozen=True, slots=True)
class MovementResult:
    """The initiating leg of a debit, credit or transfer, and whether it is a replay."""

    transaction: Transaction
    replayed: bool


@dataclass(frozen=True, slots=True)
class DebitOrCredit:
    account_id: UUID
    amount: Decimal
    currency: str
    description: str | None = None
    reference_id: str | None = None


@dataclass(frozen=True, slots=True)
class TransferRequest:
    source_account_id: UUID
    destination_account_id: UUID
    amount: Decimal
    currency: str
    description: str | None = None
    reference_id: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    created_from: datetime | None = None
    created_to: datetime | None = None
    transaction_type: TransactionType | None = None
    status: TransactionStatus | None = None


@dataclass(frozen=True, slots=True)
class HistoryPage:
    transactions: list[Transaction]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Command:
    """A debit, credit or transfer to apply asynchronously (from ``transactions.submitted``)."""

    transaction_id: UUID
    kind: TransactionType
    request: DebitOrCredit | TransferRequest
    actor: Actor
    trace_id: str | None = None
