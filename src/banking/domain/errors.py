"""Domain errors. Each carries a stable ``code``; every door maps codes to its protocol once.

Expected failures are named after what went wrong. Programmer errors and broken invariants
raise ``InvariantViolated`` explicitly (never a bare ``assert``, which ``python -O`` drops).
"""

from __future__ import annotations

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
