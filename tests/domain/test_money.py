"""Unit tests of exact money parsing: no database, no float."""

from __future__ import annotations

from decimal import Decimal

import pytest

from banking.domain.errors import CurrencyMismatch, ValidationFailed
from banking.domain.money import (
    check_amount_for_currency,
    format_amount,
    normalize_currency,
    parse_amount,
    require_same_currency,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("10", Decimal("10")),
        ("0.01", Decimal("0.01")),
        (1000, Decimal("1000")),
        ("9999999999999999.99", Decimal("9999999999999999.99")),
        ("  5.5 ", Decimal("5.5")),
    ],
)
def test_parse_amount_accepts_plain_decimals(raw: object, expected: Decimal) -> None:
    assert parse_amount(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "0",
        "0.00",
        "-1",
        "1e3",
        "0.1e1",
        "NaN",
        "Infinity",
        "",
        "1,00",
        "10000000000000000",
        10**16,
        0.1,
        True,
        None,
        [],
        "١٢",
    ],
)
def test_parse_amount_refuses_everything_else(raw: object) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_amount(raw)
    assert caught.value.field == "amount"


def test_minor_digits_are_enforced_per_currency() -> None:
    assert check_amount_for_currency(Decimal("1.5"), "USD") == Decimal("1.50")
    assert check_amount_for_currency(Decimal("100"), "JPY") == Decimal("100.00")
    with pytest.raises(ValidationFailed):
        check_amount_for_currency(Decimal("1.001"), "USD")
    with pytest.raises(ValidationFailed):
        check_amount_for_currency(Decimal("1.5"), "JPY")


def test_currency_codes() -> None:
    assert normalize_currency("usd") == "USD"
    for bad in ("US", "XXX", "12A", 840):
        with pytest.raises(ValidationFailed):
            normalize_currency(bad)
    with pytest.raises(CurrencyMismatch):
        require_same_currency("USD", "EUR")


def test_tenths_add_up_exactly() -> None:
    total = sum((parse_amount("0.1") for _ in range(10)), Decimal(0))
    assert format_amount(total) == "1.00"
