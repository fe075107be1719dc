"""Holds: authorize an amount now, then capture it (at once or in parts) or void it.

The balances (DESIGN.md invariant 3, ``available = current - open holds``):

- authorizing takes the amount from ``available_balance`` only, with a debit's conditional
  rule (``available + overdraft_limit >= amount``), so holds, debits and transfers racing on
  one account never take available below minus its overdraft limit (``INSUFFICIENT_FUNDS``);
- capturing X takes X from ``current_balance`` (available was taken at authorization): a
  completed debit leg of X (with a destination, a transfer of X: the destination's current
  and available grow by X), recorded like any movement, with its ``hold_id``;
- closing a hold (captured in full, a capture with ``final``, a void, the expiry) gives the
  remainder ``amount - captured_amount`` back to ``available_balance``.

So ``available = current - sum(amount - captured_amount of open holds)`` at every commit, and
``banking reconcile`` checks it. Debits and transfers need no change: they already take only
what is available.

Lock order, the one every movement uses, so nothing deadlocks: the balance rows of the hold's
accounts in account-id order, then the hold row (``FOR UPDATE`` on PostgreSQL; SQLite's unit
of work holds its single write lock). The hold is re-read under its lock, so concurrent
captures of one hold are decided one after the other on its latest state: together they never
capture more than the held amount (a ``CHECK`` of the table says it too).

Idempotency: authorizing with a used ``reference_id`` of the account replays the hold (same
parameters) or is an ``IDEMPOTENCY_CONFLICT``; a capture's optional ``reference_id`` is its
leg's key, exactly as a debit's; voiding a voided hold replays it. The pure decisions
(``check_hold``, ``plan_capture``) need no store and are unit-tested alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final
from uuid import UUID, uuid4

from banking.domain.clock import utc_now
from banking.domain.errors import (
    AccountInactive,
    AccountNotFound,
    HoldAmountExceeded,
    HoldNotFound,
    HoldNotOpen,
    IdempotencyConflict,
    InsufficientFunds,
    InvariantViolated,
    ReferenceAlreadyUsed,
    ValidationFailed,
)
from banking.domain.money import (
    check_amount_for_currency,
    format_amount,
    normalize_currency,
    parse_amount,
    require_same_currency,
)
from banking.domain.records import (
    Balance,
    BalanceAfter,
    CaptureRequest,
    Hold,
    HoldChange,
    HoldChanged,
    HoldPage,
    HoldRequest,
    HoldResult,
    HoldStatus,
    TransactionStatus,
    TransactionType,
)
from banking.domain.roles import Actor
from banking.ledger.access import require_can_debit, require_visible
from banking.ledger.checks import (
    CheckedMovement,
    checked_description,
    checked_reference,
)
from banking.ledger.decisions import BALANCE_LIMIT_REASON
from banking.ledger.history import decode_cursor, in_utc, keyset_cursor, page_size_within
from banking.ledger.ports import BalanceCache, LedgerStore, NoBalanceCache, UnitOfWork
from banking.ledger.recording import balances_after, new_leg, record, transfer_legs

_ZERO: Final = Decimal("0.00")
# How many due holds one expiry pass releases at most (the rest wait for the next pass).
EXPIRY_BATCH_MAX: Final = 500
HOLD_NOT_FOUND_MESSAGE: Final = "hold not found"


@dataclass(frozen=True, slots=True)
class CheckedHold:
    """An authorization after validation: what the hold and its fingerprint are made of."""

    account_id: UUID
    destination_account_id: UUID | None
    amount: Decimal
    currency: str
    description: str | None
    reference_id: str
    expires_at: datetime
    # Same key, other fingerprint: a conflict. The expiry is left out when it was not asked
    # for (its default moves with the clock, and a retry must still replay).
    fingerprint: str


@dataclass(frozen=True, slots=True)
class CapturePlan:
    """What one capture does to a hold: the amount taken, the hold's captured total after it,
    the remainder given back to available (when it closes the hold), and whether it closes."""

    amount: Decimal
    captured_after: Decimal
    released: Decimal
    closes: bool


def check_hold(request: HoldRequest, *, now: datetime, duration_max: timedelta) -> CheckedHold:
    """Validate an authorization (no store): the amount in the currency's digits, the texts,
    a destination other than the account, and an expiry after ``now`` and at most
    ``duration_max`` after it (``now + duration_max`` when none is given)."""
    currency = normalize_currency(request.currency)
    amount = check_amount_for_currency(parse_amount(request.amount), currency)
    if request.destination_account_id == request.account_id:
        raise ValidationFailed(
            "the destination must be another account", field="destination_account_id"
        )
    latest = now + duration_max
    expires_at = in_utc(request.expires_at, "expires_at") or latest
    if expires_at <= now:
        raise ValidationFailed("expires_at must be in the future", field="expires_at")
    if expires_at > latest:
        hours = int(duration_max.total_seconds() // 3600)
        raise ValidationFailed(
            f"expires_at must be at most {hours} hours from now", field="expires_at"
        )
    description = checked_description(request.description)
    fingerprint = _fingerprint(
        "hold",
        str(request.account_id),
        str(request.destination_account_id or ""),
        format_amount(amount),
        currency,
        description or "",
        expires_at.isoformat() if request.expires_at is not None else "",
    )
    return CheckedHold(
        request.account_id,
        request.destination_account_id,
        amount,
        currency,
        description,
        checked_reference(request.reference_id),
        expires_at,
        fingerprint,
    )


def plan_capture(hold: Hold, amount: Decimal | None, *, final: bool, now: datetime) -> CapturePlan:
    """Decide one capture of ``hold`` (no store): the rest of the hold when no amount is given;
    ``HOLD_NOT_OPEN`` for a closed or expired hold, ``HOLD_AMOUNT_EXCEEDED`` above what is
    left. Captured in full, or with ``final``, the hold closes and its remainder is released."""
    require_open(hold, now=now)
    remaining = hold.amount - hold.captured_amount
    if amount is None:
        taken = remaining
    else:
        taken = check_amount_for_currency(parse_amount(amount), hold.currency)
        if taken > remaining:
            raise HoldAmountExceeded(
                f"the capture of {format_amount(taken)} exceeds the {format_amount(remaining)} "
                f"left on the hold",
                hold_id=str(hold.hold_id),
            )
    captured_after = hold.captured_amount + taken
    closes = final or captured_after == hold.amount
    return CapturePlan(
        taken, captured_after, hold.amount - captured_after if closes else _ZERO, closes
    )


def require_open(hold: Hold, *, now: datetime) -> None:
    """``HOLD_NOT_OPEN`` unless the hold is open and not past its expiry."""
    if hold.status is not HoldStatus.OPEN:
        raise HoldNotOpen(f"the hold is {hold.status.value}", hold_id=str(hold.hold_id))
    if hold.expires_at <= now:
        raise HoldNotOpen("the hold has expired", hold_id=str(hold.hold_id))


def capture_fingerprint(hold_id: UUID, request: CaptureRequest) -> str:
    amount = "" if request.amount is None else format_amount(parse_amount(request.amount))
    return _fingerprint("capture", str(hold_id), amount, "final" if request.final else "")


def _fingerprint(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def closed(hold: Hold, status: HoldStatus, at: datetime) -> Hold:
    return replace(hold, status=status, updated_at=at, closed_at=at)


class HoldService:
    """Implements ``banking.ledger.ports.Holds`` on a unit of work. Each change is one unit of
    work: the balances, the hold, its capture's legs and journal, and the events commit
    together. ``balances`` (the balance cache) is told of every changed balance after the
    commit; ``on_expired`` counts the holds an expiry pass released."""

    def __init__(
        self,
        unit_of_work: UnitOfWork,
        *,
        duration_max_hours: int,
        page_size_default: int = 50,
        page_size_max: int = 200,
        balances: BalanceCache | None = None,
        on_expired: Callable[[int], None] | None = None,
    ) -> None:
        self._unit_of_work = unit_of_work
        self.duration_max = timedelta(hours=duration_max_hours)
        self.page_size_default = page_size_default
        self.page_size_max = page_size_max
        self._balances: BalanceCache = balances or NoBalanceCache()
        self._on_expired = on_expired

    # --- authorize ---------------------------------------------------------------------------

    async def authorize(
        self, actor: Actor, request: HoldRequest, *, trace_id: str | None = None
    ) -> HoldResult:
        """Hold ``amount`` of the account's available balance until ``expires_at``."""
        checked = check_hold(request, now=utc_now(), duration_max=self.duration_max)

        async def work(store: LedgerStore) -> HoldResult:
            ids = [checked.account_id] + (
                [checked.destination_account_id] if checked.destination_account_id else []
            )
            found = {account.account_id: account for account in await store.get_accounts(ids)}
            account = require_can_debit(actor, found.get(checked.account_id))
            require_same_currency(account.currency, checked.currency)
            await store.lock_balances([checked.account_id])
            replay = await _replayed_hold(store, checked)
            if replay is not None:
                return replay
            if checked.destination_account_id is not None:
                destination = found.get(checked.destination_account_id)
                if destination is None:
                    raise AccountNotFound("destination account not found")
                require_same_currency(destination.currency, checked.currency)
                _require_active(destination.account_number, destination.is_active)
            _require_active(account.account_number, account.is_active)
            now = utc_now()
            balance = await store.apply_hold(checked.account_id, checked.amount, now)
            if balance is None:
                raise InsufficientFunds("insufficient funds")
            hold = Hold(
                hold_id=uuid4(),
                account_id=checked.account_id,
                destination_account_id=checked.destination_account_id,
                amount=checked.amount,
                captured_amount=_ZERO,
                currency=checked.currency,
                description=checked.description,
                reference_id=checked.reference_id,
                status=HoldStatus.OPEN,
                expires_at=checked.expires_at,
                created_at=now,
                updated_at=now,
                closed_at=None,
                created_by=actor.user_id,
            )
            await store.insert_hold(hold, fingerprint=checked.fingerprint)
            await store.add_events([HoldChanged(hold, HoldChange.AUTHORIZED, (balance,), trace_id)])
            return HoldResult(hold, replayed=False)

        try:
            result = await self._unit_of_work.run(work)
        except ReferenceAlreadyUsed:
            # A concurrent duplicate committed first: answer what it stored.
            result = await self._unit_of_work.run(lambda store: _replay_or_conflict(store, checked))
        await self._changed(result)
        return result

    # --- read --------------------------------------------------------------------------------

    async def get(self, actor: Actor, hold_id: UUID) -> Hold:
        """One hold, as its account's reader sees it (another customer's: ``HOLD_NOT_FOUND``)."""

        # On the primary, not a replica: the hold changes were not marked as the caller's
        # writes (``RecentWriters``), so a replica could still miss a hold just authorized.
        async with self._unit_of_work.read() as store:
            return await _visible_hold(store, actor, hold_id)

    async def page(
        self,
        actor: Actor,
        *,
        account_id: UUID | None = None,
        status: HoldStatus | None = None,
        cursor: str | None = None,
        page_size: int | None = None,
    ) -> HoldPage:
        """Holds newest first: of one account (its reader), or of every account the caller
        may read (a customer's own; staff and auditors: all)."""
        size = page_size_within(
            page_size, default=self.page_size_default, maximum=self.page_size_max
        )
        after = decode_cursor(cursor) if cursor else None

        async with self._unit_of_work.read() as store:  # the primary, as ``get``
            if account_id is not None:
                require_visible(actor, await store.get_account(account_id))
            owner = None if actor.reads_everything else actor.user_id
            found = await store.list_holds(
                account_id=account_id, owner=owner, status=status, after=after, limit=size + 1
            )
        page = found[:size]
        next_cursor = (
            keyset_cursor(page[-1].created_at, page[-1].hold_id)
            if len(found) > size and page
            else None
        )
        return HoldPage(page, next_cursor)

    # --- capture -----------------------------------------------------------------------------

    async def capture(
        self,
        actor: Actor,
        hold_id: UUID,
        request: CaptureRequest,
        *,
        trace_id: str | None = None,
    ) -> HoldResult:
        """Capture part or all of an open hold: a completed debit (or transfer to the hold's
        destination) of the captured amount, recorded like any movement with its ``hold_id``."""
        fingerprint = capture_fingerprint(hold_id, request)
        reference_id = checked_reference(request.reference_id)

        async def work(store: LedgerStore) -> HoldResult:
            hold = await self._locked_for_change(store, actor, hold_id)
            replay = await _replayed_capture(store, hold, reference_id, fingerprint)
            if replay is not None:
                return replay
            now = utc_now()
            plan = plan_capture(hold, request.amount, final=request.final, now=now)
            accounts = {
                account.account_id: account
                for account in await store.get_accounts(_accounts_of(hold))
            }
            for account in accounts.values():
                _require_active(account.account_number, account.is_active)
            source = await store.adjust_balance(
                hold.account_id, current_change=-plan.amount, available_change=plan.released, at=now
            )
            checked = CheckedMovement(
                TransactionType.TRANSFER_OUT
                if hold.destination_account_id
                else TransactionType.DEBIT,
                hold.account_id,
                hold.destination_account_id,
                plan.amount,
                hold.currency,
                hold.description,
                reference_id,
                fingerprint,
            )
            first = replace(
                new_leg(
                    checked,
                    status=TransactionStatus.COMPLETED,
                    created_at=now,
                    transaction_id=uuid4(),
                    balance_after=_after(source),
                ),
                hold_id=hold.hold_id,
            )
            balances: list[Balance] = [source]
            legs = [first]
            if hold.destination_account_id is not None:
                # The credit returns the destination's balances after it: no second read.
                credited = await store.apply_credit(hold.destination_account_id, plan.amount, now)
                if credited is None:
                    raise ValidationFailed(BALANCE_LIMIT_REASON, field="amount")
                legs = list(transfer_legs(first, now, _after(source), credited))
                balances.extend(balances_after([(legs[1], credited)]))
            await record(
                store, actor, checked, legs, pending=None, trace_id=trace_id, balances=balances
            )
            changed = replace(
                hold,
                captured_amount=plan.captured_after,
                status=HoldStatus.CAPTURED if plan.closes else HoldStatus.OPEN,
                updated_at=now,
                closed_at=now if plan.closes else None,
            )
            await store.update_hold(changed)
            await store.add_events([HoldChanged(changed, HoldChange.CAPTURED, (), trace_id)])
            return HoldResult(changed, replayed=False, capture=legs[0])

        try:
            result = await self._unit_of_work.run(work)
        except ReferenceAlreadyUsed:
            result = await self._unit_of_work.run(
                lambda store: self._capture_replay(store, actor, hold_id, reference_id, fingerprint)
            )
        await self._changed(result)
        return result

    async def _capture_replay(
        self, store: LedgerStore, actor: Actor, hold_id: UUID, reference_id: str, fingerprint: str
    ) -> HoldResult:
        hold = await self._locked_for_change(store, actor, hold_id)
        replay = await _replayed_capture(store, hold, reference_id, fingerprint)
        if replay is None:
            raise IdempotencyConflict("the idempotency key is already used by another request")
        return replay

    # --- void and expiry ---------------------------------------------------------------------

    async def void(self, actor: Actor, hold_id: UUID, *, trace_id: str | None = None) -> HoldResult:
        """Close an open hold and release what it still holds. Voiding a voided hold replays
        it; a captured or expired one is ``HOLD_NOT_OPEN``."""

        async def work(store: LedgerStore) -> HoldResult:
            hold = await self._locked_for_change(store, actor, hold_id)
            if hold.status is HoldStatus.VOIDED:
                return HoldResult(hold, replayed=True)
            if hold.status is not HoldStatus.OPEN:
                raise HoldNotOpen(f"the hold is {hold.status.value}", hold_id=str(hold.hold_id))
            return await _release(store, hold, HoldStatus.VOIDED, trace_id)

        result = await self._unit_of_work.run(work)
        await self._changed(result)
        return result

    async def expire_due(
        self, *, now: datetime | None = None, limit: int = EXPIRY_BATCH_MAX
    ) -> int:
        """One expiry pass: every open hold whose ``expires_at`` has passed (at most ``limit``,
        soonest first) is released, each in its own unit of work, from open to expired exactly
        once (re-checked under its lock; a hold another pass or a capture is changing is
        skipped, and the next pass sees it again if it is still due). The number expired."""
        moment = now or utc_now()
        async with self._unit_of_work.read() as store:
            due = await store.due_holds(now=moment, limit=min(limit, EXPIRY_BATCH_MAX))
        expired = 0
        for candidate in due:

            async def work(store: LedgerStore, candidate: Hold = candidate) -> HoldResult | None:
                await store.lock_balances(_accounts_of(candidate))
                hold = await store.get_hold(candidate.hold_id, for_update=True, skip_locked=True)
                if hold is None or hold.status is not HoldStatus.OPEN or hold.expires_at > moment:
                    return None
                return await _release(store, hold, HoldStatus.EXPIRED, None)

            result = await self._unit_of_work.run(work)
            if result is not None:
                expired += 1
                await self._changed(result)
        if expired and self._on_expired is not None:
            self._on_expired(expired)
        return expired

    # --- shared ------------------------------------------------------------------------------

    async def _locked_for_change(self, store: LedgerStore, actor: Actor, hold_id: UUID) -> Hold:
        """The hold under its lock, after its accounts' balances (the one lock order), if the
        actor may move its account's money; else ``HOLD_NOT_FOUND``."""
        seen = await store.get_hold(hold_id)
        if seen is None:
            raise HoldNotFound(HOLD_NOT_FOUND_MESSAGE)
        try:
            require_can_debit(actor, await store.get_account(seen.account_id))
        except AccountNotFound as error:
            raise HoldNotFound(HOLD_NOT_FOUND_MESSAGE) from error
        await store.lock_balances(_accounts_of(seen))
        hold = await store.get_hold(hold_id, for_update=True)
        if hold is None:
            raise InvariantViolated(f"hold {hold_id} disappeared")
        return hold

    async def _changed(self, result: HoldResult) -> None:
        """After a commit: the cached balances of the hold's accounts are stale."""
        if not result.replayed:
            await self._balances.invalidate_many(_accounts_of(result.hold))


async def _release(
    store: LedgerStore, hold: Hold, status: HoldStatus, trace_id: str | None
) -> HoldResult:
    """Close an open hold as ``status`` and give its remainder back to available."""
    now = utc_now()
    remainder = hold.amount - hold.captured_amount
    balance = await store.adjust_balance(
        hold.account_id, current_change=_ZERO, available_change=remainder, at=now
    )
    changed = closed(hold, status, now)
    await store.update_hold(changed)
    change = HoldChange.VOIDED if status is HoldStatus.VOIDED else HoldChange.EXPIRED
    await store.add_events([HoldChanged(changed, change, (balance,), trace_id)])
    return HoldResult(changed, replayed=False)


async def _visible_hold(store: LedgerStore, actor: Actor, hold_id: UUID) -> Hold:
    hold = await store.get_hold(hold_id)
    if hold is None:
        raise HoldNotFound(HOLD_NOT_FOUND_MESSAGE)
    try:
        require_visible(actor, await store.get_account(hold.account_id))
    except AccountNotFound as error:
        raise HoldNotFound(HOLD_NOT_FOUND_MESSAGE) from error
    return hold


async def _replayed_hold(store: LedgerStore, checked: CheckedHold) -> HoldResult | None:
    """The hold stored under the request's key: replayed for the same parameters, else an
    ``IDEMPOTENCY_CONFLICT``; None when the key is free."""
    found = await store.find_hold(checked.account_id, checked.reference_id)
    if found is None:
        return None
    hold, fingerprint = found
    if fingerprint != checked.fingerprint:
        raise IdempotencyConflict(
            "reference_id was already used for a hold with other parameters",
            hold_id=str(hold.hold_id),
        )
    return HoldResult(hold, replayed=True)


async def _replay_or_conflict(store: LedgerStore, checked: CheckedHold) -> HoldResult:
    replay = await _replayed_hold(store, checked)
    if replay is None:
        raise IdempotencyConflict("the idempotency key is already used")
    return replay


async def _replayed_capture(
    store: LedgerStore, hold: Hold, reference_id: str, fingerprint: str
) -> HoldResult | None:
    """The capture stored under ``reference_id`` (the leg's key on the hold's account):
    replayed when it is this hold's with the same request, else ``IDEMPOTENCY_CONFLICT``."""
    found = await store.find_initiating_leg(hold.account_id, reference_id)
    if found is None:
        return None
    leg, stored_fingerprint = found
    if leg.hold_id != hold.hold_id or stored_fingerprint != fingerprint:
        raise IdempotencyConflict(
            "reference_id was already used by another request", transaction_id=leg.transaction_id
        )
    return HoldResult(hold, replayed=True, capture=leg)


def _accounts_of(hold: Hold) -> list[UUID]:
    return [hold.account_id] + (
        [hold.destination_account_id] if hold.destination_account_id else []
    )


def _after(balance: Balance) -> BalanceAfter:
    return BalanceAfter(balance.available_balance, balance.version, balance.current_balance)


def _require_active(account_number: str, is_active: bool) -> None:
    if not is_active:
        raise AccountInactive(f"account {account_number} is not active")
