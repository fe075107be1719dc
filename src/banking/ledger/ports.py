"""The ports of the ledger: what its use cases need from the outside, as Protocols.

The ledger decides; a store remembers. ``LedgerStore`` is one unit of work's view of the books
(SQLite and PostgreSQL in ``banking.storage``, an in-memory fake in the tests, one contract test
for all three). ``UnitOfWork`` is the only thing that begins and commits. ``Movements`` is the
movement service's own interface, so cross-cutting concerns (locks, metrics, cache
invalidation) wrap it with the same Protocol instead of subclassing it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol, TypeVar
from uuid import UUID

from banking.domain.records import (
    Account,
    AccountMismatch,
    Balance,
    BalanceAfter,
    BatchItem,
    CaptureRequest,
    Command,
    CommandOutcome,
    DebitOrCredit,
    FraudScore,
    HistoryFilter,
    Hold,
    HoldPage,
    HoldRequest,
    HoldResult,
    HoldStatus,
    JournalEntry,
    LedgerEvent,
    MovementResult,
    Owner,
    ReversalRequest,
    Reversals,
    ReviewDecision,
    Transaction,
    TransactionType,
    TransferRequest,
)
from banking.domain.roles import Actor

if TYPE_CHECKING:
    from banking.ledger.creation_keys import CreationKey
    from banking.ledger.groups import Decided, GroupItem, ItemResult
    from banking.ledger.statements import TransactionSearch

T = TypeVar("T")


class LedgerStore(Protocol):
    """Reads and writes inside one unit of work. Nothing here commits; a method that changes
    rows takes effect when the unit of work ends without an error."""

    # --- accounts and balances ---
    async def get_account(self, account_id: UUID) -> Account | None: ...
    async def get_accounts(self, account_ids: Sequence[UUID]) -> list[Account]: ...
    async def find_account_by_number(self, account_number: str) -> Account | None: ...
    async def account_number_exists(self, account_number: str) -> bool: ...
    async def list_accounts(
        self,
        *,
        customer_id: UUID | None,
        limit: int,
        after: tuple[datetime, UUID] | None = None,
    ) -> list[Account]:
        """Oldest first, keyset-paginated on ``(created_at, account_id)``; one customer's
        (``customer_id``) or everyone's (None)."""
        ...

    async def claim_creation_key(
        self, claim: CreationKey, *, expired_before: datetime
    ) -> CreationKey | None:
        """Claim an idempotency key of creation in this unit of work: None when claimed, else
        the live claim that holds it (a concurrent one is waited for). The caller's claims
        created before ``expired_before`` are deleted first."""
        ...

    async def insert_account(self, account: Account) -> Balance:
        """Store a new account with a zero balance at version 1."""
        ...

    async def set_account_active(
        self, account_id: UUID, *, is_active: bool, at: datetime
    ) -> None: ...

    async def get_balance(self, account_id: UUID) -> Balance | None: ...
    async def set_overdraft_limit(
        self, account_id: UUID, limit: Decimal, at: datetime
    ) -> Balance | None:
        """Set how far below zero the account's balances may go, and bump the balance's
        version; None (nothing changed) when a balance is already below ``-limit``."""
        ...

    async def get_owner(self, user_id: UUID) -> Owner | None: ...

    # --- money ---
    async def lock_balances(self, account_ids: Sequence[UUID]) -> None:
        """Lock the balance rows in account-id order (the one order: no deadlock)."""
        ...

    async def apply_debit(
        self, account_id: UUID, amount: Decimal, at: datetime
    ) -> BalanceAfter | None:
        """Take ``amount`` off only if that much is available; None when it is not."""
        ...

    async def apply_credit(
        self, account_id: UUID, amount: Decimal, at: datetime
    ) -> BalanceAfter | None:
        """Add ``amount``; None when the balance would reach the 10^16 limit."""
        ...

    async def decide_movements(self, items: Sequence[GroupItem]) -> list[Decided]:
        """Decide synchronous debits, credits and transfers in this unit of work, in order,
        with the rules of ``banking.ledger.decisions``: each item's initiating leg as stored,
        or the error that refused it, its writes undone (a used key: ``ReferenceAlreadyUsed``).
        For several items the balances of all their accounts are locked first, in account-id
        order. ``banking.ledger.groups.decide_each`` is the reference; a store may decide the
        group in one call of its own (PostgreSQL), and the contract tests hold it to the same
        outcomes, rows and events. A single item may leave a refusal's writes behind: its
        caller rolls the unit of work back."""
        ...

    def savepoint(self) -> AbstractAsyncContextManager[None]:
        """A nested unit: when the block raises, its writes are undone and the rest of the
        unit of work goes on; a used idempotency key inside is raised as
        ``ReferenceAlreadyUsed``."""
        ...

    async def insert_legs(
        self, legs: Sequence[Transaction], *, fingerprint: str, created_by: UUID | None
    ) -> None:
        """Store new legs. A used idempotency key ``(account_id, reference_id)`` of an
        initiating leg makes the unit of work raise ``ReferenceAlreadyUsed``."""
        ...

    async def finish_pending_leg(self, leg: Transaction) -> bool:
        """Store the outcome of a pending leg; False when it was not pending any more."""
        ...

    async def get_transaction(
        self, transaction_id: UUID, *, for_update: bool = False
    ) -> Transaction | None: ...

    async def find_initiating_leg(
        self, account_id: UUID, reference_id: str
    ) -> tuple[Transaction, str] | None:
        """The leg holding the idempotency key, and the fingerprint of its request."""
        ...

    async def list_transactions(
        self,
        account_id: UUID,
        history: HistoryFilter,
        *,
        after: tuple[datetime, UUID] | None,
        limit: int,
    ) -> list[Transaction]:
        """Newest first, keyset-paginated on ``(created_at, transaction_id)``."""
        ...

    # --- reversals (``banking.ledger.reversals``) ---
    async def get_reversed_amount(
        self, transaction_id: UUID, *, for_update: bool = False
    ) -> Decimal | None:
        """How much of the leg's amount its reversals took (None: no such leg); with
        ``for_update`` the leg's row is locked until the unit of work ends."""
        ...

    async def add_reversed_amount(self, transaction_id: UUID, amount: Decimal) -> Decimal | None:
        """Add ``amount`` to the leg's reversed amount only if the total stays within its
        amount (one conditional update): the new total, or None when it would not."""
        ...

    async def reversal_legs(
        self, transaction_id: UUID, *, account_id: UUID, limit: int
    ) -> list[Transaction]:
        """The completed legs on ``account_id`` that reverse the leg ``transaction_id``, oldest
        first (by ``(created_at, transaction_id)``), at most ``limit``."""
        ...

    # --- fraud review (held commands and their scores) ---
    async def hold_pending_leg(self, transaction_id: UUID, reason: str) -> bool:
        """Mark a pending leg held for review; False when it is not pending or already held."""
        ...

    async def get_requester(self, transaction_id: UUID) -> UUID | None:
        """Who submitted a leg (the user id the store keeps with it)."""
        ...

    async def insert_fraud_score(self, score: FraudScore) -> bool:
        """Store a leg's score; False (and nothing changed) when the leg has one already."""
        ...

    async def get_fraud_score(self, transaction_id: UUID) -> FraudScore | None: ...

    async def review_fraud_score(
        self,
        transaction_id: UUID,
        decision: ReviewDecision,
        *,
        reviewer: UUID,
        at: datetime,
    ) -> None: ...

    async def held_legs(
        self, *, after: tuple[datetime, UUID] | None, limit: int
    ) -> list[Transaction]:
        """Pending legs held for review, oldest first, keyset-paginated."""
        ...

    async def count_held(self) -> int: ...

    async def account_legs(
        self, account_id: UUID, *, since: datetime, until: datetime, limit: int
    ) -> list[Transaction]:
        """An account's legs created in ``[since, until]``, oldest first, at most the newest
        ``limit`` of them (what the fraud features are rebuilt from)."""
        ...

    # --- lookup across accounts, balance at a point in time, statements ---
    async def search_transactions(
        self,
        search: TransactionSearch,
        *,
        owner: UUID | None,
        after: tuple[datetime, UUID] | None,
        limit: int,
    ) -> list[Transaction]:
        """Legs of any account matching ``search`` (times ``[from, to)``), newest first,
        keyset-paginated on ``(created_at, transaction_id)``; with ``owner``, only legs of
        accounts that ``owner`` holds."""
        ...

    async def completed_balance(
        self, account_id: UUID, *, at: datetime
    ) -> tuple[Decimal, Transaction | None]:
        """The signed sum of the account's completed legs created at or before ``at``, and
        the last of them (by ``(created_at, transaction_id)``), None when there is none."""
        ...

    async def completed_legs(
        self, account_id: UUID, *, after: datetime, until: datetime, limit: int
    ) -> list[Transaction]:
        """The account's completed legs created in ``(after, until]``, oldest first, at most
        the first ``limit``."""
        ...

    # --- holds (``banking.ledger.holds``) ---
    async def apply_hold(self, account_id: UUID, amount: Decimal, at: datetime) -> Balance | None:
        """Take ``amount`` off the available balance only (a hold), if that much is available
        (down to minus the overdraft limit, a debit's rule); None when it is not."""
        ...

    async def adjust_balance(
        self,
        account_id: UUID,
        *,
        current_change: Decimal,
        available_change: Decimal,
        at: datetime,
    ) -> Balance:
        """Change the current and available balances by these amounts (a capture takes from
        current, a release gives back to available), bumping the version."""
        ...

    async def insert_hold(self, hold: Hold, *, fingerprint: str) -> None:
        """Store a new hold. A used key ``(account_id, reference_id)`` makes the unit of work
        raise ``ReferenceAlreadyUsed``."""
        ...

    async def get_hold(
        self, hold_id: UUID, *, for_update: bool = False, skip_locked: bool = False
    ) -> Hold | None:
        """A hold; ``for_update`` locks its row (after its balances: the one lock order), and
        ``skip_locked`` answers None instead of waiting for another transaction's lock."""
        ...

    async def find_hold(self, account_id: UUID, reference_id: str) -> tuple[Hold, str] | None:
        """The hold holding an authorization's key, and the fingerprint of its request."""
        ...

    async def update_hold(self, hold: Hold) -> None:
        """Store a hold's captured amount, state and times."""
        ...

    async def list_holds(
        self,
        *,
        account_id: UUID | None,
        owner: UUID | None,
        status: HoldStatus | None,
        after: tuple[datetime, UUID] | None,
        limit: int,
    ) -> list[Hold]:
        """Holds newest first, keyset-paginated on ``(created_at, hold_id)``; of one account,
        of accounts ``owner`` holds, in one state, as given."""
        ...

    async def due_holds(self, *, now: datetime, limit: int) -> list[Hold]:
        """Open holds whose ``expires_at`` is at or before ``now``, soonest first."""
        ...

    # --- journal and events (the outbox), written in the same unit of work ---
    async def add_journal(self, entries: Sequence[JournalEntry]) -> None: ...
    async def add_events(self, events: Sequence[LedgerEvent]) -> None: ...

    # --- reconciliation ---
    async def balance_totals_by_currency(self) -> dict[str, Decimal]: ...
    async def completed_totals(self) -> dict[tuple[str, str], Decimal]:
        """Sum of completed legs per (currency, transaction type)."""
        ...

    async def account_mismatches(self, limit: int) -> list[AccountMismatch]:
        """Balances that disagree with their legs (current), with their open holds
        (``available = current - open holds``), or go below their overdraft limit."""
        ...

    async def open_hold_totals(self) -> dict[str, Decimal]:
        """What open holds still take from available balances, per currency."""
        ...

    async def hold_capture_mismatches(self, limit: int) -> list[UUID]:
        """Holds whose captured amount is not the sum of their completed capture legs."""
        ...

    async def unmatched_transfer_legs(self, limit: int) -> list[UUID]:
        """Completed transfer legs whose partner is missing, not completed, or differs."""
        ...


class UnitOfWork(Protocol):
    """Begins, commits and rolls back; the only place that does."""

    async def run(self, work: Callable[[LedgerStore], Awaitable[T]]) -> T:
        """Run ``work`` in one transaction: committed when it returns, rolled back when it
        raises. Retried from the start on deadlocks and serialization failures. A used
        idempotency key is raised as ``ReferenceAlreadyUsed``."""
        ...

    def read(self) -> AbstractAsyncContextManager[LedgerStore]:
        """A read-only view (no write lock), rolled back at the end."""
        ...

    async def read_may_lag(self, caller: UUID, work: Callable[[LedgerStore], Awaitable[T]]) -> T:
        """Run the read-only ``work`` on a view that may be slightly behind the primary (a read
        replica within the configured lag bound), for ``caller``: never behind their own
        writes (``RecentWriters``), and on the primary when no replica may serve. ``work`` may
        run twice (on a replica, then on the primary), so it must only read. Never for a read
        that decides money: those run inside ``run``."""
        ...


class RecentWriters(Protocol):
    """Who wrote within the sticky window (``REPLICA_STICKY_SECONDS``): their reads stay on the
    primary (``banking.cache.sticky``: memory or Redis)."""

    async def record(self, user_id: UUID) -> None:
        """``user_id`` has just written (called after the write's commit)."""
        ...

    async def wrote_recently(self, user_id: UUID) -> bool:
        """True within the sticky window after ``record``, and whenever it cannot tell."""
        ...


class Movements(Protocol):
    """The movement service's interface: what the doors call, and what decorators wrap."""

    async def debit(
        self, actor: Actor, request: DebitOrCredit, *, trace_id: str | None = None
    ) -> MovementResult: ...

    async def credit(
        self, actor: Actor, request: DebitOrCredit, *, trace_id: str | None = None
    ) -> MovementResult: ...

    async def transfer(
        self, actor: Actor, request: TransferRequest, *, trace_id: str | None = None
    ) -> MovementResult: ...

    async def submit(
        self,
        actor: Actor,
        kind: TransactionType,
        request: DebitOrCredit | TransferRequest,
        *,
        trace_id: str | None = None,
    ) -> MovementResult: ...

    async def batch(
        self,
        actor: Actor,
        items: Sequence[BatchItem],
        *,
        atomic: bool,
        trace_id: str | None = None,
    ) -> list[ItemResult]:
        """Debits, credits and transfers in one unit of work and one commit, each authorized
        and checked like a single request. Each item's result in order: its completed leg
        (``MovementResult``, a replay included) or the error a single request would have
        raised (a decline's names its stored leg). ``atomic``: every item completes or nothing
        is stored, and ``BatchItemFailed`` names the first that did not."""
        ...

    async def apply_command(self, command: Command) -> CommandOutcome: ...

    async def hold_command(self, command: Command, score: FraudScore) -> CommandOutcome:
        """Hold a command for review instead of applying it (the fraud detector's decision)."""
        ...

    async def review(
        self,
        actor: Actor,
        transaction_id: UUID,
        decision: ReviewDecision,
        *,
        trace_id: str | None = None,
    ) -> MovementResult:
        """Release (apply now) or reject (fail with ``FRAUD_REJECTED``) a held command."""
        ...

    async def reverse(
        self, actor: Actor, request: ReversalRequest, *, trace_id: str | None = None
    ) -> MovementResult:
        """Reverse all or part of a completed movement (``banking.ledger.reversals``): the
        reversal's initiating leg; a decline is raised as its error."""
        ...

    async def get_transaction(self, actor: Actor, transaction_id: UUID) -> Transaction: ...

    async def get_reversals(
        self, actor: Actor, transaction_id: UUID
    ) -> tuple[Transaction, Reversals]:
        """A leg (as ``get_transaction``) and what has been reversed of its movement."""
        ...


class Holds(Protocol):
    """The hold service's interface (``banking.ledger.holds``): what the doors and the expiry
    worker call."""

    async def authorize(
        self, actor: Actor, request: HoldRequest, *, trace_id: str | None = None
    ) -> HoldResult: ...

    async def get(self, actor: Actor, hold_id: UUID) -> Hold: ...

    async def page(
        self,
        actor: Actor,
        *,
        account_id: UUID | None = None,
        status: HoldStatus | None = None,
        cursor: str | None = None,
        page_size: int | None = None,
    ) -> HoldPage: ...

    async def capture(
        self,
        actor: Actor,
        hold_id: UUID,
        request: CaptureRequest,
        *,
        trace_id: str | None = None,
    ) -> HoldResult: ...

    async def void(
        self, actor: Actor, hold_id: UUID, *, trace_id: str | None = None
    ) -> HoldResult: ...

    async def expire_due(self, *, now: datetime | None = None, limit: int = ...) -> int:
        """Release the open holds that expired (at most ``limit``): the number released."""
        ...


class BalanceCache(Protocol):
    """Read-through cache for showing balances (``banking.cache``: memory or Redis). Money
    decisions never read it."""

    async def read_through(
        self, account_id: UUID, load: Callable[[], Awaitable[tuple[Account, Balance]]]
    ) -> tuple[Account, Balance]: ...

    async def invalidate_many(self, account_ids: Iterable[UUID]) -> None:
        """Drop these accounts' entries (after a committed change that moved no money)."""
        ...


class NoBalanceCache:
    """No cache: every read loads."""

    async def read_through(
        self, account_id: UUID, load: Callable[[], Awaitable[tuple[Account, Balance]]]
    ) -> tuple[Account, Balance]:
        return await load()

    async def invalidate_many(self, account_ids: Iterable[UUID]) -> None:
        pass


class MovementsDecorator:
    """A ``Movements`` that passes every call to ``inner``: the base of the wrappers (locks,
    metrics, cache invalidation), which override only the calls they add something to."""

    def __init__(self, inner: Movements) -> None:
        self._inner = inner

    async def debit(
        self, actor: Actor, request: DebitOrCredit, *, trace_id: str | None = None
    ) -> MovementResult:
        return await self._inner.debit(actor, request, trace_id=trace_id)

    async def credit(
        self, actor: Actor, request: DebitOrCredit, *, trace_id: str | None = None
    ) -> MovementResult:
        return await self._inner.credit(actor, request, trace_id=trace_id)

    async def transfer(
        self, actor: Actor, request: TransferRequest, *, trace_id: str | None = None
    ) -> MovementResult:
        return await self._inner.transfer(actor, request, trace_id=trace_id)

    async def submit(
        self,
        actor: Actor,
        kind: TransactionType,
        request: DebitOrCredit | TransferRequest,
        *,
        trace_id: str | None = None,
    ) -> MovementResult:
        return await self._inner.submit(actor, kind, request, trace_id=trace_id)

    async def batch(
        self,
        actor: Actor,
        items: Sequence[BatchItem],
        *,
        atomic: bool,
        trace_id: str | None = None,
    ) -> list[ItemResult]:
        return await self._inner.batch(actor, items, atomic=atomic, trace_id=trace_id)

    async def apply_command(self, command: Command) -> CommandOutcome:
        return await self._inner.apply_command(command)

    async def hold_command(self, command: Command, score: FraudScore) -> CommandOutcome:
        return await self._inner.hold_command(command, score)

    async def review(
        self,
        actor: Actor,
        transaction_id: UUID,
        decision: ReviewDecision,
        *,
        trace_id: str | None = None,
    ) -> MovementResult:
        return await self._inner.review(actor, transaction_id, decision, trace_id=trace_id)

    async def reverse(
        self, actor: Actor, request: ReversalRequest, *, trace_id: str | None = None
    ) -> MovementResult:
        return await self._inner.reverse(actor, request, trace_id=trace_id)

    async def get_transaction(self, actor: Actor, transaction_id: UUID) -> Transaction:
        return await self._inner.get_transaction(actor, transaction_id)

    async def get_reversals(
        self, actor: Actor, transaction_id: UUID
    ) -> tuple[Transaction, Reversals]:
        return await self._inner.get_reversals(actor, transaction_id)
