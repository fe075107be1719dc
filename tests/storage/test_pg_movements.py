"""PostgreSQL decides a group of movements in one server-side call (``storage.pg_movements``,
migration 0004): the same outcomes, balances, legs, journal and outbox rows as the ledger's own
decisions item by item (``groups.decide_each``), and the same invariants under concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
import pytest
from sqlalchemy import insert, text

from banking.domain.clock import utc_now
from banking.domain.errors import (
    BankingError,
    BatchItemFailed,
    IdempotencyConflict,
    ValidationFailed,
)
from banking.domain.records import (
    Account,
    DebitOrCredit,
    MovementResult,
    Transaction,
    TransactionStatus,
    TransactionType,
    TransferRequest,
)
from banking.domain.roles import Actor, Role
from banking.events.outbox import outbox_rows
from banking.ledger.checks import check_movement
from banking.ledger.groups import (
    Decided,
    GroupItem,
    ItemResult,
    decide_each,
    run_atomic,
    run_group,
)
from banking.ledger.ports import LedgerStore
from banking.ledger.reconcile import reconcile
from banking.ledger.recording import journal_entry
from banking.storage.database import Database, create_engine
from banking.storage.ledger_store import SqlLedgerStore, SqlUnitOfWork
from banking.storage.migrate import downgrade, upgrade
from banking.storage.tables import users
from tests.conftest import TEMPLATE_DATABASE, _admin_execute, _with_database, make_settings

pytestmark = pytest.mark.postgres

T = TypeVar("T")
DEBIT, CREDIT, TRANSFER = (
    TransactionType.DEBIT,
    TransactionType.CREDIT,
    TransactionType.TRANSFER_OUT,
)
FUNCTION = "banking_decide_movements"
_NO_ID = uuid.UUID(int=0)
_NO_TIME = datetime(2000, 1, 1, tzinfo=UTC)


# --- the books on one PostgreSQL database ----------------------------------------------------


class EachStore(SqlLedgerStore):
    """The PostgreSQL store deciding with the ledger's own code, item by item: the reference."""

    async def decide_movements(self, items: Sequence[GroupItem]) -> list[Decided]:
        return await decide_each(self, items)


class EachUnitOfWork(SqlUnitOfWork):
    """``SqlUnitOfWork`` whose ``run`` hands out an ``EachStore``."""

    async def run(self, work: Callable[[SqlLedgerStore], Awaitable[T]]) -> T:
        async def on_reference(store: SqlLedgerStore) -> T:
            return await work(EachStore(store.connection, outbox_rows))

        return await super().run(on_reference)


@dataclass
class Books:
    """One database, its unit of work, and ways to set it up and read it back."""

    database: Database
    unit_of_work: SqlUnitOfWork

    async def user(self, user_id: uuid.UUID, role: Role) -> Actor:
        username = f"{role.value}-{user_id.hex[:8]}"
        async with self.database.unit_of_work() as connection:
            await connection.execute(
                insert(users).values(
                    user_id=user_id,
                    username=username,
                    password_hash="!",
                    email=f"{username}@example.test",
                    role=role.value,
                    is_active=True,
                    created_at=utc_now(),
                )
            )
        return Actor(user_id, username, role)

    async def account(self, account_id: uuid.UUID, owner: Actor, number: int) -> None:
        now = utc_now()
        account = Account(
            account_id, f"T{number:019d}", owner.user_id, "checking", "USD", True, now, now
        )

        async def open_account(store: LedgerStore) -> None:
            await store.insert_account(account)

        await self.unit_of_work.run(open_account)

    async def freeze(self, account_id: uuid.UUID) -> None:
        async def set_inactive(store: LedgerStore) -> None:
            await store.set_account_active(account_id, is_active=False, at=utc_now())

        await self.unit_of_work.run(set_inactive)

    async def rows(self, statement: str) -> list[dict[str, Any]]:
        async with self.database.read() as connection:
            return [dict(row._mapping) for row in await connection.execute(text(statement))]

    async def balances(self) -> dict[uuid.UUID, tuple[Decimal, Decimal, int]]:
        rows = await self.rows(
            "SELECT account_id, current_balance, available_balance, version FROM balances"
        )
        return {
            row["account_id"]: (row["current_balance"], row["available_balance"], row["version"])
            for row in rows
        }

    async def snapshot(self) -> dict[str, Any]:
        """Everything a movement writes, without the ids and times that are generated."""
        legs = await self.rows("SELECT * FROM transactions")
        journal = await self.rows(
            "SELECT t.account_id, t.reference_id, t.transaction_type, l.event_type, l.metadata,"
            " l.created_by FROM transaction_logs l JOIN transactions t USING (transaction_id)"
        )
        events = await self.rows(
            "SELECT topic, event_key, event_type, schema_version, payload, trace_id"
            " FROM outbox ORDER BY outbox_id"
        )
        return {
            "balances": await self.balances(),
            "legs": sorted(_leg_row_shape(row) for row in legs),
            "journal": sorted(
                tuple(json.dumps(value, sort_keys=True, default=str) for value in row.values())
                for row in journal
            ),
            "outbox": [_event_shape(row) for row in events],
        }


def _leg_row_shape(row: dict[str, Any]) -> tuple[str, ...]:
    shaped = dict(row)
    shaped.pop("transaction_id")
    shaped.pop("created_at")
    shaped["related_transaction_id"] = shaped["related_transaction_id"] is not None
    return tuple(f"{name}={value}" for name, value in sorted(shaped.items()))


def _event_shape(row: dict[str, Any]) -> dict[str, Any]:
    payload = json.loads(row["payload"])
    payload.pop("transaction_id", None)
    payload.pop("timestamp", None)
    if "related_transaction_id" in payload:
        payload["related_transaction_id"] = payload["related_transaction_id"] is not None
    return {**row, "payload": payload}


def _leg_shape(leg: Transaction) -> Transaction:
    return replace(
        leg,
        transaction_id=_NO_ID,
        related_transaction_id=_NO_ID if leg.related_transaction_id else None,
        created_at=_NO_TIME,
    )


def _result_shape(result: ItemResult) -> tuple[Any, ...]:
    if isinstance(result, BankingError):
        return ("error", result.code, result.message, result.transaction_id is not None)
    return ("moved", _leg_shape(result.transaction), result.replayed)


@contextlib.asynccontextmanager
async def open_books(url: str, *, reference: bool = False) -> AsyncIterator[Books]:
    database = Database(create_engine(make_settings(url)))
    kind = EachUnitOfWork if reference else SqlUnitOfWork
    try:
        yield Books(database, kind(database, outbox_rows))
    finally:
        await database.dispose()


@pytest.fixture
def second_postgres_url(pg_template: tuple[str, str]) -> Iterator[str]:
    """Another fresh PostgreSQL database, for the reference run."""
    url, admin = pg_template
    name = f"t_{uuid.uuid4().hex[:16]}"
    asyncio.run(_admin_execute(admin, f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DATABASE}"'))
    yield _with_database(url, name)
    asyncio.run(_admin_execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def item(
    actor: Actor,
    kind: TransactionType,
    account_id: uuid.UUID,
    amount: str,
    reference_id: str,
    *,
    to: uuid.UUID | None = None,
    currency: str = "USD",
    description: str | None = None,
    metadata: dict[str, str] | None = None,
) -> GroupItem:
    request: DebitOrCredit | TransferRequest
    labels = metadata or {}
    if kind is TRANSFER:
        if to is None:
            raise ValueError("a transfer needs a destination")
        request = TransferRequest(
            account_id, to, Decimal(amount), currency, description, reference_id, labels
        )
    else:
        request = DebitOrCredit(
            account_id, Decimal(amount), currency, description, reference_id, labels
        )
    return GroupItem(actor, check_movement(kind, request), trace_id=f"trace-{reference_id}")


def _pg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


# --- the migration ---------------------------------------------------------------------------


async def _function_exists(url: str) -> bool:
    connection = await asyncpg.connect(_pg_dsn(url))
    try:
        found = await connection.fetchval(
            "SELECT count(*) FROM pg_proc WHERE proname = $1", FUNCTION
        )
    finally:
        await connection.close()
    return bool(found == 1)


def test_the_function_comes_with_its_migration_and_goes_with_its_downgrade(
    postgres_url: str,
) -> None:
    assert asyncio.run(_function_exists(postgres_url))
    downgrade(postgres_url, "0003")
    assert not asyncio.run(_function_exists(postgres_url))
    upgrade(postgres_url)
    assert asyncio.run(_function_exists(postgres_url))


# --- a mixed group: the function and the reference agree --------------------------------------

IDS = {
    name: uuid.uuid4()
    for name in ("alice", "bob", "teller", "auditor", "a1", "a2", "b1", "frozen", "full", "hot")
}
UNKNOWN_ACCOUNT = uuid.uuid4()


async def _world(books: Books) -> dict[str, Actor]:
    """The same users and accounts (same ids) on either database, funded through the books'
    own path, with one key used before the group."""
    alice = await books.user(IDS["alice"], Role.CUSTOMER)
    bob = await books.user(IDS["bob"], Role.CUSTOMER)
    teller = await books.user(IDS["teller"], Role.TELLER)
    auditor = await books.user(IDS["auditor"], Role.AUDITOR)
    owners = {"a1": alice, "a2": alice, "b1": bob, "frozen": bob, "full": bob, "hot": bob}
    for number, (name, owner) in enumerate(owners.items()):
        await books.account(IDS[name], owner, number)
    funding = [
        item(teller, CREDIT, IDS["a1"], "100.00", "fund-a1"),
        item(teller, CREDIT, IDS["a2"], "50.00", "fund-a2"),
        item(teller, CREDIT, IDS["frozen"], "10.00", "fund-frozen"),
        item(teller, CREDIT, IDS["full"], "9999999999999990.00", "fund-full"),
        item(alice, DEBIT, IDS["a1"], "1.00", "before"),
    ]
    funded = await run_group(books.unit_of_work, funding)
    assert all(isinstance(result, MovementResult) for result in funded), funded
    await books.freeze(IDS["frozen"])
    return {"alice": alice, "bob": bob, "teller": teller, "auditor": auditor}


def _mixed_group(actors: dict[str, Actor]) -> list[GroupItem]:
    alice, bob, teller, auditor = (actors[name] for name in ("alice", "bob", "teller", "auditor"))
    a1, a2, b1, frozen, full, hot = (
        IDS[name] for name in ("a1", "a2", "b1", "frozen", "full", "hot")
    )
    return [
        item(alice, DEBIT, a1, "30.00", "d1", description="groceries", metadata={"o": "1"}),  # 0
        item(teller, CREDIT, b1, "20.00", "c1"),  # 1 completed
        item(alice, TRANSFER, a1, "10.00", "t1", to=b1, metadata={"o": "2"}),  # 2 both legs
        item(bob, TRANSFER, b1, "5.00", "t2", to=a1),  # 3 the other direction
        item(alice, DEBIT, a2, "500.00", "d2", metadata={"o": "4"}),  # 4 declined: no funds
        item(teller, CREDIT, frozen, "10.00", "c2"),  # 5 declined: inactive
        item(teller, CREDIT, full, "10.00", "c3"),  # 6 refused: over the limit
        item(teller, CREDIT, full, "5.00", "c3"),  # 7 the key is still free: completed
        item(teller, DEBIT, UNKNOWN_ACCOUNT, "1.00", "d3"),  # 8 not found
        item(bob, DEBIT, a1, "1.00", "d4"),  # 9 another customer's account: not found
        item(alice, DEBIT, a1, "1.00", "dup"),  # 10 completed
        item(alice, DEBIT, a1, "1.00", "dup"),  # 11 replays 10
        item(alice, DEBIT, a1, "2.00", "dup"),  # 12 same key, other amount: conflict
        item(alice, DEBIT, a1, "1.00", "before"),  # 13 replays the key used before the group
        item(alice, DEBIT, a1, "1.00", "d5", currency="EUR"),  # 14 currency mismatch
        item(auditor, DEBIT, a1, "1.00", "d6"),  # 15 auditors move nothing
        item(alice, TRANSFER, a1, "1.00", "t3", to=frozen),  # 16 declined: inactive destination
        item(alice, TRANSFER, a1, "5.00", "t4", to=full),  # 17 refused: destination over the limit
        item(alice, TRANSFER, a2, "60.00", "t5", to=b1),  # 18 declined: insufficient funds
        *[item(teller, CREDIT, hot, "2.50", f"hot-c{n}") for n in range(3)],  # 19-21 a hot account
        *[item(alice, TRANSFER, a1, "1.25", f"hot-t{n}", to=hot) for n in range(3)],  # 22-24
        item(bob, TRANSFER, hot, "3.00", "hot-back", to=b1),  # 25
        item(bob, DEBIT, hot, "100.00", "hot-d"),  # 26 declined: insufficient funds
    ]


async def test_a_mixed_group_is_decided_as_the_ledger_decides_it_item_by_item(
    postgres_url: str, second_postgres_url: str
) -> None:
    async with (
        open_books(postgres_url) as fast,
        open_books(second_postgres_url, reference=True) as reference,
    ):
        actors = await _world(fast)
        assert await _world(reference) == actors
        group = _mixed_group(actors)

        fast_results = await run_group(fast.unit_of_work, group)
        reference_results = await run_group(reference.unit_of_work, group)

        assert [_result_shape(r) for r in fast_results] == [
            _result_shape(r) for r in reference_results
        ]
        assert await fast.snapshot() == await reference.snapshot()

        # The outcomes themselves (not only that both paths agree on them).
        def status(index: int) -> TransactionStatus | str:
            result = fast_results[index]
            if isinstance(result, BankingError):
                return result.code
            return result.transaction.status

        completed, failed = TransactionStatus.COMPLETED, TransactionStatus.FAILED
        assert [status(index) for index in range(len(group))] == [
            completed, completed, completed, completed, failed, failed,
            "VALIDATION_ERROR", completed, "ACCOUNT_NOT_FOUND", "ACCOUNT_NOT_FOUND",
            completed, completed, "IDEMPOTENCY_CONFLICT", completed, "CURRENCY_MISMATCH",
            "FORBIDDEN", failed, "VALIDATION_ERROR", failed,
            completed, completed, completed, completed, completed, completed, completed, failed,
        ]  # fmt: skip
        replayed = [
            i for i, r in enumerate(fast_results) if isinstance(r, MovementResult) and r.replayed
        ]
        assert replayed == [11, 13]
        first, again = fast_results[10], fast_results[11]
        assert isinstance(first, MovementResult) and isinstance(again, MovementResult)
        assert again.transaction == first.transaction
        assert isinstance(fast_results[6], ValidationFailed)
        assert isinstance(fast_results[12], IdempotencyConflict)
        balances = await fast.balances()
        # a1: 100 - 1 (before) - 30 - 10 + 5 - 1 (dup) - 3 * 1.25
        assert balances[IDS["a1"]][1] == Decimal("59.25")
        assert balances[IDS["b1"]] == (Decimal("28.00"), Decimal("28.00"), 5)
        assert balances[IDS["full"]][1] == Decimal("9999999999999995.00")
        assert balances[IDS["frozen"]] == (Decimal("10.00"), Decimal("10.00"), 2)
        assert balances[IDS["hot"]] == (Decimal("8.25"), Decimal("8.25"), 8)
        assert balances[IDS["a2"]] == (Decimal("50.00"), Decimal("50.00"), 2)
        assert (await reconcile(fast.unit_of_work)).clean

        # Each stored journal row holds what recording.journal_entry makes of its leg.
        journal = {
            row["transaction_id"]: row for row in await fast.rows("SELECT * FROM transaction_logs")
        }
        for group_item, result in zip(group, fast_results, strict=True):
            if not isinstance(result, MovementResult) or result.replayed:
                continue
            legs = [result.transaction]
            if result.transaction.related_transaction_id is not None:
                async with fast.unit_of_work.read() as store:
                    in_leg = await store.get_transaction(result.transaction.related_transaction_id)
                assert in_leg is not None
                legs.append(in_leg)
            for leg in legs:
                expected = journal_entry(leg, group_item.actor, group_item.trace_id)
                stored = journal[leg.transaction_id]
                assert stored["metadata"] == expected.metadata
                assert (stored["event_type"], stored["created_by"]) == (
                    expected.event_type,
                    expected.created_by,
                )


async def test_a_refused_single_movement_leaves_nothing_behind(
    postgres_url: str,
) -> None:
    async with open_books(postgres_url) as books:
        actors = await _world(books)
        before = await books.snapshot()
        for refused in (
            item(actors["teller"], CREDIT, IDS["full"], "10.00", "single-over"),
            item(actors["alice"], TRANSFER, IDS["a1"], "10.00", "single-t", to=IDS["full"]),
            item(actors["bob"], DEBIT, IDS["a1"], "1.00", "single-other"),
        ):
            (result,) = await run_group(books.unit_of_work, [refused])
            assert isinstance(result, BankingError)
        assert await books.snapshot() == before


# --- concurrency ------------------------------------------------------------------------------

ACCOUNTS = 6
GROUPS = 8
ITEMS_PER_GROUP = 30
ROUNDS = 3


def _concurrent_groups(
    teller: Actor, accounts: list[uuid.UUID], rounds_seed: int
) -> list[list[GroupItem]]:
    """Groups over shared accounts (one hot, transfers both ways), with keys repeated inside a
    group and across groups (the same request sent twice), and one decline each."""
    rng = random.Random(rounds_seed)
    hot = accounts[0]
    groups: list[list[GroupItem]] = []
    sent: list[GroupItem] = []
    for group_number in range(GROUPS):
        group: list[GroupItem] = []
        for number in range(ITEMS_PER_GROUP):
            if sent and rng.random() < 0.15:
                group.append(rng.choice(sent))  # a duplicate of an earlier request
                continue
            key = f"r{rounds_seed}-g{group_number}-{number}"
            amount = f"{rng.randint(1, 500) / 100:.2f}"
            source = hot if rng.random() < 0.4 else rng.choice(accounts)
            destination = rng.choice([a for a in accounts if a != source])
            draw = rng.random()
            if draw < 0.7:
                new = item(teller, TRANSFER, source, amount, key, to=destination)
            elif draw < 0.85:
                new = item(teller, DEBIT, source, amount, key)
            else:
                new = item(teller, CREDIT, source, amount, key)
            group.append(new)
            sent.append(new)
        decline = item(
            teller, DEBIT, rng.choice(accounts), "99999999.00", f"r{rounds_seed}-no-{group_number}"
        )
        group.insert(rng.randrange(len(group)), decline)
        groups.append(group)
    return groups


def _effects(groups: list[list[GroupItem]]) -> dict[uuid.UUID, Decimal]:
    """What the groups move, each key once, when nothing but the large debits declines."""
    moved: dict[uuid.UUID, Decimal] = defaultdict(Decimal)
    seen: set[tuple[uuid.UUID, str]] = set()
    for group in groups:
        for group_item in group:
            checked = group_item.checked
            key = (checked.account_id, checked.reference_id)
            if key in seen or checked.reference_id.split("-")[1] == "no":
                seen.add(key)
                continue
            seen.add(key)
            if checked.kind is CREDIT:
                moved[checked.account_id] += checked.amount
            else:
                moved[checked.account_id] -= checked.amount
            if checked.counterparty_id is not None:
                moved[checked.counterparty_id] += checked.amount
    return moved


async def test_concurrent_groups_keep_every_invariant(postgres_url: str) -> None:
    async with open_books(postgres_url) as books:
        customer = await books.user(uuid.uuid4(), Role.CUSTOMER)
        teller = await books.user(uuid.uuid4(), Role.TELLER)
        accounts = [uuid.uuid4() for _ in range(ACCOUNTS)]
        for number, account_id in enumerate(accounts):
            await books.account(account_id, customer, number)
        funding = [item(teller, CREDIT, a, "5000.00", f"fund-{n}") for n, a in enumerate(accounts)]
        await run_group(books.unit_of_work, funding)
        expected = {account_id: Decimal("5000.00") for account_id in accounts}

        for round_number in range(ROUNDS):
            groups = _concurrent_groups(teller, accounts, round_number)
            outcomes = await asyncio.gather(
                *(run_group(books.unit_of_work, group) for group in groups)
            )

            by_key: dict[tuple[uuid.UUID, str], list[MovementResult]] = defaultdict(list)
            for group, results in zip(groups, outcomes, strict=True):
                for group_item, result in zip(group, results, strict=True):
                    assert isinstance(result, MovementResult), result
                    checked = group_item.checked
                    by_key[(checked.account_id, checked.reference_id)].append(result)
            for key, answers in by_key.items():
                assert [r.replayed for r in answers].count(False) == 1, key
                assert len({r.transaction.transaction_id for r in answers}) == 1, key
                declined = key[1].split("-")[1] == "no"
                expected_status = (
                    TransactionStatus.FAILED if declined else TransactionStatus.COMPLETED
                )
                assert answers[0].transaction.status is expected_status, key
            for account_id, amount in _effects(groups).items():
                expected[account_id] += amount

            balances = await books.balances()
            assert {a: balances[a][1] for a in accounts} == expected

        legs = await books.rows(
            "SELECT account_id, reference_id, count(*) AS legs FROM transactions"
            " WHERE transaction_type <> 'transfer_in' GROUP BY account_id, reference_id"
        )
        assert {row["legs"] for row in legs} == {1}
        assert (await reconcile(books.unit_of_work)).clean

        # Per account, the outbox holds its balance events in version order, none missing.
        versions: dict[str, list[int]] = defaultdict(list)
        for row in await books.rows(
            "SELECT event_key, payload FROM outbox WHERE event_type = 'balance.updated'"
            " ORDER BY outbox_id"
        ):
            versions[row["event_key"]].append(json.loads(row["payload"])["version"])
        balances = await books.balances()
        for account_id in accounts:
            final_version = balances[account_id][2]
            assert versions[str(account_id)] == list(range(2, final_version + 1))


WAIT_POLLS_MAX = 3000


async def _wait_until_blocked(url: str, query_fragment: str) -> None:
    """Wait until a session runs a statement containing ``query_fragment`` and waits for a
    lock (synchronization, not a timing assertion)."""
    connection = await asyncpg.connect(_pg_dsn(url))
    try:
        for _ in range(WAIT_POLLS_MAX):
            if await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%'",
                query_fragment,
            ):
                return
            await asyncio.sleep(0.01)
    finally:
        await connection.close()
    raise AssertionError(f"no session waited for a lock in {query_fragment!r}")


@pytest.mark.parametrize("shape", ["single", "group"])
async def test_a_key_committed_elsewhere_during_the_call_is_replayed(
    postgres_url: str, shape: str
) -> None:
    """The function cannot see a key that another transaction has inserted and not committed;
    its insert waits, then fails when that one commits. A single movement surfaces it as a used
    key and replays; a group runs again once (a serialization failure) and replays that item,
    deciding the others afresh. Nothing of the first attempt remains."""
    async with open_books(postgres_url) as books:
        actors = await _world(books)
        alice = actors["alice"]
        raced = item(alice, DEBIT, IDS["a1"], "7.00", "raced")
        other = item(alice, DEBIT, IDS["a1"], "3.00", "other")
        group = [raced] if shape == "single" else [other, raced]
        before = await books.snapshot()
        leg_id = uuid.uuid4()
        retries: list[None] = []
        books.database.on_retry = lambda: retries.append(None)
        holder = await asyncpg.connect(_pg_dsn(postgres_url))
        try:
            transaction = holder.transaction()
            await transaction.start()
            # What an accepted asynchronous command stores: a pending leg with the same key.
            await holder.execute(
                "INSERT INTO transactions (transaction_id, account_id, transaction_type, amount,"
                " currency, reference_id, created_at, status, request_fingerprint, created_by)"
                " VALUES ($1, $2, 'debit', 7.00, 'USD', 'raced', now(), 'pending', $3, $4)",
                leg_id,
                IDS["a1"],
                raced.checked.fingerprint,
                alice.user_id,
            )
            running = asyncio.ensure_future(run_group(books.unit_of_work, group))
            await _wait_until_blocked(postgres_url, FUNCTION)
            await transaction.commit()
            results = await running
        finally:
            await holder.close()

        *others, replayed = results
        assert isinstance(replayed, MovementResult) and replayed.replayed
        assert replayed.transaction.transaction_id == leg_id
        assert replayed.transaction.status is TransactionStatus.PENDING
        after = await books.snapshot()
        new_events = after["outbox"][len(before["outbox"]) :]
        if shape == "single":
            assert retries == []
            assert after["balances"] == before["balances"]
            assert new_events == []
        else:
            assert len(retries) == 1
            (first,) = others
            assert isinstance(first, MovementResult) and not first.replayed
            assert first.transaction.status is TransactionStatus.COMPLETED
            assert after["balances"][IDS["a1"]][1] == Decimal("96.00")  # 100 - 1 - 3
            assert [event["event_type"] for event in new_events] == [
                "transaction.completed",
                "balance.updated",
            ]
        counted = Counter(
            row["reference_id"] for row in await books.rows("SELECT reference_id FROM transactions")
        )
        assert counted["raced"] == 1
        assert counted["other"] == (0 if shape == "single" else 1)
        assert len(after["journal"]) == len(before["journal"]) + len(others)


async def test_an_atomic_group_that_fails_stores_nothing(postgres_url: str) -> None:
    async with open_books(postgres_url) as books:
        actors = await _world(books)
        alice = actors["alice"]
        before = await books.snapshot()
        group = [
            item(alice, DEBIT, IDS["a1"], "5.00", "atomic-1"),
            item(alice, TRANSFER, IDS["a1"], "5.00", "atomic-2", to=IDS["b1"]),
            item(alice, DEBIT, IDS["a2"], "500.00", "atomic-3"),  # declined
        ]
        with pytest.raises(BatchItemFailed) as failed:
            await run_atomic(books.unit_of_work, group)
        assert failed.value.index == 2
        assert await books.snapshot() == before
