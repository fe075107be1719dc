"""Request and response bodies. Field names follow the sketch; amounts are decimal strings."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from banking.domain.errors import InvariantViolated, ValidationFailed
from banking.domain.money import format_amount, parse_amount
from banking.domain.records import Account, Balance, Transaction
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
MoneyText = Annotated[str, Field(examples=["900.00"], pattern=r"^[0-9]+\.[0-9]{2}$")]


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


class AccountRead(BaseModel):
    account_id: UUID
    account_number: str
    customer_id: UUID
    account_type: str
    currency: str
    is_active: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, account: Account) -> AccountRead:
        return cls(
            account_id=account.account_id,
            account_number=account.account_number,
            customer_id=account.customer_id,
            account_type=account.account_type,
            currency=account.currency,
            is_active=account.is_active,
            created_at=account.created_at,
            updated_at=account.updated_at,
        )


class AccountList(BaseModel):
    accounts: list[AccountRead]


class BalanceRead(BaseModel):
    account_id: UUID
    currency: str
    current_balance: MoneyText
    available_balance: MoneyText
    version: int
    last_updated: datetime

    @classmethod
    def of(cls, balance: Balance) -> BalanceRead:
        return cls(
            account_id=balance.account_id,
            currency=balance.currency,
            current_balance=format_amount(balance.current_balance),
            available_balance=format_amount(balance.available_balance),
            version=balance.version,
            last_updated=balance.last_updated,
        )


class AccountCreated(AccountRead):
    balance: BalanceRead


class TransactionRead(BaseModel):
    transaction_id: UUID
    account_id: UUID
    transaction_type: str
    amount: MoneyText
    currency: str
    description: str | None
    reference_id: str
    status: str
    created_at: datetime
    related_transaction_id: UUID | None
    counterparty_account_id: UUID | None
    failure_code: str | None
    failure_reason: str | None

    @classmethod
    def fields_of(cls, leg: Transaction) -> dict[str, Any]:
        return {
            "transaction_id": leg.transaction_id,
            "account_id": leg.account_id,
            "transaction_type": leg.transaction_type.value,
            "amount": format_amount(leg.amount),
            "currency": leg.currency,
            "description": leg.description,
            "reference_id": leg.reference_id,
            "status": leg.status.value,
            "created_at": leg.created_at,
            "related_transaction_id": leg.related_transaction_id,
            "counterparty_account_id": leg.counterparty_account_id,
            "failure_code": leg.failure_code,
            "failure_reason": leg.failure_reason,
        }

    @classmethod
    def of(cls, leg: Transaction) -> TransactionRead:
        return cls(**cls.fields_of(leg))


class MovementRead(TransactionRead):
    """A completed movement: its initiating leg and the account's resulting balance."""

    available_balance: MoneyText
    balance_version: int

    @classmethod
    def of_movement(cls, leg: Transaction) -> MovementRead:
        if leg.available_balance_after is None or leg.balance_version_after is None:
            raise InvariantViolated("a completed movement has a resulting balance")
        return cls(
            **cls.fields_of(leg),
            available_balance=format_amount(leg.available_balance_after),
            balance_version=leg.balance_version_after,
        )


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
