"""Domain errors. Each carries a stable ``code``; every door maps codes to its protocol once.

Expected failures are named after what went wrong. Programmer errors and broken invariants
raise ``InvariantViolated`` explicitly (never a bare ``assert``, which ``python -O`` drops).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar
from uuid import UUID


class BankingError(Exception):
    """Base of every error a caller of the core can receive."""

    code: ClassVar[str] = "INTERNAL_ERROR"

    def __init__(self, message: str, *, transaction_id: UUID | None = None, **details: Any):
        super().__init__(message)
        self.message = message
        self.transaction_id = transaction_id
        self.details = details
        # True when this outcome is the stored answer to an earlier request with the same key.
        self.replayed = False


class ValidationFailed(BankingError):
    code = "VALIDATION_ERROR"

    def __init__(self, message: str, *, field: str | None = None, **details: Any):
        super().__init__(message, **details)
        self.field = field


class PayloadTooLarge(BankingError):
    code = "PAYLOAD_TOO_LARGE"


class InsufficientFunds(BankingError):
    code = "INSUFFICIENT_FUNDS"


class CurrencyMismatch(BankingError):
    code = "CURRENCY_MISMATCH"


class AccountNotFound(BankingError):
    code = "ACCOUNT_NOT_FOUND"


class TransactionNotFound(BankingError):
    code = "TRANSACTION_NOT_FOUND"


class UserNotFound(BankingError):
    code = "USER_NOT_FOUND"


class AccountInactive(BankingError):
    code = "ACCOUNT_INACTIVE"


class IdempotencyConflict(BankingError):
    code = "IDEMPOTENCY_CONFLICT"


class UserAlreadyExists(BankingError):
    code = "USER_ALREADY_EXISTS"


class Unauthenticated(BankingError):
    code = "UNAUTHENTICATED"


class Forbidden(BankingError):
    code = "FORBIDDEN"


class RateLimited(BankingError):
    code = "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after_seconds: int, **details: Any):
        super().__init__(message, **details)
        self.retry_after_seconds = retry_after_seconds


class AccountBusy(BankingError):
    """The optional per-account lock (``ACCOUNT_LOCKS``) stayed busy past its wait bound;
    nothing was done, so the same request can be retried."""

    code = "ACCOUNT_BUSY"

    def __init__(self, message: str, *, retry_after_seconds: int, **details: Any):
        super().__init__(message, **details)
        self.retry_after_seconds = retry_after_seconds


class ServiceUnavailable(BankingError):
    code = "SERVICE_UNAVAILABLE"


class InvariantViolated(BankingError):
    """A rule that must always hold did not: a bug or corrupted data, never user input."""

    code = "INTERNAL_ERROR"


class Declined(BankingError):
    """Marker mixin for business declines that are recorded as ``failed`` legs."""


class InsufficientFundsDeclined(InsufficientFunds, Declined):
    pass


class AccountInactiveDeclined(AccountInactive, Declined):
    pass


class FraudRejected(BankingError):
    code = "FRAUD_REJECTED"


class FraudRejectedDeclined(FraudRejected, Declined):
    """A held command a reviewer rejected: its leg failed, no money moved."""


class TransactionNotHeld(BankingError):
    """Release or reject of a movement that is not waiting for review."""

    code = "TRANSACTION_NOT_HELD"


class TransactionNotReversible(BankingError):
    """A reversal of a movement that cannot be reversed: not completed (pending or failed), or
    a reversal itself (``ledger.reversals``)."""

    code = "TRANSACTION_NOT_REVERSIBLE"


class HoldNotFound(BankingError):
    """No such hold, or one the caller may not see (another customer's)."""

    code = "HOLD_NOT_FOUND"


class HoldNotOpen(BankingError):
    """A capture or void of a hold that is captured, voided or expired."""

    code = "HOLD_NOT_OPEN"


class HoldAmountExceeded(BankingError):
    """A capture of more than what is left of its hold."""

    code = "HOLD_AMOUNT_EXCEEDED"


class ReferenceAlreadyUsed(BankingError):
    """Raised by the unit of work when a leg's idempotency key ``(account_id, reference_id)``
    is taken: a retry or a concurrent duplicate committed first. The ledger answers it by
    replaying the stored outcome (or ``IDEMPOTENCY_CONFLICT``); it never reaches a door."""

    code = "IDEMPOTENCY_CONFLICT"


class BatchItemFailed(BankingError):
    """An atomic batch was not applied: item ``index`` failed with ``error`` (a decline, which
    was not stored either, or a refusal), so no item was."""

    code = "BATCH_ITEM_FAILED"

    def __init__(self, index: int, error: BankingError) -> None:
        super().__init__(f"item {index}: {error.message}", index=index)
        self.index = index
        self.error = error


class DeclineReason(StrEnum):
    """Why a movement was declined and stored as a ``failed`` leg (its ``failure_code``)."""

    INSUFFICIENT_FUNDS = InsufficientFunds.code
    ACCOUNT_INACTIVE = AccountInactive.code
    FRAUD_REJECTED = FraudRejected.code


_DECLINE_ERRORS: dict[DeclineReason, type[BankingError]] = {
    DeclineReason.INSUFFICIENT_FUNDS: InsufficientFundsDeclined,
    DeclineReason.ACCOUNT_INACTIVE: AccountInactiveDeclined,
    DeclineReason.FRAUD_REJECTED: FraudRejectedDeclined,
}
# A failed leg of an asynchronous command can also hold the code of the error that rejected it
# (a retry of that command's key with a synchronous request replays it as the same error).
_REJECTION_ERRORS: dict[str, type[BankingError]] = {
    error.code: error
    for error in (
        ValidationFailed,
        CurrencyMismatch,
        AccountNotFound,
        Forbidden,
        IdempotencyConflict,
    )
}


def error_for_failure(
    code: str | None, message: str | None, *, transaction_id: UUID
) -> BankingError:
    """The error a failed leg answers with. An unknown code fails loudly instead of being
    guessed (a new decline reason must be added to ``DeclineReason``)."""
    error_class: type[BankingError] | None
    try:
        error_class = _DECLINE_ERRORS[DeclineReason(code or "")]
    except ValueError:
        error_class = _REJECTION_ERRORS.get(code or "")
    if error_class is None:
        raise InvariantViolated(f"failed leg {transaction_id} has an unknown failure code {code!r}")
    return error_class(
        message or error_class.code.lower().replace("_", " "), transaction_id=transaction_id
    )
