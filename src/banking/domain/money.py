"""Exact money: parsing, currency minor digits and limits. Amounts are ``Decimal`` only.

Nothing in this module (or anywhere in the project) turns an amount into a float: text is
parsed straight into ``Decimal`` and checked against the currency's minor digits.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Final

from banking.domain.errors import CurrencyMismatch, ValidationFailed

# ISO 4217 currencies the ledger supports, with their minor digits. The schema stores two
# decimal places (NUMERIC(18,2)), so only currencies with 0 or 2 minor digits are offered.
CURRENCY_MINOR_DIGITS: Final[dict[str, int]] = {
    "AUD": 2, "BRL": 2, "CAD": 2, "CHF": 2, "CNY": 2, "CZK": 2, "DKK": 2, "EUR": 2,
    "GBP": 2, "HKD": 2, "HUF": 2, "IDR": 2, "ILS": 2, "INR": 2, "ISK": 0, "JPY": 0,
    "KRW": 0, "MXN": 2, "NOK": 2, "NZD": 2, "PLN": 2, "SEK": 2, "SGD": 2, "TRY": 2,
    "USD": 2, "VND": 0, "ZAR": 2,
}  # fmt: skip

# NUMERIC(18,2) holds 16 integer digits: every amount and every balance stays below 10^16.
AMOUNT_LIMIT_EXCLUSIVE: Final = Decimal(10) ** 16

# Plain decimal notation only: digits, optional fraction. No sign, exponent, NaN or Infinity.
_DECIMAL_TEXT = re.compile(r"^[0-9]{1,20}(\.[0-9]{1,20})?$")


def minor_digits(currency: str) -> int:
    """Minor digits of a supported ISO 4217 currency code."""
    digits = CURRENCY_MINOR_DIGITS.get(currency)
    if digits is None:
        raise ValidationFailed(f"unsupported currency {currency!r}", field="currency")
    return digits


def normalize_currency(currency: object) -> str:
    """Validate a currency code and return it upper-cased."""
    if not isinstance(currency, str) or not re.fullmatch(r"[A-Za-z]{3}", currency):
        raise ValidationFailed("currency must be a 3-letter ISO 4217 code", field="currency")
    code = currency.upper()
    minor_digits(code)
    return code


def parse_amount(raw: object) -> Decimal:
    """Parse an amount given as decimal text or an integer, exactly, without a float step.

    Accepts ``"12.50"``, ``12`` and JSON number lexemes (kept as text by the REST door). Rejects
    floats, booleans, exponents, signs, NaN and Infinity, zero, and anything at or above 10^16.
    """
    amount = parse_non_negative(raw, "amount")
    if amount <= 0:
        raise ValidationFailed("amount must be greater than zero", field="amount")
    return amount


def parse_non_negative(raw: object, field: str) -> Decimal:
    """``parse_amount``'s rules, zero allowed: a limit (an overdraft limit of 0 is none)."""
    if isinstance(raw, bool | float):
        raise ValidationFailed(f"{field} must be a decimal string or integer", field=field)
    if isinstance(raw, int):
        text = str(raw)
    elif isinstance(raw, Decimal):
        text = format(raw, "f") if raw.is_finite() else "NaN"
    elif isinstance(raw, str):
        text = raw.strip()
    else:
        raise ValidationFailed(f"{field} must be a decimal string", field=field)
    if text.startswith("-"):
        raise ValidationFailed(f"{field} must not be negative", field=field)
    if not _DECIMAL_TEXT.fullmatch(text):
        raise ValidationFailed(
            f'{field} must be plain decimal notation such as "10.00"', field=field
        )
    try:
        amount = Decimal(text)
    except InvalidOperation as error:  # the regex makes this unreachable; kept as a guard
        raise ValidationFailed(f"{field} is not a number", field=field) from error
    if amount >= AMOUNT_LIMIT_EXCLUSIVE:
        raise ValidationFailed(f"{field} must be below 10^16", field=field)
    return amount


def check_amount_for_currency(amount: Decimal, currency: str, field: str = "amount") -> Decimal:
    """Return ``amount`` quantized to the currency's minor digits, refusing extra precision."""
    digits = minor_digits(currency)
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > digits:
        raise ValidationFailed(
            f"{field} has more than {digits} decimal places for {currency}", field=field
        )
    return amount.quantize(Decimal(1).scaleb(-2))


def format_amount(amount: Decimal) -> str:
    """Canonical text of a stored amount: always two decimal places (``"900.00"``)."""
    return format(amount.quantize(Decimal("0.01")), "f")


def require_same_currency(account_currency: str, requested_currency: str) -> None:
    """Refuse a movement whose currency is not the account's."""
    if account_currency != requested_currency:
        raise CurrencyMismatch(
            f"account holds {account_currency}, request is in {requested_currency}"
        )
