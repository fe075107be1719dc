"""Request and response bodies. Field names follow the sketch; amounts are decimal strings.

A response body of a domain record is built in one place, ``_RecordBody.of``: each of its
fields is the record's field of the same name (``RENAMED`` lists the exceptions), converted by
the field's type (``MoneyText`` formats a ``Decimal`` with two decimal places).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Self
from uuid import UUID

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from banking.domain.errors import InvariantViolated, ValidationFailed
from banking.domain.money import format_amount, parse_amount
from banking.domain.records import (
    Account,
    Balance,
    Transaction,
    TransactionStatus,
    TransactionType,
)
from banking.domain.roles import Role


def _amount(value: Any) -> Decimal:
    try:
        return parse_amount(value)
    except ValidationFailed as error:
        raise ValueError(error.message) from error


Amount = Annotated[
    Decimal,
    BeforeValidator(_amount),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^[0-9]+(\.[0-9]+)?$",
            "examples": ["100.00"],
            "description": "Decimal amount, as a string or a JSON number (parsed exactly).",
        }
    ),
]


def _money_text(value: Any) -> Any:
    return format_amount(value) if isinstance(value, Decimal) else value


MoneyText = Annotated[
    str, BeforeValidator(_money_text), Field(examples=["900.00"], pattern=r"^[0-9]+\.[0-9]{2}$")
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class DebitCreditBody(_Request):
    account_id: UUID
    amount: Amount
    currency: str = Field(min_length=3, max_length=3, examples=["USD"])
    description: str | None = Field(default=None, max_length=500)
    reference_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="Idempotency key: a retry with the same key never moves money twice.",
    )


class TransferBody(_Request):
    source_account_id: UUID
    destination_account_id: UUID
    amount: Amount
    currency: str = Field(min_length=3, max_length=3, examples=["USD"])
    description: str | None = Field(default=None, max_length=500)
    reference_id: str | None = Field(default=None, min_length=1, max_length=255)


class AccountCreateBody(_Request):
    account_type: str = Field(default="checking", examples=["checking"])
    currency: str = Field(min_length=3, max_length=3, examples=["USD"])
    customer_id: UUID | None = Field(
        default=None, description="Required for tellers and admins; customers open their own."
    )


class AccountPatchBody(_Request):
    is_active: bool


class UserCreateBody(_Request):
    username: str = Field(min_length=3, max_length=64)
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=12, max_length=256)
    role: Role = Role.CUSTOMER


class TokenRead(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int


class UserRead(BaseModel):
    user_id: UUID
    username: str
    email: str
    role: Role
    is_active: bool
    created_at: datetime
    last_login: datetime | None


class _RecordBody(BaseModel):
    """The body of one domain record (``banking.domain.records``)."""

    # Body field -> record field, where the names differ.
    RENAMED: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def of(cls, record: Account | Balance | Transaction) -> Self:
        """The only mapping of a record to its body: every field, by name."""
        renamed = cls.RENAMED
        return cls.model_validate(
            {name: getattr(record, renamed.get(name, name)) for name in cls.model_fields}
        )


class AccountRead(_RecordBody):
    account_id: UUID
    account_number: str
    customer_id: UUID
    account_type: str
    currency: str
    is_active: bool
    created_at: datetime
    updated_at: datetime


class AccountList(BaseModel):
    accounts: list[AccountRead]


class BalanceRead(_RecordBody):
    account_id: UUID
    currency: str
    current_balance: MoneyText
    available_balance: MoneyText
    version: int
    last_updated: datetime


class AccountCreated(AccountRead):
    balance: BalanceRead


# One leg, as stored; the balance after it is only in a movement's answer (a docstring would
# become the schema's description in the OpenAPI document).
class TransactionRead(_RecordBody):
    transaction_id: UUID
    account_id: UUID
    transaction_type: TransactionType
    amount: MoneyText
    currency: str
    description: str | None
    reference_id: str
    status: TransactionStatus
    created_at: datetime
    related_transaction_id: UUID | None
    counterparty_account_id: UUID | None
    failure_code: str | None
    failure_reason: str | None


class MovementRead(TransactionRead):
    """A completed movement: its initiating leg and the account's resulting balance."""

    RENAMED: ClassVar[Mapping[str, str]] = {
        "available_balance": "available_balance_after",
        "balance_version": "balance_version_after",
    }

    available_balance: MoneyText
    balance_version: int

    @classmethod
    def of_movement(cls, leg: Transaction) -> MovementRead:
        if leg.available_balance_after is None or leg.balance_version_after is None:
            raise InvariantViolated("a completed movement has a resulting balance")
        return cls.of(leg)


class TransactionPage(BaseModel):
    transactions: list[TransactionRead]
    next_cursor: str | None


class ErrorBody(BaseModel):
    code: str
    message: str
    transaction_id: UUID | None = None
    trace_id: str
    request_id: str
    timestamp: datetime
    details: list[dict[str, Any]] | None = None


class ErrorEnvelope(BaseModel):
    error: ErrorBody
