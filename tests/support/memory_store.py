"""An in-memory ``LedgerStore`` and ``UnitOfWork`` for database-free tests of the core.

It keeps the rules the real stores keep with SQL: the conditional balance updates, the unique
idempotency key of initiating legs, the 10^16 balance limit, all-or-nothing units of work, one
writer at a time (SQLite's lock, PostgreSQL's row locks). ``tests/storage/test_store_contract.py``
runs the same scenarios against it, SQLite and PostgreSQL, so it cannot drift from them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from copy import copy
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import TypeVar
from uuid import UUID

from banking.domain.errors import InvariantViolated, ReferenceAlreadyUsed
from banking.domain.money import AMOUNT_LIMIT_EXCLUSIVE
from banking.domain.records import (
    Account,
    AccountMismatch,
    Balance,
    BalanceAfter,
    FraudScore,
    HistoryFilter,
    Hold,
    HoldStatus,
    JournalEntry,
    LedgerEvent,
    Owner,
    ReviewDecision,
    Transaction,
    TransactionStatus,
    TransactionType,
)
from banking.ledger.creation_keys import CreationKey
from banking.ledger.groups import Decided, GroupItem, decide_each
from banking.ledger.statements import TransactionSearch, signed

T = TypeVar("T")
_ZERO = Decimal("0.00")


@dataclass
class _StoredLeg:
    leg: Transaction
    fingerprint: str
    created_by: UUID | None
    # The store's column of reversals (``transactions.reversed_amount``), replaced, never
    # changed in place, so that a unit of work's copy restores it.
    reversed_amount: Decimal = Decimal("0.00")


@dataclass
class MemoryBooks:
    """Everything the store holds; copied at the start of a unit of work, restored on error."""

    owners: dict[UUID, Owner] = field(default_factory=dict)
    accounts: dict[UUID, Account] = field(default_factory=dict)
    balances: dict[UUID, Balance] = field(default_factory=dict)
    legs: dict[UUID, _StoredLeg] = field(default_factory=dict)
    journal: list[JournalEntry] = field(default_factory=list)
    events: list[LedgerEvent] = field(default_factory=list)
    fraud_scores: dict[UUID, FraudScore] = field(default_factory=dict)
    # Idempotency keys of creation by (scope, caller_id, key).
    creation_keys: dict[tuple[str, UUID, str], CreationKey] = field(default_factory=dict)
    # Holds by id, with the fingerprint of their authorization.
    holds: dict[UUID, tuple[Hold, str]] = field(default_factory=dict)

    def snapshot(self) -> MemoryBooks:
        return MemoryBooks(
            copy(self.owners),
            copy(self.accounts),
            copy(self.balances),
            copy(self.legs),
            copy(self.journal),
            copy(self.events),
            copy(self.fraud_scores),
            copy(self.creation_keys),
            copy(self.holds),
        )


class MemoryLedgerStore:
    """``LedgerStore`` over ``MemoryBooks``."""

    def __init__(self, books: MemoryBooks) -> None:
        self.books = books

    # --- accounts and balances ---
    async def get_account(self, account_id: UUID) -> Account | None:
        return self.books.accounts.get(account_id)

    async def get_accounts(self, account_ids: Sequence[UUID]) -> list[Account]:
        return [self.books.accounts[i] for i in account_ids if i in self.books.accounts]

    async def find_account_by_number(self, account_number: str) -> Account | None:
        return next(
            (a for a in self.books.accounts.values() if a.account_number == account_number), None
        )

    async def account_number_exists(self, account_number: str) -> bool:
        return await self.find_account_by_number(account_number) is not None

    async def list_accounts(
        self,
        *,
        customer_id: UUID | None,
        limit: int,
        after: tuple[datetime, UUID] | None = None,
    ) -> list[Account]:
        found = [
            a
            for a in self.books.accounts.values()
            if (customer_id is None or a.customer_id == customer_id)
            and (after is None or (a.created_at, a.account_id) > after)
        ]
        return sorted(found, key=lambda a: (a.created_at, a.account_id))[:limit]

    async def claim_creation_key(
        self, claim: CreationKey, *, expired_before: datetime
    ) -> CreationKey | None:
        keys = self.books.creation_keys
        for index, stored in list(keys.items()):
            if stored.caller_id == claim.caller_id and stored.created_at < expired_before:
                del keys[index]
        index = (claim.scope, claim.caller_id, claim.key)
        if index in keys:
            return keys[index]
        keys[index] = claim
        return None

    async def insert_account(self, account: Account) -> Balance:
        if account.account_id in self.books.accounts or await self.account_number_exists(
            account.account_number
        ):
            raise InvariantViolated("account already exists")
        balance = Balance(account.account_id, account.currency, _ZERO, _ZERO, 1, account.created_at)
        self.books.accounts[account.account_id] = account
        self.books.balances[account.account_id] = balance
        return balance

    async def set_account_active(self, account_id: UUID, *, is_active: bool, at: datetime) -> None:
        account = self.books.accounts.get(account_id)
        if account is not None:
            self.books.accounts[account_id] = replace(account, is_active=is_active, updated_at=at)

    async def get_balance(self, account_id: UUID) -> Balance | None:
        return self.books.balances.get(account_id)

    async def set_overdraft_limit(
        self, account_id: UUID, limit: Decimal, at: datetime
    ) -> Balance | None:
        balance = self.books.balances.get(account_id)
        if balance is None or min(balance.available_balance, balance.current_balance) < -limit:
            return None
        updated = replace(
            balance, overdraft_limit=limit, version=balance.version + 1, last_updated=at
        )
        self.books.balances[account_id] = updated
        return updated

    async def get_owner(self, user_id: UUID) -> Owner | None:
        return self.books.owners.get(user_id)

    # --- money ---
    async def lock_balances(self, account_ids: Sequence[UUID]) -> None:
        pass  # one unit of work at a time (MemoryUnitOfWork's lock)

    async def apply_debit(
        self, account_id: UUID, amount: Decimal, at: datetime
    ) -> BalanceAfter | None:
        balance = self.books.balances.get(account_id)
        if balance is None or balance.available_balance + balance.overdraft_limit < amount:
            return None
        return self._set(balance, -amount, at)

    async def apply_credit(
        self, account_id: UUID, amount: Decimal, at: datetime
    ) -> BalanceAfter | None:
        balance = self.books.balances.get(account_id)
        if balance is None or balance.current_balance >= AMOUNT_LIMIT_EXCLUSIVE - amount:
            return None
        return self._set(balance, amount, at)

    def _set(self, balance: Balance, change: Decimal, at: datetime) -> BalanceAfter:
        updated = replace(
            balance,
            current_balance=balance.current_balance + change,
            available_balance=balance.available_balance + change,
            version=balance.version + 1,
            last_updated=at,
        )
        self.books.balances[balance.account_id] = updated
        return BalanceAfter(updated.available_balance, updated.version, updated.current_balance)

    async def decide_movements(self, items: Sequence[GroupItem]) -> list[Decided]:
        return await decide_each(self, items)

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        saved = self.books.snapshot()
        try:
            yield
        except BaseException:
            self.books.__dict__.update(saved.__dict__)
            raise

    async def insert_legs(
        self, legs: Sequence[Transaction], *, fingerprint: str, created_by: UUID | None
    ) -> None:
        for leg in legs:
            if leg.transaction_id in self.books.legs:
                raise InvariantViolated(f"leg {leg.transaction_id} exists")
            if leg.transaction_type is not TransactionType.TRANSFER_IN and self._holder(
                leg.account_id, leg.reference_id
            ):
                raise ReferenceAlreadyUsed("the idempotency key is already used")
            # The CHECK (amount > 0) and the NUMERIC(18,2) column of PostgreSQL.
            if not 0 < leg.amount < AMOUNT_LIMIT_EXCLUSIVE:
                raise InvariantViolated("amount must be positive and below 10^16")
            self.books.legs[leg.transaction_id] = _StoredLeg(leg, fingerprint, created_by)

    def _holder(self, account_id: UUID, reference_id: str) -> _StoredLeg | None:
        return next(
            (
                stored
                for stored in self.books.legs.values()
                if stored.leg.account_id == account_id
                and stored.leg.reference_id == reference_id
                and stored.leg.transaction_type is not TransactionType.TRANSFER_IN
            ),
            None,
        )

    async def finish_pending_leg(self, leg: Transaction) -> bool:
        stored = self.books.legs.get(leg.transaction_id)
        if stored is None or stored.leg.status is not TransactionStatus.PENDING:
            return False
        finished = replace(
            stored.leg,
            status=leg.status,
            related_transaction_id=leg.related_transaction_id,
            failure_code=leg.failure_code,
            failure_reason=leg.failure_reason,
            available_balance_after=leg.available_balance_after,
            balance_version_after=leg.balance_version_after,
        )
        self.books.legs[leg.transaction_id] = replace(stored, leg=finished)
        return True

    async def get_transaction(
        self, transaction_id: UUID, *, for_update: bool = False
    ) -> Transaction | None:
        stored = self.books.legs.get(transaction_id)
        return stored.leg if stored else None

    async def find_initiating_leg(
        self, account_id: UUID, reference_id: str
    ) -> tuple[Transaction, str] | None:
        stored = self._holder(account_id, reference_id)
        return (stored.leg, stored.fingerprint) if stored else None

    async def list_transactions(
        self,
        account_id: UUID,
        history: HistoryFilter,
        *,
        after: tuple[datetime, UUID] | None,
        limit: int,
    ) -> list[Transaction]:
        def wanted(leg: Transaction) -> bool:
            return (
                leg.account_id == account_id
                and (history.created_from is None or leg.created_at >= history.created_from)
                and (history.created_to is None or leg.created_at < history.created_to)
                and (
                    history.transaction_type is None
                    or leg.transaction_type is history.transaction_type
                )
                and (history.status is None or leg.status is history.status)
                and (after is None or (leg.created_at, leg.transaction_id) < after)
            )

        legs = [stored.leg for stored in self.books.legs.values() if wanted(stored.leg)]
        legs.sort(key=lambda leg: (leg.created_at, leg.transaction_id), reverse=True)
        return legs[:limit]

    # --- reversals ---
    async def get_reversed_amount(
        self, transaction_id: UUID, *, for_update: bool = False
    ) -> Decimal | None:
        stored = self.books.legs.get(transaction_id)
        return stored.reversed_amount if stored else None

    async def add_reversed_amount(self, transaction_id: UUID, amount: Decimal) -> Decimal | None:
        stored = self.books.legs.get(transaction_id)
        if stored is None or stored.reversed_amount + amount > stored.leg.amount:
            return None
        total = stored.reversed_amount + amount
        self.books.legs[transaction_id] = replace(stored, reversed_amount=total)
        return total

    async def reversal_legs(
        self, transaction_id: UUID, *, account_id: UUID, limit: int
    ) -> list[Transaction]:
        legs = [
            stored.leg
            for stored in self.books.legs.values()
            if stored.leg.reverses_transaction_id == transaction_id
            and stored.leg.account_id == account_id
            and stored.leg.status is TransactionStatus.COMPLETED
        ]
        legs.sort(key=lambda leg: (leg.created_at, leg.transaction_id))
        return legs[:limit]

    # --- fraud review ---
    async def get_requester(self, transaction_id: UUID) -> UUID | None:
        stored = self.books.legs.get(transaction_id)
        return stored.created_by if stored else None

    async def hold_pending_leg(self, transaction_id: UUID, reason: str) -> bool:
        stored = self.books.legs.get(transaction_id)
        if (
            stored is None
            or stored.leg.status is not TransactionStatus.PENDING
            or stored.leg.hold_reason is not None
        ):
            return False
        self.books.legs[transaction_id] = replace(
            stored, leg=replace(stored.leg, hold_reason=reason)
        )
        return True

    async def insert_fraud_score(self, score: FraudScore) -> bool:
        if score.transaction_id in self.books.fraud_scores:
            return False
        if score.transaction_id not in self.books.legs:  # the foreign key
            raise InvariantViolated(f"no leg {score.transaction_id} to score")
        self.books.fraud_scores[score.transaction_id] = score
        return True

    async def get_fraud_score(self, transaction_id: UUID) -> FraudScore | None:
        return self.books.fraud_scores.get(transaction_id)

    async def review_fraud_score(
        self,
        transaction_id: UUID,
        decision: ReviewDecision,
        *,
        reviewer: UUID,
        at: datetime,
    ) -> None:
        score = self.books.fraud_scores.get(transaction_id)
        if score is not None:
            self.books.fraud_scores[transaction_id] = replace(
                score, review_decision=decision, reviewed_by=reviewer, reviewed_at=at
            )

    def _held(self) -> list[Transaction]:
        legs = [
            stored.leg
            for stored in self.books.legs.values()
            if stored.leg.status is TransactionStatus.PENDING and stored.leg.hold_reason
        ]
        return sorted(legs, key=lambda leg: (leg.created_at, leg.transaction_id))

    async def held_legs(
        self, *, after: tuple[datetime, UUID] | None, limit: int
    ) -> list[Transaction]:
        legs = [
            leg
            for leg in self._held()
            if after is None or (leg.created_at, leg.transaction_id) > after
        ]
        return legs[:limit]

    async def count_held(self) -> int:
        return len(self._held())

    async def account_legs(
        self, account_id: UUID, *, since: datetime, until: datetime, limit: int
    ) -> list[Transaction]:
        legs = [
            stored.leg
            for stored in self.books.legs.values()
            if stored.leg.account_id == account_id and since <= stored.leg.created_at <= until
        ]
        legs.sort(key=lambda leg: (leg.created_at, leg.transaction_id))
        return legs[-limit:] if limit else []

    # --- lookup across accounts, balance at a point in time, statements ---
    async def search_transactions(
        self,
        search: TransactionSearch,
        *,
        owner: UUID | None,
        after: tuple[datetime, UUID] | None,
        limit: int,
    ) -> list[Transaction]:
        def wanted(leg: Transaction) -> bool:
            account = self.books.accounts.get(leg.account_id)
            return (
                (owner is None or (account is not None and account.customer_id == owner))
                and (search.reference_id is None or leg.reference_id == search.reference_id)
                and (search.account_id is None or leg.account_id == search.account_id)
                and (
                    search.transaction_type is None
                    or leg.transaction_type is search.transaction_type
                )
                and (search.status is None or leg.status is search.status)
                and (search.created_from is None or leg.created_at >= search.created_from)
                and (search.created_to is None or leg.created_at < search.created_to)
                and all(leg.metadata.get(key) == value for key, value in search.metadata.items())
                and (after is None or (leg.created_at, leg.transaction_id) < after)
            )

        legs = [stored.leg for stored in self.books.legs.values() if wanted(stored.leg)]
        legs.sort(key=lambda leg: (leg.created_at, leg.transaction_id), reverse=True)
        return legs[:limit]

    def _completed_of(self, account_id: UUID) -> list[Transaction]:
        legs = [
            stored.leg
            for stored in self.books.legs.values()
            if stored.leg.account_id == account_id
            and stored.leg.status is TransactionStatus.COMPLETED
        ]
        legs.sort(key=lambda leg: (leg.created_at, leg.transaction_id))
        return legs

    async def completed_balance(
        self, account_id: UUID, *, at: datetime
    ) -> tuple[Decimal, Transaction | None]:
        legs = [leg for leg in self._completed_of(account_id) if leg.created_at <= at]
        total = sum((signed(leg) for leg in legs), _ZERO)
        return total, (legs[-1] if legs else None)

    async def completed_legs(
        self, account_id: UUID, *, after: datetime, until: datetime, limit: int
    ) -> list[Transaction]:
        legs = [leg for leg in self._completed_of(account_id) if after < leg.created_at <= until]
        return legs[:limit]

    # --- holds ---
    async def apply_hold(self, account_id: UUID, amount: Decimal, at: datetime) -> Balance | None:
        balance = self.books.balances.get(account_id)
        if balance is None or balance.available_balance + balance.overdraft_limit < amount:
            return None
        updated = replace(
            balance,
            available_balance=balance.available_balance - amount,
            version=balance.version + 1,
            last_updated=at,
        )
        self.books.balances[account_id] = updated
        return updated

    async def adjust_balance(
        self,
        account_id: UUID,
        *,
        current_change: Decimal,
        available_change: Decimal,
        at: datetime,
    ) -> Balance:
        balance = self.books.balances[account_id]
        updated = replace(
            balance,
            current_balance=balance.current_balance + current_change,
            available_balance=balance.available_balance + available_change,
            version=balance.version + 1,
            last_updated=at,
        )
        # The CHECKs of the balances table.
        if min(updated.current_balance, updated.available_balance) < -updated.overdraft_limit:
            raise InvariantViolated("a balance would go below its overdraft limit")
        self.books.balances[account_id] = updated
        return updated

    async def insert_hold(self, hold: Hold, *, fingerprint: str) -> None:
        if any(
            stored.account_id == hold.account_id and stored.reference_id == hold.reference_id
            for stored, _ in self.books.holds.values()
        ):
            raise ReferenceAlreadyUsed("the idempotency key is already used")
        self.books.holds[hold.hold_id] = (hold, fingerprint)

    async def get_hold(
        self, hold_id: UUID, *, for_update: bool = False, skip_locked: bool = False
    ) -> Hold | None:
        stored = self.books.holds.get(hold_id)
        return stored[0] if stored else None

    async def find_hold(self, account_id: UUID, reference_id: str) -> tuple[Hold, str] | None:
        return next(
            (
                (hold, fingerprint)
                for hold, fingerprint in self.books.holds.values()
                if hold.account_id == account_id and hold.reference_id == reference_id
            ),
            None,
        )

    async def update_hold(self, hold: Hold) -> None:
        _, fingerprint = self.books.holds[hold.hold_id]
        # The CHECK of the holds table: a capture never exceeds the hold.
        if not _ZERO <= hold.captured_amount <= hold.amount:
            raise InvariantViolated("captured_amount must stay within the hold's amount")
        self.books.holds[hold.hold_id] = (hold, fingerprint)

    async def list_holds(
        self,
        *,
        account_id: UUID | None,
        owner: UUID | None,
        status: HoldStatus | None,
        after: tuple[datetime, UUID] | None,
        limit: int,
    ) -> list[Hold]:
        def wanted(hold: Hold) -> bool:
            account = self.books.accounts.get(hold.account_id)
            return (
                (owner is None or (account is not None and account.customer_id == owner))
                and (account_id is None or hold.account_id == account_id)
                and (status is None or hold.status is status)
                and (after is None or (hold.created_at, hold.hold_id) < after)
            )

        found = [hold for hold, _ in self.books.holds.values() if wanted(hold)]
        found.sort(key=lambda hold: (hold.created_at, hold.hold_id), reverse=True)
        return found[:limit]

    async def due_holds(self, *, now: datetime, limit: int) -> list[Hold]:
        due = [
            hold
            for hold, _ in self.books.holds.values()
            if hold.status is HoldStatus.OPEN and hold.expires_at <= now
        ]
        due.sort(key=lambda hold: (hold.expires_at, hold.hold_id))
        return due[:limit]

    async def open_hold_totals(self) -> dict[str, Decimal]:
        totals: dict[str, Decimal] = {}
        for hold, _ in self.books.holds.values():
            if hold.status is HoldStatus.OPEN:
                totals[hold.currency] = totals.get(hold.currency, _ZERO) + hold.held_amount
        return totals

    async def hold_capture_mismatches(self, limit: int) -> list[UUID]:
        captured: dict[UUID, Decimal] = {}
        for leg in self._completed():
            if leg.hold_id is not None and leg.transaction_type in (
                TransactionType.DEBIT,
                TransactionType.TRANSFER_OUT,
            ):
                captured[leg.hold_id] = captured.get(leg.hold_id, _ZERO) + leg.amount
        return [
            hold.hold_id
            for hold, _ in self.books.holds.values()
            if hold.captured_amount != captured.get(hold.hold_id, _ZERO)
        ][:limit]

    def _held_by_account(self) -> dict[UUID, Decimal]:
        held: dict[UUID, Decimal] = {}
        for hold, _ in self.books.holds.values():
            held[hold.account_id] = held.get(hold.account_id, _ZERO) + hold.held_amount
        return held

    # --- journal and events ---
    async def add_journal(self, entries: Sequence[JournalEntry]) -> None:
        self.books.journal.extend(entries)

    async def add_events(self, events: Sequence[LedgerEvent]) -> None:
        self.books.events.extend(events)

    # --- reconciliation ---
    async def balance_totals_by_currency(self) -> dict[str, Decimal]:
        totals: dict[str, Decimal] = {}
        for balance in self.books.balances.values():
            totals[balance.currency] = totals.get(balance.currency, _ZERO) + balance.current_balance
        return totals

    async def completed_totals(self) -> dict[tuple[str, str], Decimal]:
        totals: dict[tuple[str, str], Decimal] = {}
        for leg in self._completed():
            key = (leg.currency, leg.transaction_type.value)
            totals[key] = totals.get(key, _ZERO) + leg.amount
        return totals

    async def account_mismatches(self, limit: int) -> list[AccountMismatch]:
        sums: dict[UUID, Decimal] = {}
        for leg in self._completed():
            sums[leg.account_id] = sums.get(leg.account_id, _ZERO) + signed(leg)
        held = self._held_by_account()
        found = []
        for balance in self.books.balances.values():
            legs_total = sums.get(balance.account_id)
            open_holds = held.get(balance.account_id, _ZERO)
            if (
                balance.current_balance != (legs_total or _ZERO)
                or balance.available_balance != balance.current_balance - open_holds
                or min(balance.available_balance, balance.current_balance)
                < -balance.overdraft_limit
            ):
                found.append(
                    AccountMismatch(
                        balance.account_id,
                        balance.current_balance,
                        balance.available_balance,
                        legs_total,
                        balance.overdraft_limit,
                        open_holds,
                    )
                )
        return found[:limit]

    async def unmatched_transfer_legs(self, limit: int) -> list[UUID]:
        found = []
        for leg in self._completed():
            if leg.transaction_type not in (
                TransactionType.TRANSFER_OUT,
                TransactionType.TRANSFER_IN,
            ):
                continue
            partner = (
                self.books.legs.get(leg.related_transaction_id)
                if leg.related_transaction_id
                else None
            )
            if (
                partner is None
                or partner.leg.status is not TransactionStatus.COMPLETED
                or partner.leg.amount != leg.amount
            ):
                found.append(leg.transaction_id)
        return found[:limit]

    def _completed(self) -> list[Transaction]:
        return [
            stored.leg
            for stored in self.books.legs.values()
            if stored.leg.status is TransactionStatus.COMPLETED
        ]


class MemoryUnitOfWork:
    """``UnitOfWork`` over one ``MemoryBooks``: one unit of work at a time, all or nothing."""

    def __init__(self, books: MemoryBooks | None = None) -> None:
        self.books = books or MemoryBooks()
        self._writer = asyncio.Lock()
        self.runs = 0
        self.lagging_reads_by: list[UUID] = []  # the caller of each read_may_lag

    async def run(self, work: Callable[[MemoryLedgerStore], Awaitable[T]]) -> T:
        async with self._writer:
            self.runs += 1
            working = self.books.snapshot()
            result = await work(MemoryLedgerStore(working))
            # Committed: the working copy becomes the books (nothing of a failed one stays).
            self.books.__dict__.update(working.__dict__)
            return result

    @asynccontextmanager
    async def read(self) -> AsyncIterator[MemoryLedgerStore]:
        yield MemoryLedgerStore(self.books)

    async def read_may_lag(
        self, caller: UUID, work: Callable[[MemoryLedgerStore], Awaitable[T]]
    ) -> T:
        """No replicas here: the books as they are, on a copy (a read that writes changes
        nothing, as on a hot standby, which refuses writes)."""
        self.lagging_reads_by.append(caller)
        return await work(MemoryLedgerStore(self.books.snapshot()))
