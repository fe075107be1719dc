"""The ledger's records: plain immutable values, independent of any door, table or format.

Every door and every format converts from these through one mapping each (see
``docs/architecture.md``); a test fails when a field is missing from a format.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any
from uuid import UUID

from banking.domain.errors import InvariantViolated
from banking.domain.roles import Actor, Role


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
    # The caller's own labels (a bounded string map, validated by ``ledger.checks``). Left out
    # of the hash (a dict has none); equality still compares it.
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class Balance:
    account_id: UUID
    currency: str
    current_balance: Decimal
    available_balance: Decimal
    version: int
    last_updated: datetime
    # How far below zero the balances may go (an account product, set by staff; 0: none).
    overdraft_limit: Decimal = Decimal("0.00")


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
    # Why a pending leg waits for a reviewer (its command was held by the fraud detector).
    hold_reason: str | None = None
    # The caller's own labels (a bounded string map; both legs of a transfer carry it). Left out
    # of the hash (a dict has none); equality still compares it.
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)
    # The initiating leg this leg reverses (a reversal's legs); None otherwise.
    reverses_transaction_id: UUID | None = None
    # The hold this leg captures (a capture's legs); None otherwise.
    hold_id: UUID | None = None


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
    # The caller's own labels (a bounded string map, validated by ``ledger.metadata``).
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class TransferRequest:
    source_account_id: UUID
    destination_account_id: UUID
    amount: Decimal
    currency: str
    description: str | None = None
    reference_id: str | None = None
    # The caller's own labels, carried by both legs (validated by ``ledger.metadata``).
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class ReversalRequest:
    """Reverse all or part of a completed movement, named by any of its legs
    (``banking.ledger.reversals``)."""

    transaction_id: UUID
    reason: str
    amount: Decimal | None = None  # None: what is left to reverse
    reference_id: str | None = None


@dataclass(frozen=True, slots=True)
class Reversals:
    """What has been reversed of a movement: the total (never more than its amount) and the
    completed reversal legs on the account of the leg it is shown with, oldest first."""

    reversed_amount: Decimal
    reversal_ids: tuple[UUID, ...]


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One movement of a batch: a debit or credit (``DebitOrCredit``) or a transfer."""

    kind: TransactionType
    request: DebitOrCredit | TransferRequest


def request_of(leg: Transaction) -> DebitOrCredit | TransferRequest:
    """The request an initiating leg stands for (what its command carries)."""
    if leg.transaction_type is TransactionType.TRANSFER_OUT:
        if leg.counterparty_account_id is None:
            raise InvariantViolated("a transfer leg has its destination account")
        return TransferRequest(
            leg.account_id,
            leg.counterparty_account_id,
            leg.amount,
            leg.currency,
            leg.description,
            leg.reference_id,
            leg.metadata,
        )
    return DebitOrCredit(
        leg.account_id, leg.amount, leg.currency, leg.description, leg.reference_id, leg.metadata
    )


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


@dataclass(frozen=True, slots=True)
class BalanceAfter:
    """An account's available balance and its version right after a balance update, and its
    current balance (which differs from available while a hold is open; None where a caller
    did not read it)."""

    available_balance: Decimal
    version: int
    current_balance: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Owner:
    """A user as the ledger needs to know them: who may own an account, and who a command
    acts for (read from the users table when it is applied, never from the message)."""

    user_id: UUID
    role: Role
    is_active: bool
    username: str

    def as_actor(self) -> Actor:
        return Actor(self.user_id, self.username, self.role)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One row of ``transaction_logs``: a state change of a leg, who made it and why."""

    log_id: UUID
    transaction_id: UUID
    event_type: str
    metadata: dict[str, Any]
    created_at: datetime
    created_by: str


# --- what a movement publishes (written to the outbox in the movement's transaction) ---------


@dataclass(frozen=True, slots=True)
class LegsRecorded:
    """Legs that were stored completed or failed: one transaction event per leg, and a
    balance event per completed leg."""

    legs: tuple[Transaction, ...]
    trace_id: str | None
    # The balances after the legs, where the legs alone cannot tell them (a hold's capture:
    # current and available differ); a leg's balance event is then its account's of these.
    balances: tuple[Balance, ...] = ()


@dataclass(frozen=True, slots=True)
class CommandSubmitted:
    """An asynchronous movement was accepted: its command goes to the processor."""

    leg: Transaction
    actor: Actor
    trace_id: str | None


@dataclass(frozen=True, slots=True)
class CommandRejected:
    """A command with no pending leg that can never succeed."""

    command: Command
    code: str
    message: str


class ReviewDecision(StrEnum):
    """A reviewer's decision on a held command (the fraud model's label)."""

    RELEASED = "released"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class FraudScore:
    """A leg's fraud score as stored: the score in [0, 1] (four places), its reasons (most
    important first), the feature values and model version behind it, the decision the
    thresholds gave (allow, alert, hold), and the reviewer's decision on a held command."""

    transaction_id: UUID
    account_id: UUID
    event_id: UUID | None
    score: Decimal
    reasons: tuple[str, ...]
    features: dict[str, float]
    model_version: str
    decision: str
    scored_at: datetime
    review_decision: ReviewDecision | None = None
    reviewed_by: UUID | None = None
    reviewed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CommandHeld:
    """An asynchronous command the fraud detector held: its leg stays pending until a
    reviewer releases or rejects it (published on ``banking.transactions.held``)."""

    leg: Transaction
    score: Decimal
    reasons: tuple[str, ...]
    model_version: str
    trace_id: str | None


@dataclass(frozen=True, slots=True)
class FraudAlert:
    """A movement whose fraud score reached the alert threshold (``banking.fraud.alerts``)."""

    alert_id: UUID
    leg: Transaction
    score: Decimal
    reasons: tuple[str, ...]
    model_version: str
    decision: str
    created_at: datetime
    trace_id: str | None


@dataclass(frozen=True, slots=True)
class Notification:
    """A message for one user about an event (``banking.notifications``, keyed by user): what
    e-mail, SMS or push channels consume, and what webhooks deliver."""

    notification_id: UUID
    user_id: UUID
    source_event_id: UUID
    source_event_type: str
    account_id: UUID | None
    transaction_id: UUID | None
    amount: Decimal | None
    currency: str | None
    message: str
    created_at: datetime


class StaffActionType(StrEnum):
    """Staff actions that move no money, audited on ``banking.audit.actions`` (their event
    type is ``staff.<value>``)."""

    USER_CREATED = "user_created"
    ACCOUNT_FROZEN = "account_frozen"
    ACCOUNT_UNFROZEN = "account_unfrozen"
    OVERDRAFT_LIMIT_SET = "overdraft_limit_set"
    HOLD_RELEASED = "hold_released"
    HOLD_REJECTED = "hold_rejected"
    WEBHOOK_CREATED = "webhook_created"
    WEBHOOK_DELETED = "webhook_deleted"
    KEY_ROTATED = "key_rotated"


@dataclass(frozen=True, slots=True)
class StaffAction:
    """One staff action, written to the outbox in the transaction that did it. ``actor`` is
    None for the operator's command line or the service itself (a key rotation at start-up).
    ``details`` never holds a secret (no password, no webhook secret, no key material)."""

    action_id: UUID
    action: StaffActionType
    actor: Actor | None
    created_at: datetime
    trace_id: str | None = None
    account_id: UUID | None = None
    user_id: UUID | None = None
    transaction_id: UUID | None = None
    webhook_id: UUID | None = None
    details: dict[str, Any] | None = None


# --- holds (authorize, then capture or void; ``banking.ledger.holds``) ------------------------


class HoldStatus(StrEnum):
    OPEN = "open"
    CAPTURED = "captured"
    VOIDED = "voided"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Hold:
    """An authorization: ``amount`` taken from the account's available balance until it is
    captured (in one or several parts, up to ``amount``), voided, or expires. While it is
    open, ``amount - captured_amount`` is still held."""

    hold_id: UUID
    account_id: UUID
    # Where a capture sends the money (a two-phase transfer); None: a capture is a debit.
    destination_account_id: UUID | None
    amount: Decimal
    captured_amount: Decimal
    currency: str
    description: str | None
    # The idempotency key of the authorization, unique per account.
    reference_id: str
    status: HoldStatus
    expires_at: datetime
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    created_by: UUID | None

    @property
    def held_amount(self) -> Decimal:
        """What the hold still takes from available: its remainder while open, else 0."""
        if self.status is not HoldStatus.OPEN:
            return Decimal("0.00")
        return self.amount - self.captured_amount


@dataclass(frozen=True, slots=True)
class HoldRequest:
    account_id: UUID
    amount: Decimal
    currency: str
    description: str | None = None
    reference_id: str | None = None
    # None: the longest a hold may last (HOLD_DURATION_MAX_HOURS).
    expires_at: datetime | None = None
    destination_account_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class CaptureRequest:
    # None: what is left of the hold.
    amount: Decimal | None = None
    # Close the hold after this capture, releasing what is left.
    final: bool = False
    reference_id: str | None = None


@dataclass(frozen=True, slots=True)
class HoldResult:
    """A hold after a change (or as a replay found it), and a capture's initiating leg."""

    hold: Hold
    replayed: bool
    capture: Transaction | None = None


@dataclass(frozen=True, slots=True)
class HoldPage:
    holds: list[Hold]
    next_cursor: str | None


class HoldChange(StrEnum):
    """What happened to a hold (its event type is ``hold.<value>``)."""

    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    VOIDED = "voided"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class HoldChanged:
    """A hold's state change (on ``banking.holds``), and the balances it changed (their
    balance events; a capture's are its legs')."""

    hold: Hold
    change: HoldChange
    balances: tuple[Balance, ...]
    trace_id: str | None


LedgerEvent = (
    LegsRecorded
    | CommandSubmitted
    | CommandRejected
    | CommandHeld
    | FraudAlert
    | StaffAction
    | HoldChanged
)


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """What applying a command did. ``leg`` is the finished (or already finished) leg, None
    when the command was rejected and had no leg; ``rejected_code`` is set when it was
    refused as a whole; ``already_done`` when its leg had been finished before (a redelivery)."""

    command: Command
    leg: Transaction | None
    rejected_code: str | None = None
    already_done: bool = False
    # Held for review by the fraud detector instead of applied (``ledger.review``).
    held: bool = False


# --- reconciliation -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountMismatch:
    """An account whose balance row disagrees with the signed sum of its completed legs."""

    account_id: UUID
    current_balance: Decimal
    available_balance: Decimal
    legs_total: Decimal | None
    overdraft_limit: Decimal
    # What the account's open holds take from its available balance.
    open_holds: Decimal = Decimal("0.00")
