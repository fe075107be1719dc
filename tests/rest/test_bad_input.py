"""Bad input to the money-moving endpoints: a clear 4xx in the error envelope, nothing moved.

Every case sends one malformed or disallowed request to debit, credit and/or transfer and checks
the status, the stable error code, the envelope (ids matching the response headers), the field
named in ``details`` where there is one, and that balances (with versions) and the rows of
transactions, transaction_logs and outbox are exactly as before.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from banking.domain.roles import Role
from tests.conftest import Bank

SLOT = "@@raw-json@@"
ACCOUNT_KEYS = {
    "debit": ("account_id",),
    "credit": ("account_id",),
    "transfer": ("source_account_id", "destination_account_id"),
}
ALL = ("debit", "credit", "transfer")
SINGLE = ("debit", "credit")


def assert_error(
    response: httpx.Response, status: int, code: str, field_name: str | None = None
) -> dict[str, Any]:
    """The response is the error envelope with ``code``; returns the ``error`` object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert "Traceback" not in response.text
    body = response.json()
    assert list(body) == ["error"], body
    error = body["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    assert error["request_id"] == response.headers["x-request-id"]
    assert error["trace_id"] == response.headers["x-trace-id"]
    assert datetime.fromisoformat(error["timestamp"]).tzinfo is not None, error
    if field_name is not None:
        named = [detail.get("field") for detail in error.get("details", [])]
        assert field_name in named, error
    return error


@dataclass
class Accounts:
    customer: dict[str, str]
    staff: dict[str, str]
    usd: str
    usd_other: str
    jpy: str
    jpy_other: str


@pytest.fixture
async def accounts(bank: Bank, staff: dict[str, str]) -> AsyncIterator[Accounts]:
    alice_id, alice = await bank.user(Role.CUSTOMER)
    bob_id, _ = await bank.user(Role.CUSTOMER)
    yield Accounts(
        customer=alice,
        staff=staff,
        usd=await bank.account(alice_id, staff, funded="100.00"),
        usd_other=await bank.account(bob_id, staff, funded="1.00"),
        jpy=await bank.account(alice_id, staff, currency="JPY", funded="1000"),
        jpy_other=await bank.account(bob_id, staff, currency="JPY"),
    )


def valid_body(endpoint: str, ctx: Accounts) -> dict[str, Any]:
    if endpoint == "transfer":
        return {
            "source_account_id": ctx.usd,
            "destination_account_id": ctx.usd_other,
            "amount": "1.00",
            "currency": "USD",
        }
    return {"account_id": ctx.usd, "amount": "1.00", "currency": "USD"}


def point_at(body: dict[str, Any], endpoint: str, *account_ids: str) -> dict[str, Any]:
    """The body with its account id field(s) replaced, in the order of ACCOUNT_KEYS."""
    return body | dict(zip(ACCOUNT_KEYS[endpoint], account_ids, strict=False))


Mutator = Callable[[dict[str, Any], Accounts, str], "dict[str, Any] | bytes"]


def raw_field(name: str, lexeme: str) -> Mutator:
    """The valid body with field ``name`` written as this exact JSON text (number, literal,
    escape sequence, ...)."""

    def mutate(body: dict[str, Any], _ctx: Accounts, _endpoint: str) -> bytes:
        text = json.dumps(body | {name: SLOT})
        return text.replace(json.dumps(SLOT), lexeme).encode()

    return mutate


def amount_lexeme(lexeme: str) -> Mutator:
    return raw_field("amount", lexeme)


def amount_in_jpy(lexeme: str) -> Mutator:
    def mutate(body: dict[str, Any], ctx: Accounts, endpoint: str) -> bytes:
        jpy_body = point_at(body, endpoint, ctx.jpy, ctx.jpy_other) | {"currency": "JPY"}
        return amount_lexeme(lexeme)(jpy_body, ctx, endpoint)

    return mutate


def with_fields(**values: Any) -> Mutator:
    return lambda body, _ctx, _endpoint: body | values


def without(*names: str) -> Mutator:
    return lambda body, _ctx, _endpoint: {k: v for k, v in body.items() if k not in names}


def raw(content: bytes) -> Mutator:
    return lambda _body, _ctx, _endpoint: content


@dataclass(frozen=True)
class Case:
    name: str
    mutate: Mutator
    status: int
    code: str
    field_name: str | None = None  # "{account}" is the endpoint's first account field
    endpoints: tuple[str, ...] = ALL
    headers: dict[str, str] = field(default_factory=dict)


UNKNOWN = str(uuid.UUID(int=0x5EED))
TOO_BIG_INT_DIGITS = "1" * 5000  # beyond Python's int-from-text limit (4300 digits)

CASES = [
    # --- amounts ------------------------------------------------------------------------
    Case("amount-zero-string", with_fields(amount="0"), 422, "VALIDATION_ERROR", "amount"),
    Case("amount-zero-cents", with_fields(amount="0.00"), 422, "VALIDATION_ERROR", "amount"),
    Case("amount-zero-number", amount_lexeme("0"), 422, "VALIDATION_ERROR", "amount"),
    Case("amount-negative-string", with_fields(amount="-1.00"), 422, "VALIDATION_ERROR", "amount"),
    Case("amount-negative-number", amount_lexeme("-5"), 422, "VALIDATION_ERROR", "amount"),
    Case("amount-negative-fraction", amount_lexeme("-0.01"), 422, "VALIDATION_ERROR", "amount"),
    Case("amount-plus-sign", with_fields(amount="+1.00"), 422, "VALIDATION_ERROR", "amount"),
    Case(
        "usd-three-decimals-string", with_fields(amount="1.001"), 422, "VALIDATION_ERROR", "amount"
    ),
    Case("usd-three-decimals-number", amount_lexeme("1.001"), 422, "VALIDATION_ERROR", "amount"),
    Case("jpy-with-decimals-string", amount_in_jpy('"1.5"'), 422, "VALIDATION_ERROR", "amount"),
    Case("jpy-with-decimals-number", amount_in_jpy("1.5"), 422, "VALIDATION_ERROR", "amount"),
    Case("nan-literal", amount_lexeme("NaN"), 422, "VALIDATION_ERROR"),
    Case("infinity-literal", amount_lexeme("Infinity"), 422, "VALIDATION_ERROR"),
    Case("minus-infinity-literal", amount_lexeme("-Infinity"), 422, "VALIDATION_ERROR"),
    Case("nan-string", with_fields(amount="NaN"), 422, "VALIDATION_ERROR", "amount"),
    Case("infinity-string", with_fields(amount="Infinity"), 422, "VALIDATION_ERROR", "amount"),
    Case(
        "ten-to-16-string",
        with_fields(amount="10000000000000000"),
        422,
        "VALIDATION_ERROR",
        "amount",
    ),
    Case("ten-to-16-int", amount_lexeme("10000000000000000"), 422, "VALIDATION_ERROR", "amount"),
    Case("ten-to-16-exponent", amount_lexeme("1e16"), 422, "VALIDATION_ERROR", "amount"),
    Case("exponent-number", amount_lexeme("0.1e1"), 422, "VALIDATION_ERROR", "amount"),
    Case("exponent-string", with_fields(amount="0.1e1"), 422, "VALIDATION_ERROR", "amount"),
    Case("huge-exponent-number", amount_lexeme("1e400"), 422, "VALIDATION_ERROR", "amount"),
    Case("too-many-digits-string", with_fields(amount="1" * 25), 422, "VALIDATION_ERROR", "amount"),
    Case("int-beyond-python-limit", amount_lexeme(TOO_BIG_INT_DIGITS), 422, "VALIDATION_ERROR"),
    Case("boolean-true", amount_lexeme("true"), 422, "VALIDATION_ERROR", "amount"),
    Case("amount-null", amount_lexeme("null"), 422, "VALIDATION_ERROR", "amount"),
    Case("amount-object", with_fields(amount={"value": "1.00"}), 422, "VALIDATION_ERROR", "amount"),
    Case("amount-list", with_fields(amount=["1.00"]), 422, "VALIDATION_ERROR", "amount"),
    Case("amount-empty-string", with_fields(amount=""), 422, "VALIDATION_ERROR", "amount"),
    Case(
        "amount-with-currency-text",
        with_fields(amount="1.00 USD"),
        422,
        "VALIDATION_ERROR",
        "amount",
    ),
    Case("amount-decimal-comma", with_fields(amount="1,00"), 422, "VALIDATION_ERROR", "amount"),
    Case("amount-hex", with_fields(amount="0x10"), 422, "VALIDATION_ERROR", "amount"),
    Case("amount-underscores", with_fields(amount="1_000"), 422, "VALIDATION_ERROR", "amount"),
    Case(
        "credit-beyond-ledger-limit",
        with_fields(amount="9999999999999999.99"),
        422,
        "VALIDATION_ERROR",
        "amount",
        endpoints=("credit",),
    ),
    # --- currencies ---------------------------------------------------------------------
    Case("wrong-currency", with_fields(currency="EUR"), 422, "CURRENCY_MISMATCH"),
    Case(
        "destination-in-other-currency",
        lambda body, ctx, endpoint: point_at(body, endpoint, ctx.usd, ctx.jpy_other),
        422,
        "CURRENCY_MISMATCH",
        endpoints=("transfer",),
    ),
    Case("unsupported-currency", with_fields(currency="XXX"), 422, "VALIDATION_ERROR", "currency"),
    Case("currency-two-letters", with_fields(currency="US"), 422, "VALIDATION_ERROR", "currency"),
    Case("currency-number", with_fields(currency=840), 422, "VALIDATION_ERROR", "currency"),
    # --- accounts -----------------------------------------------------------------------
    Case(
        "unknown-account",
        lambda body, _ctx, endpoint: point_at(body, endpoint, UNKNOWN),
        404,
        "ACCOUNT_NOT_FOUND",
    ),
    Case(
        "unknown-destination",
        lambda body, ctx, endpoint: point_at(body, endpoint, ctx.usd, UNKNOWN),
        404,
        "ACCOUNT_NOT_FOUND",
        endpoints=("transfer",),
    ),
    Case(
        "malformed-account-uuid",
        lambda body, _ctx, endpoint: point_at(body, endpoint, "not-a-uuid"),
        422,
        "VALIDATION_ERROR",
        "{account}",
    ),
    Case(
        "malformed-destination-uuid",
        lambda body, ctx, endpoint: point_at(body, endpoint, ctx.usd, "12345"),
        422,
        "VALIDATION_ERROR",
        "destination_account_id",
        endpoints=("transfer",),
    ),
    Case(
        "same-source-and-destination",
        lambda body, ctx, endpoint: point_at(body, endpoint, ctx.usd, ctx.usd),
        422,
        "VALIDATION_ERROR",
        "destination_account_id",
        endpoints=("transfer",),
    ),
    # --- shape of the body --------------------------------------------------------------
    Case(
        "missing-account",
        without("account_id", "source_account_id"),
        422,
        "VALIDATION_ERROR",
        "{account}",
    ),
    Case(
        "missing-destination",
        without("destination_account_id"),
        422,
        "VALIDATION_ERROR",
        "destination_account_id",
        endpoints=("transfer",),
    ),
    Case("missing-amount", without("amount"), 422, "VALIDATION_ERROR", "amount"),
    Case("missing-currency", without("currency"), 422, "VALIDATION_ERROR", "currency"),
    Case("empty-object", raw(b"{}"), 422, "VALIDATION_ERROR", "amount"),
    Case("empty-body", raw(b""), 422, "VALIDATION_ERROR"),
    Case("json-array", raw(b"[]"), 422, "VALIDATION_ERROR"),
    Case("json-string", raw(b'"1.00"'), 422, "VALIDATION_ERROR"),
    Case("unknown-field", with_fields(memo="hi"), 422, "VALIDATION_ERROR", "memo"),
    Case(
        "misspelled-field",
        lambda body, _ctx, _endpoint: without("amount")(body, _ctx, _endpoint) | {"ammount": "1"},
        422,
        "VALIDATION_ERROR",
        "ammount",
    ),
    Case("invalid-json", raw(b'{"amount": '), 422, "VALIDATION_ERROR"),
    Case("trailing-comma", raw(b'{"amount": "1.00",}'), 422, "VALIDATION_ERROR"),
    Case("not-utf8", raw(b'{"amount": "\xff\xfe"}'), 422, "VALIDATION_ERROR"),
    Case("deeply-nested", raw(b"[" * 30000 + b"]" * 30000), 422, "VALIDATION_ERROR"),
    Case(
        "description-501-chars",
        with_fields(description="d" * 501),
        422,
        "VALIDATION_ERROR",
        "description",
    ),
    # PostgreSQL text cannot hold U+0000: it must be refused up front on every backend.
    Case(
        "description-nul-char",
        with_fields(description="rent\x00march"),
        422,
        "VALIDATION_ERROR",
        "description",
    ),
    Case(
        "description-lone-surrogate",
        raw_field("description", '"\\ud800"'),
        422,
        "VALIDATION_ERROR",
        "description",
    ),
    Case(
        "description-not-a-string",
        with_fields(description=42),
        422,
        "VALIDATION_ERROR",
        "description",
    ),
    Case("reference-empty", with_fields(reference_id=""), 422, "VALIDATION_ERROR", "reference_id"),
    Case(
        "reference-256-chars",
        with_fields(reference_id="r" * 256),
        422,
        "VALIDATION_ERROR",
        "reference_id",
    ),
    Case(
        "reference-control-char",
        with_fields(reference_id="ref\n1"),
        422,
        "VALIDATION_ERROR",
        "reference_id",
    ),
    Case(
        "reference-nul-char",
        with_fields(reference_id="ref\x001"),
        422,
        "VALIDATION_ERROR",
        "reference_id",
    ),
    Case(
        "idempotency-key-differs",
        with_fields(reference_id="body-key"),
        422,
        "VALIDATION_ERROR",
        "reference_id",
        headers={"Idempotency-Key": "header-key"},
    ),
    Case(
        "idempotency-key-256-chars",
        with_fields(),
        422,
        "VALIDATION_ERROR",
        "reference_id",
        headers={"Idempotency-Key": "k" * 256},
    ),
    # --- size ---------------------------------------------------------------------------
    Case(
        "description-100k-chars", with_fields(description="d" * 100_000), 413, "PAYLOAD_TOO_LARGE"
    ),
    Case("padded-extra-field", with_fields(padding="p" * 70_000), 413, "PAYLOAD_TOO_LARGE"),
]

PARAMS = [
    pytest.param(case, endpoint, id=f"{endpoint}-{case.name}")
    for case in CASES
    for endpoint in case.endpoints
]


def headers_for(endpoint: str, ctx: Accounts) -> dict[str, str]:
    return ctx.staff if endpoint == "credit" else ctx.customer


@pytest.mark.parametrize(("case", "endpoint"), PARAMS)
async def test_bad_movement_is_refused_and_changes_nothing(
    bank: Bank, accounts: Accounts, case: Case, endpoint: str
) -> None:
    payload = case.mutate(valid_body(endpoint, accounts), accounts, endpoint)
    content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    before = await bank.snapshot()

    response = await bank.client.post(
        f"/api/v1/transactions/{endpoint}",
        content=content,
        headers={
            **headers_for(endpoint, accounts),
            **case.headers,
            "Content-Type": "application/json",
        },
    )

    expected_field = (
        case.field_name.format(account=ACCOUNT_KEYS[endpoint][0]) if case.field_name else None
    )
    assert_error(response, case.status, case.code, expected_field)
    assert await bank.snapshot() == before


@pytest.mark.parametrize("endpoint", ALL)
async def test_oversized_body_without_content_length_is_refused(
    bank: Bank, accounts: Accounts, endpoint: str
) -> None:
    """A chunked body (no Content-Length) is cut off at the limit too."""
    body = valid_body(endpoint, accounts) | {"description": "d" * 100_000}
    encoded = json.dumps(body).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(encoded), 8192):
            yield encoded[start : start + 8192]

    before = await bank.snapshot()
    response = await bank.client.post(
        f"/api/v1/transactions/{endpoint}",
        content=chunks(),
        headers={**headers_for(endpoint, accounts), "Content-Type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert await bank.snapshot() == before


@pytest.mark.parametrize("endpoint", ALL)
async def test_form_encoded_body_is_refused(bank: Bank, accounts: Accounts, endpoint: str) -> None:
    before = await bank.snapshot()
    response = await bank.client.post(
        f"/api/v1/transactions/{endpoint}",
        data={key: str(value) for key, value in valid_body(endpoint, accounts).items()},
        headers=headers_for(endpoint, accounts),
    )
    assert_error(response, 422, "VALIDATION_ERROR")
    assert await bank.snapshot() == before


@pytest.mark.parametrize(
    ("method", "path", "field_name"),
    [
        ("GET", "/api/v1/accounts/not-a-uuid", "path.account_id"),
        ("GET", "/api/v1/accounts/not-a-uuid/balance", "path.account_id"),
        ("GET", "/api/v1/accounts/not-a-uuid/transactions", "path.account_id"),
        ("PATCH", "/api/v1/accounts/not-a-uuid", "path.account_id"),
        ("GET", "/api/v1/transactions/not-a-uuid", "path.transaction_id"),
        ("GET", "/api/v1/accounts/1234/balance", "path.account_id"),
    ],
)
async def test_malformed_uuid_in_path_is_a_validation_error(
    bank: Bank, accounts: Accounts, method: str, path: str, field_name: str
) -> None:
    before = await bank.snapshot()
    response = await bank.client.request(
        method,
        path,
        headers=accounts.staff,
        json={"is_active": False} if method == "PATCH" else None,
    )
    assert_error(response, 422, "VALIDATION_ERROR", field_name)
    assert await bank.snapshot() == before


@pytest.mark.parametrize(
    ("params", "field_name"),
    [
        pytest.param({"page_size": 0}, "query.page_size", id="page-size-zero"),
        pytest.param({"page_size": "ten"}, "query.page_size", id="page-size-text"),
        pytest.param({"page_size": 100_000}, "page_size", id="page-size-above-max"),
        pytest.param({"type": "refund"}, "query.type", id="unknown-type"),
        pytest.param({"status": "lost"}, "query.status", id="unknown-status"),
        pytest.param({"from": "yesterday"}, "query.from", id="from-not-a-date"),
        pytest.param({"from": "2024-01-01T00:00:00"}, "query.from", id="from-without-zone"),
        # Valid ISO 8601, but before year 1 / after year 9999 once converted to UTC.
        pytest.param({"from": "0001-01-01T00:00:00+01:00"}, None, id="from-before-year-1-utc"),
        pytest.param({"to": "9999-12-31T23:59:59-14:00"}, None, id="to-after-year-9999-utc"),
        pytest.param({"cursor": "not-a-cursor"}, None, id="bad-cursor"),
    ],
)
async def test_bad_history_query_is_a_validation_error(
    bank: Bank, accounts: Accounts, params: dict[str, Any], field_name: str | None
) -> None:
    response = await bank.client.get(
        f"/api/v1/accounts/{accounts.usd}/transactions", params=params, headers=accounts.customer
    )
    assert_error(response, 422, "VALIDATION_ERROR", field_name)


async def test_boundary_values_are_accepted(bank: Bank, accounts: Accounts) -> None:
    """The refusals above are not over-eager: the edge of each rule still moves money."""
    accepted = [
        (
            "debit",
            accounts.customer,
            {
                "account_id": accounts.usd,
                "amount": "0.01",
                "currency": "USD",
                "description": "d" * 500,
                "reference_id": "r" * 255,
            },
        ),
        ("debit", accounts.customer, {"account_id": accounts.usd, "amount": 2, "currency": "usd"}),
        (
            "debit",
            accounts.customer,
            {"account_id": accounts.jpy, "amount": "15", "currency": "JPY"},
        ),
        (
            "credit",
            accounts.staff,
            {"account_id": accounts.jpy, "amount": "15.00", "currency": "JPY"},
        ),
        (
            "transfer",
            accounts.customer,
            {
                "source_account_id": accounts.usd,
                "destination_account_id": accounts.usd_other,
                "amount": "9.99",
                "currency": "USD",
            },
        ),
    ]
    for endpoint, headers, body in accepted:
        response = await bank.client.post(
            f"/api/v1/transactions/{endpoint}", json=body, headers=headers
        )
        assert response.status_code == 200, (endpoint, body, response.text)
    # 100.00 - 0.01 - 2 - 9.99 on USD; 1000 - 15 + 15 on JPY.
    assert await bank.balance(accounts.usd, accounts.customer) == Decimal("88.00")
    assert await bank.balance(accounts.jpy, accounts.customer) == Decimal("1000")
    raw_number = await bank.client.post(
        "/api/v1/transactions/debit",
        content=f'{{"account_id": "{accounts.usd}", "amount": 1.50, "currency": "USD"}}',
        headers={**accounts.customer, "Content-Type": "application/json"},
    )
    assert raw_number.status_code == 200, raw_number.text
    assert raw_number.json()["amount"] == "1.50"
    assert raw_number.json()["available_balance"] == "86.50"
