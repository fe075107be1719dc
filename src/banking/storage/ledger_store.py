"""The ledger's ports on SQLAlchemy (SQLite and PostgreSQL): ``SqlLedgerStore`` is one unit of
work's connection seen as a ``LedgerStore``; ``SqlUnitOfWork`` begins, retries and commits.

The statements of the money path are built once (with bind parameters) instead of on every
call: building SQLAlchemy expressions showed up at 7 % of a transfer's server CPU.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID, uuid4

from sqlalchemy import (
    Row,
    and_,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement, Select

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
from banking.domain.roles import Role
from banking.ledger.creation_keys import CreationKey
from banking.ledger.groups import Decided, GroupItem, decide_each
from banking.ledger.metadata import canonical_metadata
from banking.ledger.statements import TransactionSearch
from banking.storage import pg_movements, repositories
from banking.storage.database import Database, constraint_of, is_unique_violation
from banking.storage.replicas import ReplicaReads
from banking.storage.tables import (
    HOLD_REFERENCE_KEY,
    HOLD_REFERENCE_KEY_SQLITE_COLUMNS,
    REFERENCE_KEY,
    REFERENCE_KEY_SQLITE_COLUMNS,
    accounts,
    balances,
    fraud_scores,
    holds,
    outbox,
    transaction_logs,
    transactions,
    users,
)
from banking.storage.types import Money

T = TypeVar("T")
# Turns a ledger event into its outbox rows (``banking.events.outbox.outbox_rows``); given by
# the composition root, so storage does not depend on the event formats.
OutboxEncoder = Callable[[LedgerEvent], list[dict[str, Any]]]
_ZERO = Decimal("0.00")
_JOURNAL_FIELDS = tuple(JournalEntry.__dataclass_fields__)

_GET_ACCOUNT = select(accounts).where(accounts.c.account_id == bindparam("p_account_id"))
_GET_ACCOUNTS = select(accounts).where(
    accounts.c.account_id.in_(bindparam("p_account_ids", expanding=True))
)
_LOCK_BALANCES = (
    select(balances.c.account_id)
    .where(balances.c.account_id.in_(bindparam("p_account_ids", expanding=True)))
    .order_by(balances.c.account_id)
    .with_for_update()
)
# What a completed leg did to its account's balance (``statements.signed`` in SQL).
_SIGNED_AMOUNT = type_coerce(
    case(
        (
            transactions.c.transaction_type.in_(
                [TransactionType.CREDIT.value, TransactionType.TRANSFER_IN.value]
            ),
            transactions.c.amount,
        ),
        else_=-transactions.c.amount,
    ),
    Money,
)
_APPLY_DEBIT = (
    update(balances)
    .where(
        balances.c.account_id == bindparam("p_account_id"),
        balances.c.available_balance + balances.c.overdraft_limit >= bindparam("p_amount"),
    )
    .values(
        current_balance=balances.c.current_balance - bindparam("p_amount"),
        available_balance=balances.c.available_balance - bindparam("p_amount"),
        version=balances.c.version + 1,
        last_updated=bindparam("p_at"),
    )
    .returning(balances.c.available_balance, balances.c.version, balances.c.current_balance)
)
_APPLY_CREDIT = (
    update(balances)
    .where(
        balances.c.account_id == bindparam("p_account_id"),
        balances.c.current_balance < bindparam("p_balance_below"),
    )
    .values(
        current_balance=balances.c.current_balance + bindparam("p_amount"),
        available_balance=balances.c.available_balance + bindparam("p_amount"),
        version=balances.c.version + 1,
        last_updated=bindparam("p_at"),
    )
    .returning(balances.c.available_balance, balances.c.version, balances.c.current_balance)
)

# A hold takes from available only, with a debit's rule; a capture or a release moves one
# or both balances by what the ledger decided (``banking.ledger.holds``).
_APPLY_HOLD = (
    update(balances)
    .where(
        balances.c.account_id == bindparam("p_account_id"),
        balances.c.available_balance + balances.c.overdraft_limit >= bindparam("p_amount"),
    )
    .values(
        available_balance=balances.c.available_balance - bindparam("p_amount"),
        version=balances.c.version + 1,
        last_updated=bindparam("p_at"),
    )
    .returning(balances.c.account_id)
)
_ADJUST_BALANCE = (
    update(balances)
    .where(balances.c.account_id == bindparam("p_account_id"))
    .values(
        current_balance=balances.c.current_balance + bindparam("p_current"),
        available_balance=balances.c.available_balance + bindparam("p_available"),
        version=balances.c.version + 1,
        last_updated=bindparam("p_at"),
    )
)
# What open holds still take from available (NUMERIC on PostgreSQL, hundredths on SQLite).
_HELD_SUM = type_coerce(func.sum(holds.c.amount - holds.c.captured_amount), Money)
# Zero bound as money (hundredths on SQLite): a COALESCE that may answer it is read as money.
_MONEY_ZERO = literal(_ZERO, Money)
_HOLD_FIELDS = tuple(name for name in Hold.__dataclass_fields__ if name != "status")


def _hold(row: Row[Any]) -> Hold:
    return Hold(
        **{name: row._mapping[name] for name in _HOLD_FIELDS}, status=HoldStatus(row.status)
    )


def _account(row: Row[Any]) -> Account:
    return Account(
        account_id=row.account_id,
        account_number=row.account_number,
        customer_id=row.customer_id,
        account_type=row.account_type,
        currency=row.currency,
        is_active=row.is_active,
        created_at=row.created_at,
        updated_at=row.updated_at,
        metadata=row.metadata,
    )


def transaction_of_row(row: Row[Any]) -> Transaction:
    """A leg from its row: the columns are the record's fields, plus the fingerprint and
    creator that only the store keeps."""
    return Transaction(
        **{name: row._mapping[name] for name in _LEG_COLUMNS},
        transaction_type=TransactionType(row.transaction_type),
        status=TransactionStatus(row.status),
    )


_LEG_COLUMNS = tuple(
    name for name in Transaction.__dataclass_fields__ if name not in ("transaction_type", "status")
)


_LEG_FIELDS = tuple(Transaction.__dataclass_fields__)


def _fraud_score(row: Row[Any]) -> FraudScore:
    return FraudScore(
        transaction_id=row.transaction_id,
        account_id=row.account_id,
        event_id=row.event_id,
        score=(Decimal(row.score_bp) / 10_000).quantize(Decimal("0.0001")),
        reasons=tuple(row.reasons),
        features=dict(row.features),
        model_version=row.model_version,
        decision=row.decision,
        scored_at=row.scored_at,
        review_decision=ReviewDecision(row.review_decision) if row.review_decision else None,
        reviewed_by=row.reviewed_by,
        reviewed_at=row.reviewed_at,
    )


def _leg_values(leg: Transaction) -> dict[str, Any]:
    # Not dataclasses.asdict: it deep-copies every value, on the money path.
    values = {name: getattr(leg, name) for name in _LEG_FIELDS}
    values["transaction_type"] = leg.transaction_type.value
    values["status"] = leg.status.value
    return values


class SqlLedgerStore:
    """``LedgerStore`` on one connection of an open unit of work."""

    def __init__(self, connection: AsyncConnection, encode_events: OutboxEncoder) -> None:
        self.connection = connection
        self._encode_events = encode_events

    # --- accounts and balances ---------------------------------------------------------------

    async def get_account(self, account_id: UUID) -> Account | None:
        result = await self.connection.execute(_GET_ACCOUNT, {"p_account_id": account_id})
        row = result.first()
        return _account(row) if row else None

    async def get_accounts(self, account_ids: Sequence[UUID]) -> list[Account]:
        result = await self.connection.execute(_GET_ACCOUNTS, {"p_account_ids": list(account_ids)})
        return [_account(row) for row in result]

    async def find_account_by_number(self, account_number: str) -> Account | None:
        result = await self.connection.execute(
            select(accounts).where(accounts.c.account_number == account_number)
        )
        row = result.first()
        return _account(row) if row else None

    async def account_number_exists(self, account_number: str) -> bool:
        result = await self.connection.execute(
            select(accounts.c.account_id).where(accounts.c.account_number == account_number)
        )
        return result.first() is not None

    async def list_accounts(
        self,
        *,
        customer_id: UUID | None,
        limit: int,
        after: tuple[datetime, UUID] | None = None,
    ) -> list[Account]:
        query = select(accounts).order_by(accounts.c.created_at, accounts.c.account_id).limit(limit)
        if customer_id is not None:
            query = query.where(accounts.c.customer_id == customer_id)
        if after is not None:
            created_at, account_id = after
            query = query.where(
                or_(
                    accounts.c.created_at > created_at,
                    and_(accounts.c.created_at == created_at, accounts.c.account_id > account_id),
                )
            )
        return [_account(row) for row in await self.connection.execute(query)]

    async def claim_creation_key(
        self, claim: CreationKey, *, expired_before: datetime
    ) -> CreationKey | None:
        return await repositories.claim_creation_key(
            self.connection, claim, expired_before=expired_before
        )

    async def insert_account(self, account: Account) -> Balance:
        await self.connection.execute(insert(accounts).values(**asdict(account)))
        await self.connection.execute(
            insert(balances).values(
                balance_id=uuid4(),
                account_id=account.account_id,
                current_balance=_ZERO,
                available_balance=_ZERO,
                last_updated=account.created_at,
                version=1,
            )
        )
        return Balance(account.account_id, account.currency, _ZERO, _ZERO, 1, account.created_at)

    async def set_account_active(self, account_id: UUID, *, is_active: bool, at: datetime) -> None:
        await self.connection.execute(
            update(accounts)
            .where(accounts.c.account_id == account_id)
            .values(is_active=is_active, updated_at=at)
        )

    async def get_balance(self, account_id: UUID) -> Balance | None:
        result = await self.connection.execute(
            select(
                balances.c.account_id,
                accounts.c.currency,
                balances.c.current_balance,
                balances.c.available_balance,
                balances.c.version,
                balances.c.last_updated,
                balances.c.overdraft_limit,
            )
            .join(accounts, accounts.c.account_id == balances.c.account_id)
            .where(balances.c.account_id == account_id)
        )
        row = result.first()
        return Balance(*row) if row else None

    async def set_overdraft_limit(
        self, account_id: UUID, limit: Decimal, at: datetime
    ) -> Balance | None:
        result = await self.connection.execute(
            update(balances)
            .where(
                balances.c.account_id == account_id,
                balances.c.available_balance + limit >= _ZERO,
                balances.c.current_balance + limit >= _ZERO,
            )
            .values(overdraft_limit=limit, version=balances.c.version + 1, last_updated=at)
            .returning(balances.c.account_id)
        )
        return await self.get_balance(account_id) if result.first() else None

    async def get_owner(self, user_id: UUID) -> Owner | None:
        result = await self.connection.execute(
            select(users.c.user_id, users.c.role, users.c.is_active, users.c.username).where(
                users.c.user_id == user_id
            )
        )
        row = result.first()
        return Owner(row.user_id, Role(row.role), row.is_active, row.username) if row else None

    # --- money ---------------------------------------------------------------------------------

    async def lock_balances(self, account_ids: Sequence[UUID]) -> None:
        """On SQLite the transaction already holds the database's single write lock (BEGIN
        IMMEDIATE); on PostgreSQL the rows are locked in account-id order."""
        await self.connection.execute(_LOCK_BALANCES, {"p_account_ids": sorted(account_ids)})

    async def apply_debit(
        self, account_id: UUID, amount: Decimal, at: datetime
    ) -> BalanceAfter | None:
        result = await self.connection.execute(
            _APPLY_DEBIT, {"p_account_id": account_id, "p_amount": amount, "p_at": at}
        )
        row = result.first()
        return (
            BalanceAfter(row.available_balance, row.version, row.current_balance) if row else None
        )

    async def apply_credit(
        self, account_id: UUID, amount: Decimal, at: datetime
    ) -> BalanceAfter | None:
        result = await self.connection.execute(
            _APPLY_CREDIT,
            {
                "p_account_id": account_id,
                "p_amount": amount,
                "p_balance_below": AMOUNT_LIMIT_EXCLUSIVE - amount,
                "p_at": at,
            },
        )
        row = result.first()
        return (
            BalanceAfter(row.available_balance, row.version, row.current_balance) if row else None
        )

    async def decide_movements(self, items: Sequence[GroupItem]) -> list[Decided]:
        """On PostgreSQL one server-side call for the whole group (``pg_movements``); on
        SQLite the ledger's decisions, item by item (``decide_each``)."""
        if self.connection.dialect.name == "postgresql":
            return await pg_movements.decide_movements(self, self._encode_events, items)
        return await decide_each(self, items)

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        try:
            async with self.connection.begin_nested():
                yield
        except IntegrityError as error:
            if _is_reference_taken(error):
                raise ReferenceAlreadyUsed("the idempotency key is already used") from error
            raise

    async def insert_legs(
        self, legs: Sequence[Transaction], *, fingerprint: str, created_by: UUID | None
    ) -> None:
        await self.connection.execute(
            insert(transactions),
            [
                _leg_values(leg) | {"request_fingerprint": fingerprint, "created_by": created_by}
                for leg in legs
            ],
        )

    async def finish_pending_leg(self, leg: Transaction) -> bool:
        result = await self.connection.execute(
            update(transactions)
            .where(
                transactions.c.transaction_id == leg.transaction_id,
                transactions.c.status == TransactionStatus.PENDING.value,
            )
            .values(
                status=leg.status.value,
                related_transaction_id=leg.related_transaction_id,
                failure_code=leg.failure_code,
                failure_reason=leg.failure_reason,
                available_balance_after=leg.available_balance_after,
                balance_version_after=leg.balance_version_after,
            )
        )
        return bool(result.rowcount == 1)

    async def get_transaction(
        self, transaction_id: UUID, *, for_update: bool = False
    ) -> Transaction | None:
        query = select(transactions).where(transactions.c.transaction_id == transaction_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.connection.execute(query)).first()
        return transaction_of_row(row) if row else None

    async def find_initiating_leg(
        self, account_id: UUID, reference_id: str
    ) -> tuple[Transaction, str] | None:
        result = await self.connection.execute(
            select(transactions).where(
                transactions.c.account_id == account_id,
                transactions.c.reference_id == reference_id,
                transactions.c.transaction_type != TransactionType.TRANSFER_IN.value,
            )
        )
        row = result.first()
        return (transaction_of_row(row), row.request_fingerprint) if row else None

    async def list_transactions(
        self,
        account_id: UUID,
        history: HistoryFilter,
        *,
        after: tuple[datetime, UUID] | None,
        limit: int,
    ) -> list[Transaction]:
        query = select(transactions).where(transactions.c.account_id == account_id)
        if history.created_from is not None:
            query = query.where(transactions.c.created_at >= history.created_from)
        if history.created_to is not None:
            query = query.where(transactions.c.created_at < history.created_to)
        if history.transaction_type is not None:
            query = query.where(transactions.c.transaction_type == history.transaction_type.value)
        if history.status is not None:
            query = query.where(transactions.c.status == history.status.value)
        return await self._newest_first(query, after, limit)

    async def _newest_first(
        self, query: Select[Any], after: tuple[datetime, UUID] | None, limit: int
    ) -> list[Transaction]:
        """``query``'s legs newest first, from after the keyset cursor ``after``."""
        if after is not None:
            created_at, transaction_id = after
            query = query.where(
                or_(
                    transactions.c.created_at < created_at,
                    and_(
                        transactions.c.created_at == created_at,
                        transactions.c.transaction_id < transaction_id,
                    ),
                )
            )
        query = query.order_by(
            transactions.c.created_at.desc(), transactions.c.transaction_id.desc()
        ).limit(limit)
        return [transaction_of_row(row) for row in await self.connection.execute(query)]

    # --- reversals ------------------------------------------------------------------------------

    async def get_reversed_amount(
        self, transaction_id: UUID, *, for_update: bool = False
    ) -> Decimal | None:
        query = select(transactions.c.reversed_amount).where(
            transactions.c.transaction_id == transaction_id
        )
        if for_update:
            query = query.with_for_update()
        reversed_amount: Decimal | None = (
            await self.connection.execute(query)
        ).scalar_one_or_none()
        return reversed_amount

    async def add_reversed_amount(self, transaction_id: UUID, amount: Decimal) -> Decimal | None:
        result = await self.connection.execute(
            update(transactions)
            .where(
                transactions.c.transaction_id == transaction_id,
                transactions.c.reversed_amount + amount <= transactions.c.amount,
            )
            .values(reversed_amount=transactions.c.reversed_amount + amount)
            .returning(transactions.c.reversed_amount)
        )
        total: Decimal | None = result.scalar_one_or_none()
        return total

    async def reversal_legs(
        self, transaction_id: UUID, *, account_id: UUID, limit: int
    ) -> list[Transaction]:
        query = (
            select(transactions)
            .where(
                transactions.c.reverses_transaction_id == transaction_id,
                transactions.c.account_id == account_id,
                transactions.c.status == TransactionStatus.COMPLETED.value,
            )
            .order_by(transactions.c.created_at, transactions.c.transaction_id)
            .limit(limit)
        )
        return [transaction_of_row(row) for row in await self.connection.execute(query)]

    # --- fraud review ----------------------------------------------------------------------------

    async def get_requester(self, transaction_id: UUID) -> UUID | None:
        result = await self.connection.execute(
            select(transactions.c.created_by).where(transactions.c.transaction_id == transaction_id)
        )
        requester: UUID | None = result.scalar_one_or_none()
        return requester

    async def hold_pending_leg(self, transaction_id: UUID, reason: str) -> bool:
        result = await self.connection.execute(
            update(transactions)
            .where(
                transactions.c.transaction_id == transaction_id,
                transactions.c.status == TransactionStatus.PENDING.value,
                transactions.c.hold_reason.is_(None),
            )
            .values(hold_reason=reason)
        )
        return bool(result.rowcount == 1)

    async def insert_fraud_score(self, score: FraudScore) -> bool:
        values = {
            "transaction_id": score.transaction_id,
            "account_id": score.account_id,
            "event_id": score.event_id,
            "score_bp": int(score.score * 10_000),
            "reasons": list(score.reasons),
            "features": dict(score.features),
            "model_version": score.model_version,
            "decision": score.decision,
            "scored_at": score.scored_at,
        }
        dialect = self.connection.dialect.name
        statement = (postgresql_insert if dialect == "postgresql" else sqlite_insert)(
            fraud_scores
        ).on_conflict_do_nothing(index_elements=["transaction_id"])
        result = await self.connection.execute(statement, values)
        return bool(result.rowcount == 1)

    async def get_fraud_score(self, transaction_id: UUID) -> FraudScore | None:
        row = (
            await self.connection.execute(
                select(fraud_scores).where(fraud_scores.c.transaction_id == transaction_id)
            )
        ).first()
        return _fraud_score(row) if row else None

    async def review_fraud_score(
        self,
        transaction_id: UUID,
        decision: ReviewDecision,
        *,
        reviewer: UUID,
        at: datetime,
    ) -> None:
        await self.connection.execute(
            update(fraud_scores)
            .where(fraud_scores.c.transaction_id == transaction_id)
            .values(review_decision=decision.value, reviewed_by=reviewer, reviewed_at=at)
        )

    async def held_legs(
        self, *, after: tuple[datetime, UUID] | None, limit: int
    ) -> list[Transaction]:
        query = select(transactions).where(
            transactions.c.status == TransactionStatus.PENDING.value,
            transactions.c.hold_reason.is_not(None),
        )
        if after is not None:
            created_at, transaction_id = after
            query = query.where(
                or_(
                    transactions.c.created_at > created_at,
                    and_(
                        transactions.c.created_at == created_at,
                        transactions.c.transaction_id > transaction_id,
                    ),
                )
            )
        query = query.order_by(transactions.c.created_at, transactions.c.transaction_id).limit(
            limit
        )
        return [transaction_of_row(row) for row in await self.connection.execute(query)]

    async def count_held(self) -> int:
        result = await self.connection.execute(
            select(func.count()).where(
                transactions.c.status == TransactionStatus.PENDING.value,
                transactions.c.hold_reason.is_not(None),
            )
        )
        return int(result.scalar_one())

    async def account_legs(
        self, account_id: UUID, *, since: datetime, until: datetime, limit: int
    ) -> list[Transaction]:
        newest = (
            select(transactions)
            .where(
                transactions.c.account_id == account_id,
                transactions.c.created_at >= since,
                transactions.c.created_at <= until,
            )
            .order_by(transactions.c.created_at.desc(), transactions.c.transaction_id.desc())
            .limit(limit)
        )
        legs = [transaction_of_row(row) for row in await self.connection.execute(newest)]
        legs.reverse()
        return legs

    # --- lookup across accounts, balance at a point in time, statements -----------------------

    async def search_transactions(
        self,
        search: TransactionSearch,
        *,
        owner: UUID | None,
        after: tuple[datetime, UUID] | None,
        limit: int,
    ) -> list[Transaction]:
        query = select(transactions)
        if owner is not None:
            query = query.join(accounts, accounts.c.account_id == transactions.c.account_id).where(
                accounts.c.customer_id == owner
            )
        if search.reference_id is not None:
            query = query.where(transactions.c.reference_id == search.reference_id)
        if search.account_id is not None:
            query = query.where(transactions.c.account_id == search.account_id)
        if search.transaction_type is not None:
            query = query.where(transactions.c.transaction_type == search.transaction_type.value)
        if search.status is not None:
            query = query.where(transactions.c.status == search.status.value)
        if search.created_from is not None:
            query = query.where(transactions.c.created_at >= search.created_from)
        if search.created_to is not None:
            query = query.where(transactions.c.created_at < search.created_to)
        if search.metadata:
            query = query.where(self._metadata_holds(search.metadata))
        return await self._newest_first(query, after, limit)

    def _metadata_holds(self, pairs: Mapping[str, str]) -> ColumnElement[bool]:
        """The legs whose metadata holds every pair: on PostgreSQL a JSONB containment, which
        the GIN index ``ix_transactions_metadata`` serves (migration 0010); on SQLite
        ``json_extract`` per key, unindexed (keys are ``[A-Za-z0-9_.-]``: safe in a quoted
        JSON path)."""
        if self.connection.dialect.name == "postgresql":
            return transactions.c.metadata.op("@>")(cast(literal(canonical_metadata(pairs)), JSONB))
        return and_(
            *(
                func.json_extract(transactions.c.metadata, f'$."{key}"') == value
                for key, value in pairs.items()
            )
        )

    async def completed_balance(
        self, account_id: UUID, *, at: datetime
    ) -> tuple[Decimal, Transaction | None]:
        completed = and_(
            transactions.c.account_id == account_id,
            transactions.c.status == TransactionStatus.COMPLETED.value,
            transactions.c.created_at <= at,
        )
        summed = select(type_coerce(func.sum(_SIGNED_AMOUNT), Money)).where(completed)
        total = (await self.connection.execute(summed)).scalar_one_or_none()
        last_row = (
            await self.connection.execute(
                select(transactions)
                .where(completed)
                .order_by(transactions.c.created_at.desc(), transactions.c.transaction_id.desc())
                .limit(1)
            )
        ).first()
        last = None if last_row is None else transaction_of_row(last_row)
        return (total if total is not None else _ZERO), last

    async def completed_legs(
        self, account_id: UUID, *, after: datetime, until: datetime, limit: int
    ) -> list[Transaction]:
        query = (
            select(transactions)
            .where(
                transactions.c.account_id == account_id,
                transactions.c.status == TransactionStatus.COMPLETED.value,
                transactions.c.created_at > after,
                transactions.c.created_at <= until,
            )
            .order_by(transactions.c.created_at, transactions.c.transaction_id)
            .limit(limit)
        )
        return [transaction_of_row(row) for row in await self.connection.execute(query)]

    # --- holds (``banking.ledger.holds``) --------------------------------------------------------

    async def apply_hold(self, account_id: UUID, amount: Decimal, at: datetime) -> Balance | None:
        result = await self.connection.execute(
            _APPLY_HOLD, {"p_account_id": account_id, "p_amount": amount, "p_at": at}
        )
        return await self.get_balance(account_id) if result.first() else None

    async def adjust_balance(
        self,
        account_id: UUID,
        *,
        current_change: Decimal,
        available_change: Decimal,
        at: datetime,
    ) -> Balance:
        await self.connection.execute(
            _ADJUST_BALANCE,
            {
                "p_account_id": account_id,
                "p_current": current_change,
                "p_available": available_change,
                "p_at": at,
            },
        )
        balance = await self.get_balance(account_id)
        if balance is None:
            raise InvariantViolated(f"account {account_id} has no balance")
        return balance

    async def insert_hold(self, hold: Hold, *, fingerprint: str) -> None:
        values = {name: getattr(hold, name) for name in _HOLD_FIELDS}
        values["status"] = hold.status.value
        await self.connection.execute(
            insert(holds).values(**values, request_fingerprint=fingerprint)
        )

    async def get_hold(
        self, hold_id: UUID, *, for_update: bool = False, skip_locked: bool = False
    ) -> Hold | None:
        query = select(holds).where(holds.c.hold_id == hold_id)
        if for_update:
            query = query.with_for_update(skip_locked=skip_locked)
        row = (await self.connection.execute(query)).first()
        return _hold(row) if row else None

    async def find_hold(self, account_id: UUID, reference_id: str) -> tuple[Hold, str] | None:
        row = (
            await self.connection.execute(
                select(holds).where(
                    holds.c.account_id == account_id, holds.c.reference_id == reference_id
                )
            )
        ).first()
        return (_hold(row), row.request_fingerprint) if row else None

    async def update_hold(self, hold: Hold) -> None:
        await self.connection.execute(
            update(holds)
            .where(holds.c.hold_id == hold.hold_id)
            .values(
                captured_amount=hold.captured_amount,
                status=hold.status.value,
                updated_at=hold.updated_at,
                closed_at=hold.closed_at,
            )
        )

    async def list_holds(
        self,
        *,
        account_id: UUID | None,
        owner: UUID | None,
        status: HoldStatus | None,
        after: tuple[datetime, UUID] | None,
        limit: int,
    ) -> list[Hold]:
        query = select(holds)
        if owner is not None:
            query = query.join(accounts, accounts.c.account_id == holds.c.account_id).where(
                accounts.c.customer_id == owner
            )
        if account_id is not None:
            query = query.where(holds.c.account_id == account_id)
        if status is not None:
            query = query.where(holds.c.status == status.value)
        if after is not None:
            created_at, hold_id = after
            query = query.where(
                or_(
                    holds.c.created_at < created_at,
                    and_(holds.c.created_at == created_at, holds.c.hold_id < hold_id),
                )
            )
        query = query.order_by(holds.c.created_at.desc(), holds.c.hold_id.desc()).limit(limit)
        return [_hold(row) for row in await self.connection.execute(query)]

    async def due_holds(self, *, now: datetime, limit: int) -> list[Hold]:
        query = (
            select(holds)
            .where(holds.c.status == HoldStatus.OPEN.value, holds.c.expires_at <= now)
            .order_by(holds.c.expires_at, holds.c.hold_id)
            .limit(limit)
        )
        return [_hold(row) for row in await self.connection.execute(query)]

    async def open_hold_totals(self) -> dict[str, Decimal]:
        result = await self.connection.execute(
            select(holds.c.currency, _HELD_SUM)
            .where(holds.c.status == HoldStatus.OPEN.value)
            .group_by(holds.c.currency)
        )
        return {currency: total or _ZERO for currency, total in result}

    async def hold_capture_mismatches(self, limit: int) -> list[UUID]:
        captured = (
            select(
                transactions.c.hold_id,
                type_coerce(func.sum(transactions.c.amount), Money).label("total"),
            )
            .where(
                transactions.c.hold_id.is_not(None),
                transactions.c.status == TransactionStatus.COMPLETED.value,
                transactions.c.transaction_type.in_(
                    [TransactionType.DEBIT.value, TransactionType.TRANSFER_OUT.value]
                ),
            )
            .group_by(transactions.c.hold_id)
            .subquery()
        )
        query = (
            select(holds.c.hold_id)
            .select_from(holds.outerjoin(captured, captured.c.hold_id == holds.c.hold_id))
            .where(holds.c.captured_amount != func.coalesce(captured.c.total, _MONEY_ZERO))
            .limit(limit)
        )
        return [row.hold_id for row in await self.connection.execute(query)]

    # --- journal and outbox --------------------------------------------------------------------

    async def add_journal(self, entries: Sequence[JournalEntry]) -> None:
        await self.connection.execute(
            insert(transaction_logs),
            [{name: getattr(entry, name) for name in _JOURNAL_FIELDS} for entry in entries],
        )

    async def add_events(self, events: Sequence[LedgerEvent]) -> None:
        rows = [row for event in events for row in self._encode_events(event)]
        if rows:
            await self.connection.execute(insert(outbox), rows)

    # --- reconciliation ------------------------------------------------------------------------

    async def balance_totals_by_currency(self) -> dict[str, Decimal]:
        result = await self.connection.execute(
            select(accounts.c.currency, func.sum(balances.c.current_balance))
            .join(accounts, accounts.c.account_id == balances.c.account_id)
            .group_by(accounts.c.currency)
        )
        return {currency: total or _ZERO for currency, total in result}

    async def completed_totals(self) -> dict[tuple[str, str], Decimal]:
        result = await self.connection.execute(
            select(
                transactions.c.currency,
                transactions.c.transaction_type,
                func.sum(transactions.c.amount),
            )
            .where(transactions.c.status == TransactionStatus.COMPLETED.value)
            .group_by(transactions.c.currency, transactions.c.transaction_type)
        )
        return {(currency, kind): total for currency, kind, total in result}

    async def account_mismatches(self, limit: int) -> list[AccountMismatch]:
        signed = func.sum(_SIGNED_AMOUNT)
        legs = (
            select(transactions.c.account_id, signed.label("legs_total"))
            .where(transactions.c.status == TransactionStatus.COMPLETED.value)
            .group_by(transactions.c.account_id)
            .subquery()
        )
        held = (
            select(holds.c.account_id, _HELD_SUM.label("held"))
            .where(holds.c.status == HoldStatus.OPEN.value)
            .group_by(holds.c.account_id)
            .subquery()
        )
        open_holds = type_coerce(func.coalesce(held.c.held, _MONEY_ZERO), Money)
        query = (
            select(
                balances.c.account_id,
                balances.c.current_balance,
                balances.c.available_balance,
                legs.c.legs_total,
                balances.c.overdraft_limit,
                open_holds,
            )
            .select_from(
                balances.outerjoin(legs, legs.c.account_id == balances.c.account_id).outerjoin(
                    held, held.c.account_id == balances.c.account_id
                )
            )
            .where(
                or_(
                    balances.c.current_balance != func.coalesce(legs.c.legs_total, _ZERO),
                    balances.c.available_balance != balances.c.current_balance - open_holds,
                    balances.c.available_balance < -balances.c.overdraft_limit,
                    balances.c.current_balance < -balances.c.overdraft_limit,
                )
            )
            .limit(limit)
        )
        return [AccountMismatch(*row) for row in await self.connection.execute(query)]

    async def unmatched_transfer_legs(self, limit: int) -> list[UUID]:
        partner = transactions.alias("partner")
        query = (
            select(transactions.c.transaction_id)
            .select_from(
                transactions.outerjoin(
                    partner, partner.c.transaction_id == transactions.c.related_transaction_id
                )
            )
            .where(
                transactions.c.status == TransactionStatus.COMPLETED.value,
                transactions.c.transaction_type.in_(
                    [TransactionType.TRANSFER_OUT.value, TransactionType.TRANSFER_IN.value]
                ),
                or_(
                    partner.c.transaction_id.is_(None),
                    partner.c.status != TransactionStatus.COMPLETED.value,
                    partner.c.amount != transactions.c.amount,
                ),
            )
            .limit(limit)
        )
        return [row.transaction_id for row in await self.connection.execute(query)]


def _is_reference_taken(error: IntegrityError) -> bool:
    """The violated unique key is the idempotency key (not, say, an account number)."""
    if not is_unique_violation(error):
        return False
    name = constraint_of(error)
    if name is not None:
        return name in (REFERENCE_KEY, HOLD_REFERENCE_KEY)
    message = str(error.orig)
    return REFERENCE_KEY_SQLITE_COLUMNS in message or HOLD_REFERENCE_KEY_SQLITE_COLUMNS in message


class SqlUnitOfWork:
    """``UnitOfWork`` on the database: one transaction per ``run``, retried when safe (see
    ``Database.run_in_transaction``), a used idempotency key raised as a domain error.
    ``read_may_lag`` goes through ``replicas`` when there are read replicas (PostgreSQL);
    without them (and always on SQLite) it reads on the primary like ``read``."""

    def __init__(
        self,
        database: Database,
        encode_events: OutboxEncoder,
        *,
        replicas: ReplicaReads | None = None,
    ) -> None:
        self._database = database
        self._encode_events = encode_events
        self.replicas = replicas

    async def run(self, work: Callable[[SqlLedgerStore], Awaitable[T]]) -> T:
        async def in_transaction(connection: AsyncConnection) -> T:
            return await work(SqlLedgerStore(connection, self._encode_events))

        try:
            return await self._database.run_in_transaction(in_transaction)
        except IntegrityError as error:
            if _is_reference_taken(error):
                raise ReferenceAlreadyUsed("the idempotency key is already used") from error
            raise

    @asynccontextmanager
    async def read(self) -> AsyncIterator[SqlLedgerStore]:
        async with self._database.read() as connection:
            yield SqlLedgerStore(connection, self._encode_events)

    async def read_may_lag(self, caller: UUID, work: Callable[[SqlLedgerStore], Awaitable[T]]) -> T:
        async def on_primary() -> T:
            async with self.read() as store:
                return await work(store)

        if self.replicas is None:
            return await on_primary()

        async def on_replica(connection: AsyncConnection) -> T:
            return await work(SqlLedgerStore(connection, self._encode_events))

        return await self.replicas.run(caller, on_replica, on_primary)
