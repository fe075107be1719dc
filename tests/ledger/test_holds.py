"""Holds in the core, without a database: the pure decisions, then the use cases on the
in-memory store (authorize, capture, void, expiry; idempotency; who may; nothing changed by a
refusal; the events; the invariant ``available = current - open holds``)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import uuid4

import pytest

from banking.domain.errors import (
    AccountInactive,
    AccountNotFound,
    CurrencyMismatch,
    Forbidden,
    HoldAmountExceeded,
    HoldNotFound,
    HoldNotOpen,
    IdempotencyConflict,
    InsufficientFunds,
    ValidationFailed,
)
from banking.domain.records import (
    Account,
    CaptureRequest,
    Hold,
    HoldRequest,
    HoldStatus,
    TransactionStatus,
    TransactionType,
)
from banking.ledger.holds import HoldService, check_hold, plan_capture
from tests.ledger.world import DEBIT, make_world, request
from tests.support.ledger import Books, Core

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
WEEK = timedelta(hours=168)
D = Decimal


def a_hold(**changes: object) -> Hold:
    hold = Hold(
        hold_id=uuid4(),
        account_id=uuid4(),
        destination_account_id=None,
        amount=D("100.00"),
        captured_amount=D("0.00"),
        currency="USD",
        description=None,
        reference_id="order-1",
        status=HoldStatus.OPEN,
        expires_at=NOW + timedelta(hours=1),
        created_at=NOW,
        updated_at=NOW,
        closed_at=None,
        created_by=None,
    )
    return replace(hold, **changes)  # type: ignore[arg-type]


def holds_of(core: Core) -> HoldService:
    return HoldService(core.unit_of_work, duration_max_hours=168)


def ask_hold(account: Account, amount: str = "30.00", **changes: object) -> HoldRequest:
    return replace(  # type: ignore[arg-type]
        HoldRequest(account.account_id, D(amount), account.currency), **changes
    )


async def state(core: Core) -> tuple[Books, list[Hold]]:
    """Everything a refused request must leave as it was: the books and every hold."""
    async with core.unit_of_work.read() as store:
        holds = await store.list_holds(
            account_id=None, owner=None, status=None, after=None, limit=10_000
        )
    return await core.books(), holds


async def amounts(core: Core, account: Account) -> tuple[Decimal, Decimal]:
    balance = await core.balance(account)
    return balance.current_balance, balance.available_balance


# --- the pure decisions -------------------------------------------------------------------


def test_a_hold_expires_at_the_longest_duration_by_default() -> None:
    checked = check_hold(HoldRequest(uuid4(), D("1"), "usd"), now=NOW, duration_max=WEEK)
    assert (checked.expires_at, checked.currency, checked.amount) == (NOW + WEEK, "USD", D("1.00"))
    assert checked.reference_id.startswith("auto-")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"expires_at": NOW}, "expires_at"),
        ({"expires_at": NOW - timedelta(seconds=1)}, "expires_at"),
        ({"expires_at": NOW + WEEK + timedelta(seconds=1)}, "expires_at"),
        ({"expires_at": datetime(2026, 12, 3)}, "expires_at"),  # no time zone
        ({"amount": D("0")}, "amount"),
        ({"amount": D("1.001")}, "amount"),
        ({"currency": "XX"}, "currency"),
        ({"reference_id": ""}, "reference_id"),
        ({"description": "a\nb"}, "description"),
    ],
)
def test_a_bad_authorization_is_refused_with_its_field(
    changes: dict[str, object], field: str
) -> None:
    asked = replace(HoldRequest(uuid4(), D("10.00"), "USD"), **changes)  # type: ignore[arg-type]
    with pytest.raises(ValidationFailed) as raised:
        check_hold(asked, now=NOW, duration_max=WEEK)
    assert raised.value.field == field


def test_a_hold_cannot_send_to_its_own_account() -> None:
    account_id = uuid4()
    asked = HoldRequest(account_id, D("1"), "USD", destination_account_id=account_id)
    with pytest.raises(ValidationFailed) as raised:
        check_hold(asked, now=NOW, duration_max=WEEK)
    assert raised.value.field == "destination_account_id"


def test_the_fingerprint_ignores_a_default_expiry_but_not_an_asked_one() -> None:
    asked = HoldRequest(uuid4(), D("10"), "USD", reference_id="k")
    later = NOW + timedelta(minutes=5)
    assert (
        check_hold(asked, now=NOW, duration_max=WEEK).fingerprint
        == check_hold(asked, now=later, duration_max=WEEK).fingerprint
    )
    timed = replace(asked, expires_at=NOW + timedelta(hours=2))
    assert (
        check_hold(timed, now=NOW, duration_max=WEEK).fingerprint
        != check_hold(asked, now=NOW, duration_max=WEEK).fingerprint
    )


def test_a_partial_capture_keeps_the_hold_open_and_releases_nothing() -> None:
    plan = plan_capture(a_hold(), D("30"), final=False, now=NOW)
    assert (plan.amount, plan.captured_after, plan.released, plan.closes) == (
        D("30.00"),
        D("30.00"),
        D("0.00"),
        False,
    )


def test_a_final_capture_releases_the_rest_and_no_amount_captures_all() -> None:
    hold = a_hold(captured_amount=D("40.00"))
    final = plan_capture(hold, D("10"), final=True, now=NOW)
    assert (final.captured_after, final.released, final.closes) == (D("50.00"), D("50.00"), True)
    everything = plan_capture(hold, None, final=False, now=NOW)
    assert (everything.amount, everything.released, everything.closes) == (
        D("60.00"),
        D("0.00"),
        True,
    )


def test_a_capture_never_exceeds_what_is_left() -> None:
    with pytest.raises(HoldAmountExceeded):
        plan_capture(a_hold(captured_amount=D("99.99")), D("0.02"), final=False, now=NOW)


@pytest.mark.parametrize(
    "hold",
    [
        a_hold(status=HoldStatus.CAPTURED),
        a_hold(status=HoldStatus.VOIDED),
        a_hold(status=HoldStatus.EXPIRED),
        a_hold(expires_at=NOW),  # due, not yet released by the worker
    ],
)
def test_only_an_open_unexpired_hold_is_captured(hold: Hold) -> None:
    with pytest.raises(HoldNotOpen):
        plan_capture(hold, D("1"), final=False, now=NOW)


def test_a_capture_amount_keeps_the_currency_digits() -> None:
    with pytest.raises(ValidationFailed):
        plan_capture(a_hold(currency="JPY", amount=D("1000")), D("1.5"), final=False, now=NOW)


# --- the use cases on the in-memory store -------------------------------------------------


async def test_authorize_takes_available_only_and_capture_takes_current(core: Core) -> None:
    world = await make_world(core)
    holds = holds_of(core)

    held = await holds.authorize(world.alice, ask_hold(world.usd, "30.00", reference_id="o-1"))

    assert held.hold.status is HoldStatus.OPEN and not held.replayed
    assert await amounts(core, world.usd) == (D("100.00"), D("70.00"))
    captured = await holds.capture(world.alice, held.hold.hold_id, CaptureRequest(D("10.00")))
    assert captured.hold.captured_amount == D("10.00")
    assert captured.hold.status is HoldStatus.OPEN
    assert await amounts(core, world.usd) == (D("90.00"), D("70.00"))
    leg = captured.capture
    assert leg is not None
    assert (leg.transaction_type, leg.status, leg.amount, leg.hold_id) == (
        TransactionType.DEBIT,
        TransactionStatus.COMPLETED,
        D("10.00"),
        held.hold.hold_id,
    )
    assert leg.available_balance_after == D("70.00")
    closed = await holds.capture(world.alice, held.hold.hold_id, CaptureRequest(D("5"), final=True))
    assert closed.hold.status is HoldStatus.CAPTURED
    assert closed.hold.closed_at is not None
    # 15.00 taken in all, the other 15.00 released.
    assert await amounts(core, world.usd) == (D("85.00"), D("85.00"))
    assert (await core.reconcile()).clean


async def test_a_capture_with_a_destination_is_a_transfer(core: Core) -> None:
    world = await make_world(core)
    holds = holds_of(core)
    held = await holds.authorize(
        world.alice, ask_hold(world.usd, "40.00", destination_account_id=world.usd_bob.account_id)
    )

    captured = await holds.capture(world.alice, held.hold.hold_id, CaptureRequest())

    leg = captured.capture
    assert leg is not None and leg.transaction_type is TransactionType.TRANSFER_OUT
    assert leg.counterparty_account_id == world.usd_bob.account_id
    assert captured.hold.status is HoldStatus.CAPTURED
    assert await amounts(core, world.usd) == (D("60.00"), D("60.00"))
    assert await amounts(core, world.usd_bob) == (D("50.00"), D("50.00"))
    assert (await core.reconcile()).clean


async def test_holds_and_debits_share_what_is_available(core: Core) -> None:
    world = await make_world(core)
    holds = holds_of(core)
    await holds.authorize(world.alice, ask_hold(world.usd, "80.00"))

    with pytest.raises(InsufficientFunds):
        await core.movements.debit(world.alice, request(DEBIT, world.usd, "20.01"))
    await core.movements.debit(world.alice, request(DEBIT, world.usd, "20.00"))
    with pytest.raises(InsufficientFunds):
        await holds.authorize(world.alice, ask_hold(world.usd, "0.01"))

    assert await amounts(core, world.usd) == (D("80.00"), D("0.00"))
    assert (await core.reconcile()).clean


async def test_a_hold_may_use_the_overdraft_like_a_debit(core: Core) -> None:
    world = await make_world(core)
    holds = holds_of(core)
    await core.accounts.set_overdraft_limit(world.teller, world.usd.account_id, "50.00")

    await holds.authorize(world.alice, ask_hold(world.usd, "150.00"))

    assert await amounts(core, world.usd) == (D("100.00"), D("-50.00"))
    with pytest.raises(InsufficientFunds):
        await holds.authorize(world.alice, ask_hold(world.usd, "0.01"))
    assert (await core.reconcile()).clean


async def test_void_releases_the_rest_and_replays(core: Core) -> None:
    world = await make_world(core)
    holds = holds_of(core)
    held = await holds.authorize(world.alice, ask_hold(world.usd, "30.00"))
    await holds.capture(world.alice, held.hold.hold_id, CaptureRequest(D("10.00")))

    voided = await holds.void(world.alice, held.hold.hold_id)
    again = await holds.void(world.alice, held.hold.hold_id)

    assert voided.hold.status is HoldStatus.VOIDED and not voided.replayed
    assert again.replayed and again.hold == voided.hold
    assert await amounts(core, world.usd) == (D("90.00"), D("90.00"))
    with pytest.raises(HoldNotOpen):
        await holds.capture(world.alice, held.hold.hold_id, CaptureRequest(D("1.00")))
    assert (await core.reconcile()).clean


async def test_a_captured_hold_cannot_be_voided_or_captured(core: Core) -> None:
    world = await make_world(core)
    holds = holds_of(core)
    held = await holds.authorize(world.alice, ask_hold(world.usd, "30.00"))
    await holds.capture(world.alice, held.hold.hold_id, CaptureRequest())
    before = await state(core)

    with pytest.raises(HoldNotOpen):
        await holds.void(world.alice, held.hold.hold_id)
    with pytest.raises(HoldNotOpen):
        await holds.capture(world.alice, held.hold.hold_id, CaptureRequest(D("1.00")))

    assert await state(core) == before


async def test_expiry_releases_each_due_hold_exactly_once(core: Core) -> None:
    world = await make_world(core)
    holds = holds_of(core)
    soon = datetime.now(UTC) + timedelta(minutes=1)
    due = await holds.authorize(world.alice, ask_hold(world.usd, "30.00", expires_at=soon))
    later = await holds.authorize(world.alice, ask_hold(world.usd, "20.00"))
    after_expiry = soon + timedelta(seconds=1)

    passes = await asyncio.gather(*[holds.expire_due(now=after_expiry) for _ in range(5)])

    assert sum(passes) == 1
    assert (await holds.get(world.alice, due.hold.hold_id)).status is HoldStatus.EXPIRED
    assert (await holds.get(world.alice, later.hold.hold_id)).status is HoldStatus.OPEN
    assert await amounts(core, world.usd) == (D("100.00"), D("80.00"))
    assert await holds.expire_due(now=after_expiry) == 0
    event_types = (await core.books()).event_types()
    assert event_types.count("hold.expired") == 1
    assert (await core.reconcile()).clean


async def test_every_change_has_its_hold_event_and_balance_events(core: Core) -> None:
    world = await make_world(core)
    holds = holds_of(core)
    before = len((await core.books()).events)
    held = await holds.authorize(world.alice, ask_hold(world.usd, "30.00"))
    await holds.capture(world.alice, held.hold.hold_id, CaptureRequest(D("10.00")))
    await holds.void(world.alice, held.hold.hold_id)

    events = (await core.books()).events[before:]

    assert [event_type for _, _, event_type, _ in events] == [
        "hold.authorized",
        "balance.updated",
        "transaction.completed",
        "balance.updated",
        "hold.captured",
        "hold.voided",
        "balance.updated",
    ]
    assert {topic for topic, _, event_type, _ in events if event_type.startswith("hold.")} == {
        "banking.holds"
    }
    assert {key for _, key, _, _ in events} == {str(world.usd.account_id)}
    balances = [payload for _, _, event_type, payload in events if event_type == "balance.updated"]
    assert [(b["current_balance"], b["available_balance"]) for b in balances] == [
        ("100.00", "70.00"),
        ("90.00", "70.00"),
        ("90.00", "90.00"),
    ]
    captured = next(p for _, _, event_type, p in events if event_type == "hold.captured")
    assert (captured["hold_id"], captured["captured_amount"], captured["status"]) == (
        str(held.hold.hold_id),
        "10.00",
        "open",
    )
    leg = next(p for _, _, event_type, p in events if event_type == "transaction.completed")
    assert leg["hold_id"] == str(held.hold.hold_id)


# --- idempotency --------------------------------------------------------------------------


async def test_the_same_authorization_replays_and_other_parameters_conflict(core: Core) -> None:
    world = await make_world(core)
    holds = holds_of(core)
    first = await holds.authorize(world.alice, ask_hold(world.usd, "30.00", reference_id="k-1"))
    replayed = await holds.authorize(world.alice, ask_hold(world.usd, "30.00", reference_id="k-1"))
    before = await state(core)

    with pytest.raises(IdempotencyConflict):
        await holds.authorize(world.alice, ask_hold(world.usd, "31.00", reference_id="k-1"))

    assert replayed.replayed and replayed.hold == first.hold
    assert await state(core) == before
    assert await amounts(core, world.usd) == (D("100.00"), D("70.00"))


async def test_concurrent_duplicates_hold_once(core: Core) -> None:
    world = await make_world(core)
    holds = holds_of(core)
    results = await asyncio.gather(
        *[
            holds.authorize(world.alice, ask_hold(world.usd, "10.00", reference_id="dup"))
            for _ in range(5)
        ]
    )
    assert len({result.hold.hold_id for result in results}) == 1
    assert [result.replayed for result in results].count(False) == 1
    assert await amounts(core, world.usd) == (D("100.00"), D("90.00"))


async def test_a_capture_key_replays_the_capture_and_conflicts_elsewhere(core: Core) -> None:
    world = await make_world(core)
    holds = holds_of(core)
    held = await holds.authorize(world.alice, ask_hold(world.usd, "30.00"))
    hold_id = held.hold.hold_id
    first = await holds.capture(world.alice, hold_id, CaptureRequest(D("10"), reference_id="c-1"))
    again = await holds.capture(world.alice, hold_id, CaptureRequest(D("10"), reference_id="c-1"))
    before = await state(core)

    with pytest.raises(IdempotencyConflict):
        await holds.capture(world.alice, hold_id, CaptureRequest(D("11"), reference_id="c-1"))
    # The capture's key is its leg's key on the account: a debit cannot take it either.
    with pytest.raises(IdempotencyConflict):
        await core.movements.debit(
            world.alice, request(DEBIT, world.usd, "1.00", reference_id="c-1")
        )

    assert again.replayed and again.capture == first.capture
    assert await state(core) == before
    assert await amounts(core, world.usd) == (D("90.00"), D("70.00"))


# --- who may --------------------------------------------------------------------------------


async def test_another_customer_cannot_see_or_change_a_hold(core: Core) -> None:
    world = await make_world(core)
    holds = holds_of(core)
    held = await holds.authorize(world.alice, ask_hold(world.usd, "30.00"))
    hold_id = held.hold.hold_id
    before = await state(core)

    with pytest.raises(HoldNotFound):
        await holds.get(world.bob, hold_id)
    with pytest.raises(HoldNotFound):
        await holds.capture(world.bob, hold_id, CaptureRequest())
    with pytest.raises(HoldNotFound):
        await holds.void(world.bob, hold_id)
    with pytest.raises(AccountNotFound):
        await holds.authorize(world.bob, ask_hold(world.usd, "1.00"))
    with pytest.raises(AccountNotFound):
        await holds.page(world.bob, account_id=world.usd.account_id)
    assert (await holds.page(world.bob)).holds == []

    assert await state(core) == before


async def test_staff_act_on_any_hold_and_auditors_only_read(core: Core) -> None:
    world = await make_world(core)
    holds = holds_of(core)
    held = await holds.authorize(world.teller, ask_hold(world.usd, "30.00"))
    hold_id = held.hold.hold_id

    assert (await holds.get(world.auditor, hold_id)).hold_id == hold_id
    assert [hold.hold_id for hold in (await holds.page(world.auditor)).holds] == [hold_id]
    before = await state(core)
    with pytest.raises(Forbidden):
        await holds.void(world.auditor, hold_id)
    with pytest.raises(Forbidden):
        await holds.authorize(world.auditor, ask_hold(world.usd, "1.00"))
    assert await state(core) == before
    assert (await holds.void(world.admin, hold_id)).hold.status is HoldStatus.VOIDED


async def test_a_missing_hold_is_not_found(core: Core) -> None:
    world = await make_world(core)
    with pytest.raises(HoldNotFound):
        await holds_of(core).capture(world.teller, uuid4(), CaptureRequest())


# --- refusals change nothing ---------------------------------------------------------------


async def test_refused_authorizations_change_nothing(core: Core) -> None:
    world = await make_world(core)
    holds = holds_of(core)
    await core.accounts.set_active(world.teller, world.usd_bob.account_id, is_active=False)
    before = await state(core)

    with pytest.raises(InsufficientFunds):
        await holds.authorize(world.alice, ask_hold(world.usd, "100.01"))
    with pytest.raises(CurrencyMismatch):
        await holds.authorize(world.alice, ask_hold(world.usd, "1.00", currency="JPY"))
    with pytest.raises(AccountNotFound):
        await holds.authorize(world.alice, ask_hold(world.usd, "1", destination_account_id=uuid4()))
    with pytest.raises(CurrencyMismatch):
        await holds.authorize(
            world.alice, ask_hold(world.usd, "1", destination_account_id=world.jpy_bob.account_id)
        )
    with pytest.raises(AccountInactive):
        await holds.authorize(
            world.alice, ask_hold(world.usd, "1", destination_account_id=world.usd_bob.account_id)
        )
    with pytest.raises(ValidationFailed):
        await holds.authorize(world.alice, ask_hold(world.usd, "-1"))

    assert await state(core) == before


async def test_refused_captures_change_nothing(core: Core) -> None:
    world = await make_world(core)
    holds = holds_of(core)
    held = await holds.authorize(world.alice, ask_hold(world.usd, "30.00"))
    hold_id = held.hold.hold_id
    before = await state(core)

    with pytest.raises(HoldAmountExceeded):
        await holds.capture(world.alice, hold_id, CaptureRequest(D("30.01")))
    with pytest.raises(ValidationFailed):
        await holds.capture(world.alice, hold_id, CaptureRequest(D("0")))
    with pytest.raises(ValidationFailed):
        await holds.capture(world.alice, hold_id, CaptureRequest(D("1.001")))

    assert await state(core) == before


async def test_a_frozen_account_cannot_capture_but_can_void(core: Core) -> None:
    world = await make_world(core)
    holds = holds_of(core)
    held = await holds.authorize(world.alice, ask_hold(world.usd, "30.00"))
    await core.accounts.set_active(world.teller, world.usd.account_id, is_active=False)
    before = await state(core)

    with pytest.raises(AccountInactive):
        await holds.capture(world.alice, held.hold.hold_id, CaptureRequest())

    assert await state(core) == before
    assert (await holds.void(world.alice, held.hold.hold_id)).hold.status is HoldStatus.VOIDED
    assert await amounts(core, world.usd) == (D("100.00"), D("100.00"))


# --- reconcile ------------------------------------------------------------------------------


async def test_reconcile_names_an_available_balance_that_forgets_a_hold(core: Core) -> None:
    world = await make_world(core)
    holds = holds_of(core)
    await holds.authorize(world.alice, ask_hold(world.usd, "30.00"))
    report = await core.reconcile()
    assert report.clean, report.problems
    assert report.currencies["USD"]["open_holds"] == "30.00"

    # Break the books behind the ledger's back: the hold's 30.00 back in available.
    async def corrupt(store: object) -> None:
        await store.adjust_balance(  # type: ignore[attr-defined]
            world.usd.account_id,
            current_change=D("0"),
            available_change=D("30.00"),
            at=datetime.now(UTC),
        )

    await core.unit_of_work.run(corrupt)
    report = await core.reconcile()
    assert not report.clean
    assert any(str(world.usd.account_id) in problem for problem in report.problems)
