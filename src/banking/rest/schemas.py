"""Request and response bodies. Field names follow the sketch; amounts are decimal strings.

A response body of a domain record is built in one place, ``_RecordBody.of``: each of its
fields is the record's field of the same name (``RENAMED`` lists the exceptions), converted by
the field's type (``MoneyText`` formats a ``Decimal`` with two decimal places).

The JSON Schema of each field says exactly what the server accepts, so that the OpenAPI
document can be checked against the server (tests/rest/test_schemathesis.py): rules enforced
by the core (currencies, account types, printable text, e-mail addresses) are documented here
with ``json_schema_extra`` and still decided, with their own messages, by the core.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal, Self
from uuid import UUID

from fastapi import Header, Query
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    WithJsonSchema,
    field_validator,
)

from banking.auth.passwords import PASSWORD_LENGTH_MAX, PASSWORD_LENGTH_MIN
from banking.domain.errors import BankingError, Declined, InvariantViolated, ValidationFailed
from banking.domain.money import (
    AMOUNT_LIMIT_EXCLUSIVE,
    CURRENCY_MINOR_DIGITS,
    format_amount,
    normalize_currency,
    parse_amount,
    parse_non_negative,
)
from banking.domain.records import (
    Account,
    Balance,
    FraudScore,
    Hold,
    HoldResult,
    HoldStatus,
    MovementResult,
    Reversals,
    Transaction,
    TransactionStatus,
    TransactionType,
)
from banking.domain.roles import Role
from banking.ledger.accounts import ACCOUNT_TYPES
from banking.ledger.checks import DESCRIPTION_LENGTH_MAX, REFERENCE_ID_LENGTH_MAX
from banking.ledger.metadata import (
    METADATA_KEY_LENGTH_MAX,
    METADATA_KEY_PATTERN,
    METADATA_KEYS_MAX,
    METADATA_VALUE_LENGTH_MAX,
    check_metadata,
)
from banking.ledger.movements import BATCH_ITEMS_MAX, BATCH_KEY_LENGTH_MAX
from banking.rest.errors import ErrorCode

# --- examples (one set of ids, so that the examples of the document tell one story) ------

EXAMPLE_ACCOUNT_ID = "3f2b8c1e-7d4a-4e55-9a0b-6c1d2e3f4a5b"
EXAMPLE_OTHER_ACCOUNT_ID = "0b7e6a52-1c3d-4f8e-9a6b-5d4c3b2a1f0e"
EXAMPLE_CUSTOMER_ID = "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"
EXAMPLE_TRANSACTION_ID = "6fa459ea-ee8a-4ca4-894e-db77e160355e"
EXAMPLE_RELATED_TRANSACTION_ID = "1c6b1f0e-8d2a-4b9e-a7c3-2f5e8d9b0a1c"
EXAMPLE_ACCOUNT_NUMBER = "400123456784"
EXAMPLE_TIME = "2026-01-31T12:00:00Z"
EXAMPLE_CURSOR = (
    "MjAyNi0wMS0zMVQxMjowMDowMCswMDowMHw2ZmE0NTllYS1lZThhLTRjYTQtODk0ZS1kYjc3ZTE2MDM1NWU"
)

# --- the rules of the core, as JSON Schema ----------------------------------------------


# The core's rule for descriptions and references (``str.isprintable``), as a named format:
# as a pattern it takes some 700 ranges of code points, which no reader wants and which makes
# generators (schemathesis) ten times slower.
PRINTABLE_FORMAT = "printable"
PRINTABLE_DESCRIPTION = (
    "Printable text (format `printable`): no control, format, private-use, unassigned or "
    "separator characters other than the space."
)


def printable(description: str, length_max: int) -> dict[str, Any]:
    """The JSON Schema of printable text up to ``length_max`` characters."""
    return {
        "maxLength": length_max,
        "format": PRINTABLE_FORMAT,
        "description": f"{description} {PRINTABLE_DESCRIPTION}".strip(),
    }


# The Idempotency-Key header of POST /accounts and POST /users (banking.ledger.creation_keys).
CreationIdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Makes the creation safe to retry: a retry with the same key and the same "
        "parameters answers the resource the first request created (same status, "
        "`Idempotent-Replayed: true`) and creates nothing; the same key with other parameters "
        "answers 409 `IDEMPOTENCY_CONFLICT` naming them. Scoped to the caller and the "
        "operation; remembered for `IDEMPOTENCY_KEY_RETENTION_HOURS` (24 by default).",
        json_schema_extra={"minLength": 1, **printable("", BATCH_KEY_LENGTH_MAX)},
        examples=["open-savings-2026-01-31"],
    ),
]

CURRENCY_CODES = sorted(CURRENCY_MINOR_DIGITS)
_CURRENCY_SCHEMA: dict[str, Any] = {
    "type": "string",
    "enum": CURRENCY_CODES,
    "description": "ISO 4217 code of a currency the ledger holds (0 or 2 minor digits); "
    "requests may give it in lower case.",
    "examples": ["USD"],
}
Currency = Annotated[str, WithJsonSchema(_CURRENCY_SCHEMA)]
_ACCOUNT_TYPE_SCHEMA: dict[str, Any] = {
    "type": "string",
    "enum": sorted(ACCOUNT_TYPES),
    "examples": ["checking"],
}
AccountType = Annotated[str, WithJsonSchema(_ACCOUNT_TYPE_SCHEMA)]

# Above zero, below 10^16, at most two significant decimal places (none for JPY, ISK, KRW and
# VND: the core checks the currency's digits); trailing zeros are fine ("15.000" is 15).
AMOUNT_TEXT_PATTERN = r"^(?!0*(\.0*)?$)[0-9]{1,16}(\.[0-9]{1,2}0{0,18})?$"


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
            "anyOf": [
                {"type": "string", "pattern": AMOUNT_TEXT_PATTERN},
                {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "exclusiveMaximum": int(AMOUNT_LIMIT_EXCLUSIVE),
                    "multipleOf": 0.01,
                },
            ],
            "examples": ["100.00"],
            "description": "Decimal amount above zero, as a string or a JSON number (read from "
            "its text, never through a float), with at most the currency's minor digits.",
        }
    ),
]


def _money_text(value: Any) -> Any:
    return format_amount(value) if isinstance(value, Decimal) else value


MoneyText = Annotated[
    str,
    BeforeValidator(_money_text),
    Field(
        examples=["900.00"],
        pattern=r"^[0-9]+\.[0-9]{2}$",
        description="Exact decimal amount with two decimal places.",
    ),
]

# A balance may be below zero, down to its account's overdraft limit.
BalanceText = Annotated[
    str,
    BeforeValidator(_money_text),
    Field(
        examples=["900.00"],
        pattern=r"^-?[0-9]+\.[0-9]{2}$",
        description="Exact decimal balance with two decimal places; below zero only within "
        "the account's overdraft limit.",
    ),
]


def _limit(value: Any) -> Decimal:
    try:
        return parse_non_negative(value, "overdraft_limit")
    except ValidationFailed as error:
        raise ValueError(error.message) from error


_RFC3339 = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)


def _rfc3339(value: Any) -> Any:
    """Only RFC 3339 date-times with a zone: pydantic alone would also read ``0.5`` or
    ``1700000000`` as Unix times and ``2024-01-01`` as a date."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError(
            "must be an RFC 3339 date-time with a time zone, such as 2026-01-31T00:00:00Z"
        )
    return value


DateTimeQuery = Annotated[datetime, BeforeValidator(_rfc3339)]

# The ``cursor`` query parameter of every paged list: the previous page's ``next_cursor``.
CURSOR_QUERY_LENGTH_MAX = 200
CursorQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=CURSOR_QUERY_LENGTH_MAX,
        description="`next_cursor` of the previous page (opaque).",
        json_schema_extra={"pattern": "^[A-Za-z0-9_-]+$"},
        examples=[EXAMPLE_CURSOR],
    ),
]

# --- requests ---------------------------------------------------------------------------


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


_DESCRIPTION = Field(
    default=None,
    max_length=DESCRIPTION_LENGTH_MAX,
    json_schema_extra=printable("Free text for the statement.", DESCRIPTION_LENGTH_MAX),
)
# The core's rules of metadata (banking.ledger.metadata), as JSON Schema; the core decides.
METADATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "maxProperties": METADATA_KEYS_MAX,
    "propertyNames": {"pattern": METADATA_KEY_PATTERN},
    "additionalProperties": {
        "type": "string",
        **printable("", METADATA_VALUE_LENGTH_MAX),
    },
    "description": f"The caller's own labels: at most {METADATA_KEYS_MAX} keys of 1 to "
    f"{METADATA_KEY_LENGTH_MAX} characters `A-Z a-z 0-9 _ . -`, each value a string of at most "
    f"{METADATA_VALUE_LENGTH_MAX} printable characters. Stored with the record, returned "
    "wherever it is, part of the idempotency key's parameters (other metadata under the same "
    "key: 409 IDEMPOTENCY_CONFLICT) and searchable (`GET /api/v1/transactions?metadata[k]=v`).",
    "examples": [{"order_id": "42", "channel": "web"}],
}
_METADATA = Field(default=None, json_schema_extra=METADATA_SCHEMA)
_REFERENCE = Field(
    default=None,
    min_length=1,
    max_length=REFERENCE_ID_LENGTH_MAX,
    json_schema_extra=printable(
        "Idempotency key: a retry with the same key never moves money twice (same key and "
        "other parameters: 409 IDEMPOTENCY_CONFLICT). Generated when absent.",
        REFERENCE_ID_LENGTH_MAX,
    ),
)


class DebitCreditBody(_Request):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "account_id": EXAMPLE_ACCOUNT_ID,
                    "amount": "100.00",
                    "currency": "USD",
                    "description": "ATM withdrawal",
                    "reference_id": "atm-2026-01-31-0001",
                }
            ]
        }
    )

    account_id: UUID
    amount: Amount
    currency: Currency = Field(min_length=3, max_length=3)
    description: str | None = _DESCRIPTION
    reference_id: str | None = _REFERENCE
    metadata: dict[str, str] | None = _METADATA


class TransferBody(_Request):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "source_account_id": EXAMPLE_ACCOUNT_ID,
                    "destination_account_id": EXAMPLE_OTHER_ACCOUNT_ID,
                    "amount": "25.50",
                    "currency": "USD",
                    "description": "Rent share",
                    "reference_id": "rent-2026-02",
                }
            ]
        }
    )

    source_account_id: UUID
    destination_account_id: UUID = Field(description="Another account in the same currency.")
    amount: Amount
    currency: Currency = Field(min_length=3, max_length=3)
    description: str | None = _DESCRIPTION
    reference_id: str | None = _REFERENCE
    metadata: dict[str, str] | None = _METADATA


class ReverseBody(_Request):
    """POST /api/v1/transactions/{transaction_id}/reverse (``banking.ledger.reversals``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"amount": "25.00", "reason": "duplicate charge", "reference_id": "refund-0001"}
            ]
        }
    )

    amount: Amount | None = Field(
        default=None,
        description="How much to reverse, at most what is left of the movement (its amount "
        "less what earlier reversals took); what is left when absent.",
    )
    reason: str = Field(
        min_length=1,
        max_length=DESCRIPTION_LENGTH_MAX,
        json_schema_extra=printable(
            "Why the movement is reversed: the reversal's description.", DESCRIPTION_LENGTH_MAX
        ),
    )
    reference_id: str | None = _REFERENCE


# --- batches (POST /api/v1/transactions/batch) -----------------------------------------


def _currency_code(value: Any) -> Any:
    """A batch item's currency as the core reads it (any case): an unknown code refuses the
    whole batch, as the document says, instead of one item."""
    try:
        normalize_currency(value)
    except ValidationFailed as error:
        raise ValueError(error.message) from error
    return value


_CENT = Decimal("0.01")


def _printable_text(value: str | None) -> str | None:
    if value is not None and not value.isprintable():
        raise ValueError("must be printable text (no control or format characters)")
    return value


class _BatchItemRules(BaseModel):
    """What the document says of a batch item's fields, enforced for the whole batch: a body
    the document calls invalid is refused with 422 (a single request's core checks refuse the
    same with the same code). Rules of the books stay each item's own outcome."""

    @field_validator("currency", check_fields=False)
    @classmethod
    def _known_currency(cls, value: Any) -> Any:
        return _currency_code(value)

    @field_validator("amount", check_fields=False)
    @classmethod
    def _two_decimal_places(cls, value: Decimal) -> Decimal:
        # The document's amount (AMOUNT_TEXT_PATTERN, multipleOf 0.01); a currency with no
        # minor digits is a rule of the books, each item's own outcome.
        if value != value.quantize(_CENT):
            raise ValueError("amount has more than two decimal places")
        return value

    @field_validator("description", "reference_id", check_fields=False)
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        return _printable_text(value)

    @field_validator("metadata", check_fields=False)
    @classmethod
    def _bounded_labels(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        try:
            check_metadata(value)
        except ValidationFailed as error:
            raise ValueError(error.message) from error
        return value


_BATCH_DEBIT_EXAMPLE: dict[str, Any] = {
    "type": "debit",
    "account_id": EXAMPLE_ACCOUNT_ID,
    "amount": "100.00",
    "currency": "USD",
    "description": "ATM withdrawal",
    "reference_id": "atm-2026-01-31-0001",
}
_BATCH_CREDIT_EXAMPLE: dict[str, Any] = {
    "type": "credit",
    "account_id": EXAMPLE_ACCOUNT_ID,
    "amount": "1.00",
    "currency": "USD",
}
_BATCH_TRANSFER_EXAMPLE: dict[str, Any] = {
    "type": "transfer",
    "source_account_id": EXAMPLE_ACCOUNT_ID,
    "destination_account_id": EXAMPLE_OTHER_ACCOUNT_ID,
    "amount": "25.50",
    "currency": "USD",
    "reference_id": "rent-2026-02",
}


class BatchDebit(DebitCreditBody, _BatchItemRules):
    model_config = ConfigDict(json_schema_extra={"examples": [_BATCH_DEBIT_EXAMPLE]})

    type: Literal["debit"]


class BatchCredit(DebitCreditBody, _BatchItemRules):
    model_config = ConfigDict(json_schema_extra={"examples": [_BATCH_CREDIT_EXAMPLE]})

    type: Literal["credit"]


class BatchTransfer(TransferBody, _BatchItemRules):
    model_config = ConfigDict(json_schema_extra={"examples": [_BATCH_TRANSFER_EXAMPLE]})

    type: Literal["transfer"]


BatchItemBody = Annotated[BatchDebit | BatchCredit | BatchTransfer, Field(discriminator="type")]


class BatchBody(_Request):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "atomic": False,
                    "items": [
                        _BATCH_DEBIT_EXAMPLE,
                        _BATCH_CREDIT_EXAMPLE,
                        _BATCH_TRANSFER_EXAMPLE,
                    ],
                }
            ]
        }
    )

    # Strict: 0, 1 or "no" would silently pass as a boolean.
    atomic: StrictBool = Field(
        default=False,
        description="true: every item completes or nothing is stored (the first item that "
        "does not complete is the error, with its index); false: each item its own outcome.",
    )
    items: list[BatchItemBody] = Field(
        min_length=1,
        max_length=BATCH_ITEMS_MAX,
        description="Debits, credits and transfers, decided in this order in one transaction. "
        f"At most `BATCH_ITEMS_MAX` items (default and most {BATCH_ITEMS_MAX}).",
    )


class AccountCreateBody(_Request):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"account_type": "checking", "currency": "USD", "customer_id": EXAMPLE_CUSTOMER_ID}
            ]
        }
    )

    account_type: AccountType = "checking"
    currency: Currency = Field(min_length=3, max_length=3)
    customer_id: UUID | None = Field(
        default=None,
        description="The owner, an active customer: required for tellers and admins; "
        "customers open their own accounts and may only give their own id.",
    )
    metadata: dict[str, str] | None = _METADATA


class OverdraftLimitBody(_Request):
    model_config = ConfigDict(json_schema_extra={"examples": [{"overdraft_limit": "500.00"}]})

    overdraft_limit: Annotated[
        Decimal,
        BeforeValidator(_limit),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string", "pattern": r"^[0-9]{1,16}(\.[0-9]{1,2}0{0,18})?$"},
                    {
                        "type": "number",
                        "minimum": 0,
                        "exclusiveMaximum": int(AMOUNT_LIMIT_EXCLUSIVE),
                        "multipleOf": 0.01,
                    },
                ],
                "examples": ["500.00"],
                "description": "How far below zero the balances may go, 0 for not at all; "
                "at most the currency's minor digits.",
            }
        ),
    ]


class AccountPatchBody(_Request):
    model_config = ConfigDict(json_schema_extra={"examples": [{"is_active": False}]})

    # Strict: 0, 1 or "no" would silently pass as a boolean.
    is_active: StrictBool = Field(description="false freezes the account, true re-opens it.")


# The core's rules for usernames and e-mail addresses (banking.auth.users); ``\s`` is spelled
# out as Python reads it, since ECMA-262 engines read it otherwise.
USERNAME_PATTERN = r"^[A-Za-z0-9_.@-]{3,64}$"
_EMAIL_PART = (
    "[^@\\x00-\\x20\\x7f\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
)
EMAIL_PATTERN = f"^{_EMAIL_PART}{{1,64}}@{_EMAIL_PART}{{1,189}}\\.{_EMAIL_PART}{{1,63}}$"


class UserCreateBody(_Request):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "username": "dana",
                    "email": "dana@example.com",
                    "password": "correct-horse-battery",
                    "role": "customer",
                }
            ]
        }
    )

    username: str = Field(
        min_length=3, max_length=64, json_schema_extra={"pattern": USERNAME_PATTERN}
    )
    email: str = Field(min_length=3, max_length=254, json_schema_extra={"pattern": EMAIL_PATTERN})
    password: str = Field(min_length=PASSWORD_LENGTH_MIN, max_length=PASSWORD_LENGTH_MAX)
    role: Role = Role.CUSTOMER


# --- responses --------------------------------------------------------------------------


class TokenRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.c2lnbmF0dXJl",
                    "token_type": "bearer",
                    "expires_in": 1800,
                }
            ]
        }
    )

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth2 token type
    expires_in: int = Field(description="Seconds until the token expires.")


class UserRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": EXAMPLE_CUSTOMER_ID,
                    "username": "dana",
                    "email": "dana@example.com",
                    "role": "customer",
                    "is_active": True,
                    "created_at": EXAMPLE_TIME,
                    "last_login": None,
                }
            ]
        }
    )

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


_ACCOUNT_EXAMPLE: dict[str, Any] = {
    "account_id": EXAMPLE_ACCOUNT_ID,
    "account_number": EXAMPLE_ACCOUNT_NUMBER,
    "customer_id": EXAMPLE_CUSTOMER_ID,
    "account_type": "checking",
    "currency": "USD",
    "is_active": True,
    "created_at": EXAMPLE_TIME,
    "updated_at": EXAMPLE_TIME,
}
_BALANCE_EXAMPLE: dict[str, Any] = {
    "account_id": EXAMPLE_ACCOUNT_ID,
    "currency": "USD",
    "current_balance": "900.00",
    "available_balance": "900.00",
    "version": 3,
    "last_updated": EXAMPLE_TIME,
    "overdraft_limit": "0.00",
}


class AccountRead(_RecordBody):
    model_config = ConfigDict(json_schema_extra={"examples": [_ACCOUNT_EXAMPLE]})

    account_id: UUID
    account_number: str = Field(
        description="With a Luhn check digit.", json_schema_extra={"pattern": "^[0-9]{12}$"}
    )
    customer_id: UUID
    account_type: AccountType
    currency: Currency
    is_active: bool
    created_at: datetime
    updated_at: datetime
    metadata: dict[str, str] = Field(
        default_factory=dict, description="The caller's own labels (a bounded string map)."
    )


class AccountList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"accounts": [_ACCOUNT_EXAMPLE], "next_cursor": None}]}
    )

    accounts: list[AccountRead]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last page."
    )


class BalanceRead(_RecordBody):
    model_config = ConfigDict(json_schema_extra={"examples": [_BALANCE_EXAMPLE]})

    account_id: UUID
    currency: Currency
    current_balance: BalanceText
    available_balance: BalanceText
    version: int = Field(description="Increments on every change; the ETag of the balance.")
    last_updated: datetime
    overdraft_limit: MoneyText = Field(
        description="How far below zero the balances may go (0.00: not at all); set by staff."
    )


class AccountCreated(AccountRead):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    **_ACCOUNT_EXAMPLE,
                    "balance": {
                        **_BALANCE_EXAMPLE,
                        "current_balance": "0.00",
                        "available_balance": "0.00",
                        "version": 0,
                    },
                }
            ]
        }
    )

    balance: BalanceRead


_LEG_EXAMPLE: dict[str, Any] = {
    "transaction_id": EXAMPLE_TRANSACTION_ID,
    "account_id": EXAMPLE_ACCOUNT_ID,
    "transaction_type": "debit",
    "amount": "100.00",
    "currency": "USD",
    "description": "ATM withdrawal",
    "reference_id": "atm-2026-01-31-0001",
    "status": "completed",
    "created_at": EXAMPLE_TIME,
    "related_transaction_id": None,
    "counterparty_account_id": None,
    "failure_code": None,
    "failure_reason": None,
}
# A failed leg holds the code of the error that declined or rejected it: documented as the
# enum, carried as the stored text (the one mapping stays total).
FailureCode = Annotated[
    str | None,
    WithJsonSchema(
        {
            "anyOf": [{"$ref": "#/components/schemas/ErrorCode"}, {"type": "null"}],
            "description": "Why a failed leg failed: the code it was declined or rejected with.",
        }
    ),
]


# One leg, as stored; the balance after it is only in a movement's answer (a docstring would
# become the schema's description in the OpenAPI document).
class TransactionRead(_RecordBody):
    model_config = ConfigDict(json_schema_extra={"examples": [_LEG_EXAMPLE]})

    transaction_id: UUID
    account_id: UUID
    transaction_type: TransactionType
    amount: MoneyText
    currency: Currency
    description: str | None
    reference_id: str
    status: TransactionStatus
    created_at: datetime
    related_transaction_id: UUID | None = Field(description="The other leg of a transfer.")
    counterparty_account_id: UUID | None = Field(description="The other account of a transfer.")
    failure_code: FailureCode
    failure_reason: str | None
    hold_reason: str | None = Field(
        default=None,
        description="Why the fraud detector held this asynchronous movement for review "
        "(kept once it was released or rejected); null when it was never held.",
    )
    metadata: dict[str, str] = Field(
        default_factory=dict,
        description="The caller's own labels (a bounded string map; both legs of a transfer "
        "carry them).",
    )
    reverses_transaction_id: UUID | None = Field(
        default=None, description="The movement this leg reverses; null when it is no reversal."
    )
    hold_id: UUID | None = Field(
        default=None, description="The hold this leg captures; null when it is no capture."
    )


class FraudRead(BaseModel):
    """A movement's fraud score (staff only: customers never see scores)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "score": "0.9312",
                    "reasons": ["new_counterparty", "night_time", "amount_vs_mean"],
                    "model_version": "if-20261201T120000-1a2b3c4d",
                    "decision": "hold",
                    "scored_at": EXAMPLE_TIME,
                    "review_decision": None,
                    "reviewed_by": None,
                    "reviewed_at": None,
                }
            ]
        }
    )

    score: str = Field(
        pattern=r"^(0\.[0-9]{4}|1\.0000)$", description="In [0, 1], four decimal places."
    )
    reasons: list[str] = Field(description="What drove the score, most important first.")
    model_version: str
    decision: Literal["allow", "alert", "hold"]
    scored_at: datetime
    review_decision: Literal["released", "rejected"] | None
    reviewed_by: UUID | None
    reviewed_at: datetime | None

    @classmethod
    def of(cls, score: FraudScore) -> FraudRead:
        return cls(
            score=format(score.score, "f"),
            reasons=list(score.reasons),
            model_version=score.model_version,
            decision=score.decision,
            scored_at=score.scored_at,
            review_decision=score.review_decision.value if score.review_decision else None,
            reviewed_by=score.reviewed_by,
            reviewed_at=score.reviewed_at,
        )


class TransactionDetail(TransactionRead):
    """One leg, and for staff its fraud score."""

    fraud: FraudRead | None = Field(
        default=None, description="Staff only: the fraud score (null for customers, or unscored)."
    )

    @classmethod
    def of_scored(cls, leg: Transaction, score: FraudScore | None) -> TransactionDetail:
        body = TransactionRead.of(leg).model_dump()
        return cls.model_validate({**body, "fraud": FraudRead.of(score) if score else None})


class TransactionView(TransactionDetail):
    """One leg as ``GET /transactions/{transaction_id}`` shows it: for staff with its fraud
    score, and with what has been reversed of its movement."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    **_LEG_EXAMPLE,
                    "fraud": None,
                    "reversed_amount": "25.00",
                    "reversals": [EXAMPLE_RELATED_TRANSACTION_ID],
                }
            ]
        }
    )

    reversed_amount: MoneyText = Field(
        description="How much of the movement its reversals took (the same on both legs of a "
        "transfer); never more than its amount."
    )
    reversals: list[UUID] = Field(
        description="The completed reversal legs on this leg's account, oldest first (at most "
        "100): for a transfer, the reversal's leg on the same side."
    )

    @classmethod
    def of_reversed(
        cls, leg: Transaction, score: FraudScore | None, reversals: Reversals
    ) -> TransactionView:
        body = TransactionDetail.of_scored(leg, score).model_dump()
        return cls.model_validate(
            {
                **body,
                "reversed_amount": reversals.reversed_amount,
                "reversals": list(reversals.reversal_ids),
            }
        )


class HeldPage(BaseModel):
    """The review queue: held asynchronous movements, oldest first."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "transactions": [
                        {
                            **_LEG_EXAMPLE,
                            "status": "pending",
                            "hold_reason": "held for fraud review",
                            "fraud": FraudRead.model_config["json_schema_extra"]["examples"][0],  # type: ignore[index]
                        }
                    ],
                    "next_cursor": None,
                }
            ]
        }
    )

    transactions: list[TransactionDetail]
    next_cursor: str | None = Field(description="Give it as `cursor` for the next page.")


class MovementRead(TransactionRead):
    """A completed movement: its initiating leg and the account's resulting balance."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{**_LEG_EXAMPLE, "available_balance": "900.00", "balance_version": 3}]
        }
    )
    RENAMED: ClassVar[Mapping[str, str]] = {
        "available_balance": "available_balance_after",
        "balance_version": "balance_version_after",
    }

    available_balance: BalanceText
    balance_version: int

    @classmethod
    def of_movement(cls, leg: Transaction) -> MovementRead:
        if leg.available_balance_after is None or leg.balance_version_after is None:
            raise InvariantViolated("a completed movement has a resulting balance")
        return cls.of(leg)


class BatchItemError(BaseModel):
    """Why one item of a batch did not complete: what a single request would have answered."""

    code: ErrorCode
    message: str
    transaction_id: UUID | None = Field(
        default=None,
        description="The failed leg that records a declined item (or, for "
        "`IDEMPOTENCY_CONFLICT`, the leg that holds the key).",
    )
    field: str | None = Field(default=None, description="The field at fault, when one is.")

    @classmethod
    def of(cls, error: BankingError) -> BatchItemError:
        return cls(
            code=error.code,
            message=error.message,
            transaction_id=error.transaction_id,
            field=error.field if isinstance(error, ValidationFailed) else None,
        )


class BatchItemCompleted(BaseModel):
    index: int = Field(ge=0, description="The item's position in the request.")
    status: Literal["completed"]
    replayed: bool = Field(description="The stored result of an earlier request with its key.")
    transaction: MovementRead


class BatchItemDeclined(BaseModel):
    """Declined and stored as a failed leg (``error.transaction_id``): a ``Declined`` error."""

    index: int = Field(ge=0)
    status: Literal["failed"]
    replayed: bool
    error: BatchItemError


class BatchItemRejected(BaseModel):
    """Refused: nothing of it was stored."""

    index: int = Field(ge=0)
    status: Literal["rejected"]
    error: BatchItemError


BatchItemRead = Annotated[
    BatchItemCompleted | BatchItemDeclined | BatchItemRejected, Field(discriminator="status")
]


class BatchRead(BaseModel):
    """Each item's outcome, in the order of the request."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "atomic": False,
                    "completed": 1,
                    "failed": 1,
                    "rejected": 1,
                    "items": [
                        {
                            "index": 0,
                            "status": "completed",
                            "replayed": False,
                            "transaction": {
                                **_LEG_EXAMPLE,
                                "available_balance": "900.00",
                                "balance_version": 3,
                            },
                        },
                        {
                            "index": 1,
                            "status": "failed",
                            "replayed": False,
                            "error": {
                                "code": "INSUFFICIENT_FUNDS",
                                "message": "insufficient funds",
                                "transaction_id": EXAMPLE_RELATED_TRANSACTION_ID,
                                "field": None,
                            },
                        },
                        {
                            "index": 2,
                            "status": "rejected",
                            "error": {
                                "code": "ACCOUNT_NOT_FOUND",
                                "message": "account not found",
                                "transaction_id": None,
                                "field": None,
                            },
                        },
                    ],
                }
            ]
        }
    )

    atomic: bool
    completed: int = Field(ge=0, description="Items that completed (replays included).")
    failed: int = Field(ge=0, description="Items declined and stored as failed legs.")
    rejected: int = Field(ge=0, description="Items refused; nothing of them was stored.")
    items: list[BatchItemRead]

    @classmethod
    def of_results(cls, results: Sequence[MovementResult | BankingError], *, atomic: bool) -> Self:
        """The one mapping of a batch's results (``Movements.batch``) to its body."""
        items: list[BatchItemCompleted | BatchItemDeclined | BatchItemRejected] = []
        for index, result in enumerate(results):
            if isinstance(result, MovementResult):
                items.append(
                    BatchItemCompleted(
                        index=index,
                        status="completed",
                        replayed=result.replayed,
                        transaction=MovementRead.of_movement(result.transaction),
                    )
                )
            elif isinstance(result, Declined):
                items.append(
                    BatchItemDeclined(
                        index=index,
                        status="failed",
                        replayed=result.replayed,
                        error=BatchItemError.of(result),
                    )
                )
            else:
                items.append(
                    BatchItemRejected(
                        index=index, status="rejected", error=BatchItemError.of(result)
                    )
                )
        counts = Counter(item.status for item in items)
        return cls(
            atomic=atomic,
            completed=counts["completed"],
            failed=counts["failed"],
            rejected=counts["rejected"],
            items=items,
        )


class TransactionPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"transactions": [_LEG_EXAMPLE], "next_cursor": EXAMPLE_CURSOR}]
        }
    )

    transactions: list[TransactionRead]
    next_cursor: str | None = Field(description="Give it as `cursor` for the next page.")


class StatementLineRead(TransactionRead):
    running_balance: BalanceText = Field(description="The account's balance right after this leg.")


_STATEMENT_EXAMPLE: dict[str, Any] = {
    "account_id": EXAMPLE_ACCOUNT_ID,
    "currency": "USD",
    "from": "2026-01-01T00:00:00Z",
    "to": "2026-02-01T00:00:00Z",
    "opening_balance": "1000.00",
    "closing_balance": "900.00",
    "credits_total": "0.00",
    "debits_total": "100.00",
    "count": 1,
    "transactions": [{**_LEG_EXAMPLE, "running_balance": "900.00"}],
}


class StatementRead(BaseModel):
    """An account's statement of the period ``(from, to]``: opening balance as of ``from``,
    every completed leg created after ``from`` and at or before ``to`` oldest first with its
    running balance, closing balance as of ``to``, and totals."""

    model_config = ConfigDict(
        populate_by_name=True, json_schema_extra={"examples": [_STATEMENT_EXAMPLE]}
    )

    account_id: UUID
    currency: Currency
    period_from: datetime = Field(alias="from", serialization_alias="from")
    period_to: datetime = Field(alias="to", serialization_alias="to")
    opening_balance: BalanceText
    closing_balance: BalanceText
    credits_total: MoneyText = Field(description="Credits and incoming transfers of the period.")
    debits_total: MoneyText = Field(description="Debits and outgoing transfers of the period.")
    count: int = Field(ge=0, description="How many legs the period has.")
    transactions: list[StatementLineRead]


class HealthRead(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "healthy"}]})

    status: Literal["healthy"]


class ReadyRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"status": "ready", "checks": {"database": "ok", "redis": "ok"}},
                {
                    "status": "unavailable",
                    "checks": {"database": "behind"},
                    "details": {
                        "database": "the database is at revision (none: never migrated); this "
                        "version needs 0001: run `banking migrate`"
                    },
                },
            ]
        }
    )

    status: Literal["ready", "degraded", "unavailable"] = Field(
        description="ready: every check ok; degraded: still serving (Redis down: the cache "
        "is bypassed); unavailable: 503."
    )
    checks: dict[str, Literal["ok", "degraded", "unavailable", "behind"]]
    details: dict[str, str] | None = Field(
        default=None, description="What to do about a failed check."
    )


# --- errors -----------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: str | None = Field(
        description="The field at fault: `amount`, or `query.from` for a parameter."
    )
    message: str | None = None
    type: str | None = Field(default=None, description="The kind of validation failure.")
    index: int | None = Field(
        default=None, ge=0, description="The batch item at fault (an atomic batch's failure)."
    )


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: ErrorCode
    message: str
    transaction_id: UUID | None = Field(
        default=None, description="The failed leg that records a declined movement."
    )
    trace_id: str
    request_id: str
    timestamp: datetime
    details: list[ErrorDetail] | None = None


class ErrorEnvelope(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error: ErrorBody


# --- holds (/api/v1/holds) ------------------------------------------------------------------


class HoldBody(_Request):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "account_id": EXAMPLE_ACCOUNT_ID,
                    "amount": "80.00",
                    "currency": "USD",
                    "description": "Hotel deposit",
                    "reference_id": "booking-2026-01-31-0001",
                    "expires_at": EXAMPLE_TIME,
                }
            ]
        }
    )

    account_id: UUID
    amount: Amount
    currency: Currency = Field(min_length=3, max_length=3)
    description: str | None = _DESCRIPTION
    reference_id: str | None = _REFERENCE
    expires_at: DateTimeQuery | None = Field(
        default=None,
        description="When the hold is released if it was not captured or voided (RFC 3339, "
        "in the future, at most HOLD_DURATION_MAX_HOURS ahead; that far ahead by default).",
    )
    destination_account_id: UUID | None = Field(
        default=None,
        description="Another account in the same currency: a capture is then a transfer to it.",
    )


class CaptureBody(_Request):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"amount": "60.00", "final": True, "reference_id": "checkout-0001"}]
        }
    )

    amount: Amount | None = Field(
        default=None, description="At most what is left of the hold; all of it when absent."
    )
    final: StrictBool = Field(
        default=False, description="Close the hold after this capture, releasing the rest."
    )
    reference_id: str | None = _REFERENCE


_HOLD_EXAMPLE: dict[str, Any] = {
    "hold_id": EXAMPLE_TRANSACTION_ID,
    "account_id": EXAMPLE_ACCOUNT_ID,
    "destination_account_id": None,
    "amount": "80.00",
    "captured_amount": "0.00",
    "currency": "USD",
    "description": "Hotel deposit",
    "reference_id": "booking-2026-01-31-0001",
    "status": "open",
    "expires_at": EXAMPLE_TIME,
    "created_at": EXAMPLE_TIME,
    "updated_at": EXAMPLE_TIME,
    "closed_at": None,
}


class HoldRead(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_HOLD_EXAMPLE]})

    hold_id: UUID
    account_id: UUID
    destination_account_id: UUID | None
    amount: MoneyText
    captured_amount: MoneyText = Field(description="Captured so far (never above amount).")
    currency: Currency
    description: str | None
    reference_id: str
    status: HoldStatus
    expires_at: datetime
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None = Field(description="When it was captured, voided or expired.")

    @classmethod
    def of(cls, hold: Hold) -> Self:
        """The only mapping of a hold to its body: every field, by name."""
        return cls.model_validate({name: getattr(hold, name) for name in HoldRead.model_fields})


class HoldCaptured(HoldRead):
    """The hold after a capture, and the capture: its completed leg and the balance after it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    **_HOLD_EXAMPLE,
                    "captured_amount": "60.00",
                    "status": "captured",
                    "closed_at": EXAMPLE_TIME,
                    "capture": {
                        **_LEG_EXAMPLE,
                        "amount": "60.00",
                        "available_balance": "940.00",
                        "balance_version": 5,
                    },
                }
            ]
        }
    )

    capture: MovementRead

    @classmethod
    def of_capture(cls, result: HoldResult) -> HoldCaptured:
        if result.capture is None:
            raise InvariantViolated("a capture has its leg")
        body = HoldRead.of(result.hold).model_dump()
        return cls.model_validate({**body, "capture": MovementRead.of_movement(result.capture)})


class HoldList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"holds": [_HOLD_EXAMPLE], "next_cursor": None}]}
    )

    holds: list[HoldRead]
    next_cursor: str | None = Field(description="Give it as `cursor` for the next page.")
