"""Reading the books across time and accounts: the lookup of legs across accounts, an account's
balance at a point in time, and its statement for a period (issue 15, items 4 and 5).

Every figure is computed from the completed legs (never from a snapshot): the balance as of
``T`` is the signed sum of the account's completed legs created at or before ``T``. A statement
for ``(from, to]`` opens with the balance as of ``from``, lists the completed legs created after
``from`` and at or before ``to`` oldest first with their running balance, and closes with the
balance as of ``to``. There are no holds yet, so the available balance as of ``T`` equals the
current balance as of ``T``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from banking.domain.errors import ValidationFailed
from banking.domain.records import (
    Account,
    Balance,
    HistoryPage,
    Transaction,
    TransactionStatus,
    TransactionType,
)
from banking.domain.roles import Actor
from banking.ledger.access import require_visible
from banking.ledger.checks import REFERENCE_ID_LENGTH_MAX
from banking.ledger.history import decode_cursor, in_utc, newest_first_page, page_size_within
from banking.ledger.metadata import check_metadata
from banking.ledger.ports import LedgerStore, UnitOfWork

_ZERO = Decimal("0.00")
_CENT = Decimal("0.01")
# The legs that add to a balance; the others (debit, transfer_out) take from it.
INCOMING = frozenset({TransactionType.CREDIT, TransactionType.TRANSFER_IN})


@dataclass(frozen=True, slots=True)
class TransactionSearch:
    """Filters of the lookup across accounts; None: any. Times in UTC, ``[from, to)``."""

    reference_id: str | None = None
    account_id: UUID | None = None
    transaction_type: TransactionType | None = None
    status: TransactionStatus | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    # Legs whose metadata holds every one of these pairs (empty: any); ``ledger.metadata``'s
    # rules bound it as they bound a movement's.
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class StatementLine:
    leg: Transaction
    running_balance: Decimal


@dataclass(frozen=True, slots=True)
class Statement:
    account: Account
    period_from: datetime
    period_to: datetime
    opening_balance: Decimal
    closing_balance: Decimal
    credits_total: Decimal
    debits_total: Decimal
    lines: list[StatementLine]

    @property
    def count(self) -> int:
        return len(self.lines)


def signed(leg: Transaction) -> Decimal:
    """What a completed leg did to its account's balance."""
    return leg.amount if leg.transaction_type in INCOMING else -leg.amount


def build_statement(
    account: Account,
    period_from: datetime,
    period_to: datetime,
    opening_balance: Decimal,
    legs: list[Transaction],
) -> Statement:
    """Running balances and totals of ``legs`` (completed, oldest first) after ``opening``."""
    running = opening_balance.quantize(_CENT)
    credits, debits = _ZERO, _ZERO
    lines = []
    for leg in legs:
        running += signed(leg)
        if leg.transaction_type in INCOMING:
            credits += leg.amount
        else:
            debits += leg.amount
        lines.append(StatementLine(leg, running))
    return Statement(
        account,
        period_from,
        period_to,
        opening_balance.quantize(_CENT),
        running,
        credits,
        debits,
        lines,
    )


def _required_utc(moment: datetime, field: str) -> datetime:
    utc = in_utc(moment, field)
    if utc is None:  # pragma: no cover - in_utc answers None only for None
        raise ValidationFailed(f"{field} is required", field=field)
    return utc


class StatementService:
    """Lookup across accounts, balance as of a time, statements: read-only, authorized here."""

    def __init__(
        self,
        unit_of_work: UnitOfWork,
        *,
        page_size_default: int,
        page_size_max: int,
        statement_legs_max: int,
    ) -> None:
        self._unit_of_work = unit_of_work
        self.page_size_default = page_size_default
        self.page_size_max = page_size_max
        self.statement_legs_max = statement_legs_max

    async def search(
        self,
        actor: Actor,
        search: TransactionSearch,
        *,
        cursor: str | None = None,
        page_size: int | None = None,
    ) -> HistoryPage:
        """Legs across accounts, newest first. A customer sees only legs of their own
        accounts (another customer's ``account_id``: not found); staff see every leg."""
        size = page_size_within(
            page_size, default=self.page_size_default, maximum=self.page_size_max
        )
        reference = search.reference_id
        if reference is not None and not 1 <= len(reference) <= REFERENCE_ID_LENGTH_MAX:
            raise ValidationFailed(
                f"reference_id must be 1 to {REFERENCE_ID_LENGTH_MAX} characters",
                field="reference_id",
            )
        after = decode_cursor(cursor) if cursor else None
        created_from = in_utc(search.created_from, "from")
        created_to = in_utc(search.created_to, "to")
        if created_from is not None and created_to is not None and created_from > created_to:
            raise ValidationFailed("from must not be after to", field="from")
        search = TransactionSearch(
            reference,
            search.account_id,
            search.transaction_type,
            search.status,
            created_from,
            created_to,
            metadata=check_metadata(search.metadata),
        )
        owner = None if actor.reads_everything else actor.user_id

        async def read(store: LedgerStore) -> list[Transaction]:
            if search.account_id is not None:
                require_visible(actor, await store.get_account(search.account_id))
            return await store.search_transactions(search, owner=owner, after=after, limit=size + 1)

        return newest_first_page(await self._unit_of_work.read_may_lag(actor.user_id, read), size)

    async def balance_as_of(self, actor: Actor, account_id: UUID, as_of: datetime) -> Balance:
        """The balance from the completed legs created at or before ``as_of``; its version is
        the balance version right after the last of them (1, the opening, when none); its
        overdraft limit is the account's limit now (limits keep no history)."""
        at = _required_utc(as_of, "as_of")

        async def read(store: LedgerStore) -> Balance:
            account = require_visible(actor, await store.get_account(account_id))
            total, last = await store.completed_balance(account_id, at=at)
            version = 1
            if last is not None and last.balance_version_after is not None:
                version = last.balance_version_after
            updated = account.created_at if last is None else last.created_at
            # Limits keep no history: the limit shown is the account's limit now.
            now = await store.get_balance(account_id)
            limit = now.overdraft_limit if now is not None else Decimal("0.00")
            return Balance(account_id, account.currency, total, total, version, updated, limit)

        return await self._unit_of_work.read_may_lag(actor.user_id, read)

    async def statement(
        self, actor: Actor, account_id: UUID, period_from: datetime, period_to: datetime
    ) -> Statement:
        """The statement of ``(period_from, period_to]``; more than ``statement_legs_max``
        legs in the period is refused (ask for a shorter period)."""
        since = _required_utc(period_from, "from")
        until = _required_utc(period_to, "to")
        if since > until:
            raise ValidationFailed("from must not be after to", field="from")
        legs_max = self.statement_legs_max

        async def read(store: LedgerStore) -> Statement:
            account = require_visible(actor, await store.get_account(account_id))
            legs = await store.completed_legs(
                account_id, after=since, until=until, limit=legs_max + 1
            )
            if len(legs) > legs_max:
                raise ValidationFailed(
                    f"the period has more than {legs_max} legs (STATEMENT_LEGS_MAX): "
                    "ask for a shorter period",
                    field="from",
                )
            opening, _ = await store.completed_balance(account_id, at=since)
            return build_statement(account, since, until, opening, legs)

        return await self._unit_of_work.read_may_lag(actor.user_id, read)
