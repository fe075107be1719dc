"""The checks every movement passes before it touches the books: amounts and their minor
digits, currencies, description and reference limits, the accounts named. A refused request
changes nothing, on the synchronous path and when submitted for later alike."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from uuid import uuid4

import pytest

from banking.domain.errors import (
    AccountNotFound,
    BankingError,
    CurrencyMismatch,
    ValidationFailed,
)
from banking.domain.records import TransactionStatus, TransactionType
from tests.ledger.world import KINDS, PATHS, TRANSFER, Path, World, ask, request
from tests.support.ledger import Core


@dataclass(frozen=True)
class Bad:
    error: type[BankingError]
    field: str | None
    message: str  # what the message starts with
    amount: str = "1.00"
    currency: str | None = None  # the account's unless told
    description: str | None = None
    reference_id: str | None = None
    in_yen: bool = False  # on the JPY accounts instead of the USD ones


def _amount(amount: str, message: str, *, in_yen: bool = False) -> Bad:
    return Bad(ValidationFailed, "amount", message, amount=amount, in_yen=in_yen)


def _currency(currency: str, message: str = "currency must be a 3-letter ISO 4217 code") -> Bad:
    return Bad(ValidationFailed, "currency", message, currency=currency)


def _mismatch(currency: str, *, in_yen: bool = False) -> Bad:
    held = "JPY" if in_yen else "USD"
    message = f"account holds {held}, request is in {currency.upper()}"
    return Bad(CurrencyMismatch, None, message, currency=currency, in_yen=in_yen)


def _description(description: str, message: str) -> Bad:
    return Bad(ValidationFailed, "description", message, description=description)


def _reference(reference_id: str) -> Bad:
    message = "reference_id must be 1 to 255 printable characters"
    return Bad(ValidationFailed, "reference_id", message, reference_id=reference_id)


CONTROL = "description must not contain control characters"
TOO_LONG = "description is longer than 500 characters"
USD_DIGITS = "amount has more than 2 decimal places for USD"
JPY_DIGITS = "amount has more than 0 decimal places for JPY"

BAD = {
    # --- minor digits of the currency ---
    "usd-three-decimals": _amount("1.001", USD_DIGITS),
    "usd-half-a-cent": _amount("0.005", USD_DIGITS),
    "usd-four-decimals": _amount("10.0001", USD_DIGITS),
    "jpy-half-a-yen": _amount("1.5", JPY_DIGITS, in_yen=True),
    "jpy-a-tenth": _amount("0.1", JPY_DIGITS, in_yen=True),
    "jpy-with-cents": _amount("100.01", JPY_DIGITS, in_yen=True),
    # --- currency codes ---
    "currency-unsupported": _currency("XXX", "unsupported currency 'XXX'"),
    "currency-unsupported-lower-case": _currency("xts", "unsupported currency 'XTS'"),
    "currency-two-letters": _currency("US"),
    "currency-four-letters": _currency("USDD"),
    "currency-empty": _currency(""),
    "currency-symbol": _currency("U$D"),
    "currency-digits": _currency("840"),
    "currency-non-ascii-letter": _currency("ÜSD"),
    "currency-with-space": _currency(" USD"),
    # --- currency of the account ---
    "currency-euro-on-dollars": _mismatch("EUR"),
    "currency-yen-on-dollars": _mismatch("JPY"),
    "currency-lower-case-euro-on-dollars": _mismatch("eur"),
    "currency-dollars-on-yen": _mismatch("USD", in_yen=True),
    # --- description ---
    "description-501-characters": _description("d" * 501, TOO_LONG),
    "description-nul": _description("rent\x00march", CONTROL),
    "description-newline": _description("rent\nmarch", CONTROL),
    "description-tab": _description("rent\tmarch", CONTROL),
    "description-escape": _description("\x1b[31mred", CONTROL),
    "description-delete": _description("rent\x7f", CONTROL),
    "description-line-separator": _description("rent\u2028march", CONTROL),
    "description-lone-surrogate": _description("rent\ud800", CONTROL),
    # --- reference_id (the idempotency key) ---
    "reference-empty": _reference(""),
    "reference-256-characters": _reference("r" * 256),
    "reference-newline": _reference("ref\n1"),
    "reference-nul": _reference("ref\x001"),
    "reference-tab": _reference("ref\t1"),
    "reference-delete": _reference("ref\x7f"),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(BAD))
async def test_a_bad_request_is_refused_and_changes_nothing(
    core: Core, world: World, name: str, kind: TransactionType, path: Path
) -> None:
    bad = BAD[name]
    account = world.jpy if bad.in_yen else world.usd
    asked = request(
        kind,
        account,
        bad.amount,
        destination=world.counterpart(account),
        currency=bad.currency,
        description=bad.description,
        reference_id=bad.reference_id,
    )
    before = await core.books()

    with pytest.raises(bad.error) as refused:
        await ask(core, path, world.mover(kind), kind, asked)

    assert refused.value.code == bad.error.code
    assert refused.value.message.startswith(bad.message), refused.value.message
    if bad.field is not None:
        assert isinstance(refused.value, ValidationFailed)
        assert refused.value.field == bad.field
    assert await core.books() == before


# The amount itself: more than zero, a finite number, below 10^16. The doors parse amounts
# with ``parse_amount`` and refuse these; the core is handed a ``Decimal`` and must refuse
# them too (docs/architecture.md: ``checks.py`` validates the amount).
AMOUNTS = {
    "zero": "0",
    "zero-cents": "0.00",
    "negative": "-1.00",
    "not-a-number": "NaN",
    "infinity": "Infinity",
    "ten-to-the-16": "10000000000000000",
    "ten-to-the-20": "1E+20",
}


@pytest.mark.parametrize(
    ("name", "kind"),
    [pytest.param(name, kind, id=f"{name}-{kind.value}") for name in AMOUNTS for kind in KINDS],
)
async def test_an_amount_outside_the_ledgers_range_is_refused(
    core: Core, world: World, name: str, kind: TransactionType
) -> None:
    asked = request(kind, world.usd, AMOUNTS[name], destination=world.usd_bob)
    before = await core.books()

    with pytest.raises(ValidationFailed) as refused:
        await ask(core, Path.SYNC, world.mover(kind), kind, asked)

    assert refused.value.field == "amount"
    assert await core.books() == before


@dataclass(frozen=True)
class Edge:
    amount: str = "1.00"
    currency: str | None = None
    description: str | None = None
    reference_id: str | None = None
    in_yen: bool = False
    stored_amount: str = "1.00"


EDGES = {
    "one-cent": Edge(amount="0.01", stored_amount="0.01"),
    "trailing-zeros": Edge(amount="2.5000", stored_amount="2.50"),
    "lower-case-currency": Edge(currency="usd"),
    "mixed-case-currency": Edge(currency="uSd"),
    "description-500-characters": Edge(description="d" * 500),
    "description-unicode": Edge(description="Café, loyer ☕ 東京"),
    "reference-255-characters": Edge(reference_id="r" * 255),
    "reference-unicode-and-spaces": Edge(reference_id="réf ü 東京 #1"),
    "yen-whole": Edge(amount="15", in_yen=True, stored_amount="15"),
    "yen-with-zero-cents": Edge(amount="15.00", in_yen=True, stored_amount="15"),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(EDGES))
async def test_the_edge_of_each_rule_is_accepted(
    core: Core, world: World, name: str, kind: TransactionType, path: Path
) -> None:
    edge = EDGES[name]
    account = world.jpy if edge.in_yen else world.usd
    asked = request(
        kind,
        account,
        edge.amount,
        destination=world.counterpart(account),
        currency=edge.currency,
        description=edge.description,
        reference_id=edge.reference_id,
    )
    before = await core.available(account)

    result = await ask(core, path, world.mover(kind), kind, asked)

    leg = result.transaction
    assert leg.status is (
        TransactionStatus.PENDING if path is Path.SUBMIT else TransactionStatus.COMPLETED
    )
    assert leg.amount == Decimal(edge.stored_amount)
    assert leg.currency == account.currency
    assert leg.description == edge.description
    if edge.reference_id is not None:
        assert leg.reference_id == edge.reference_id
    moved = Decimal(0) if path is Path.SUBMIT else Decimal(edge.stored_amount)
    sign = 1 if kind is TransactionType.CREDIT else -1
    assert await core.available(account) == before + sign * moved


# --- the accounts named ---------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", KINDS)
async def test_an_unknown_account_is_not_found_and_changes_nothing(
    core: Core, world: World, kind: TransactionType, path: Path
) -> None:
    before = await core.books()

    with pytest.raises(AccountNotFound) as refused:
        await ask(
            core,
            path,
            world.mover(kind),
            kind,
            request(kind, uuid4(), "1.00", destination=world.usd_bob),
        )

    assert refused.value.message == "account not found"
    assert await core.books() == before


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        ("unknown-destination", AccountNotFound, "destination account not found"),
        (
            "destination-in-another-currency",
            CurrencyMismatch,
            "account holds JPY, request is in USD",
        ),
        (
            "destination-is-the-source",
            ValidationFailed,
            "source and destination accounts must be different",
        ),
    ],
)
async def test_a_transfer_needs_another_account_in_its_currency(
    core: Core, world: World, name: str, error: type[BankingError], message: str, path: Path
) -> None:
    destination = {
        "unknown-destination": uuid4(),
        "destination-in-another-currency": world.jpy_bob.account_id,
        "destination-is-the-source": world.usd.account_id,
    }[name]
    before = await core.books()

    with pytest.raises(error) as refused:
        await ask(
            core,
            path,
            world.alice,
            TRANSFER,
            request(TRANSFER, world.usd, "1.00", destination=destination),
        )

    assert refused.value.message == message
    if isinstance(refused.value, ValidationFailed):
        assert refused.value.field == "destination_account_id"
    assert await core.books() == before
