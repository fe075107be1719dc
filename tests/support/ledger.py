"""The core without any door: the ledger's services on a unit of work, with helpers to make
users and funded accounts. Used on the in-memory store (``tests/ledger``) and, through the
same scenarios, on SQLite and PostgreSQL (``tests/storage/test_store_contract.py``)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from banking.domain.records import (
    Account,
    Balance,
    DebitOrCredit,
    HistoryFilter,
    Owner,
    Transaction,
)
from banking.domain.roles import Actor, Role
from banking.ledger.accounts import AccountService
from banking.ledger.history import HistoryService
from banking.ledger.movements import MovementService
from banking.ledger.ports import UnitOfWork
from banking.ledger.reconcile import ReconcileReport, reconcile

AddOwner = Callable[[Owner, str], Awaitable[None]]
# (topic, key, event type, payload) of every outbox row, in the order the relay publishes them.
OutboxRow = tuple[str, str, str, dict[str, Any]]
ReadOutbox = Callable[[], Awaitable[list[OutboxRow]]]
# The number of journal entries (``transaction_logs`` rows) the store holds.
CountJournal = Callable[[], Awaitable[int]]

# Bounds of what ``Core.books`` reads: far above what any test makes.
_ACCOUNTS_READ_MAX = 10_000
_LEGS_READ_MAX = 100_000


@dataclass(frozen=True)
class Books:
    """Everything a movement can change, as the store holds it: every account (with its
    active flag), every balance (with its version), every leg, the number of journal entries
    and the outbox rows. Two equal ``Books`` mean that nothing changed in between."""

    accounts: dict[uuid.UUID, Account]
    balances: dict[uuid.UUID, Balance]
    legs: dict[uuid.UUID, Transaction]
    journal_entries: int
    events: list[OutboxRow]

    def event_types(self) -> list[str]:
        return [row[2] for row in self.events]


@dataclass
class Core:
    """The ledger's use cases on one unit of work."""

    unit_of_work: UnitOfWork
    add_owner: AddOwner
    outbox: ReadOutbox
    count_journal: CountJournal | None = None

    def __post_init__(self) -> None:
        self.movements = MovementService(self.unit_of_work)
        self.accounts = AccountService(self.unit_of_work)
        self.history = HistoryService(self.unit_of_work, page_size_default=50, page_size_max=200)

    async def user(self, role: Role = Role.CUSTOMER, *, is_active: bool = True) -> Actor:
        user_id = uuid.uuid4()
        username = f"{role.value}-{user_id.hex[:8]}"
        await self.add_owner(Owner(user_id, role, is_active, username), username)
        return Actor(user_id, username, role)

    async def account(
        self,
        owner: Actor,
        balance: str = "0.00",
        *,
        currency: str = "USD",
        account_type: str = "checking",
    ) -> Account:
        """An account of ``owner``, funded with ``balance`` by a teller's credit."""
        teller = await self.user(Role.TELLER)
        account, _ = await self.accounts.open(
            teller, account_type=account_type, currency=currency, customer_id=owner.user_id
        )
        if Decimal(balance) > 0:
            await self.movements.credit(
                teller, DebitOrCredit(account.account_id, Decimal(balance), currency)
            )
        return account

    async def balance(self, account: Account) -> Balance:
        admin = Actor(uuid.uuid4(), "inspector", Role.AUDITOR)
        return await self.accounts.balance(admin, account.account_id)

    async def available(self, account: Account) -> Decimal:
        return (await self.balance(account)).available_balance

    async def reconcile(self) -> ReconcileReport:
        return await reconcile(self.unit_of_work)

    async def books(self) -> Books:
        """The whole ledger as the store holds it (read through the store port, the outbox
        and the journal counter), to compare before and after a request."""
        if self.count_journal is None:
            raise RuntimeError("this Core was made without a journal counter")
        accounts: dict[uuid.UUID, Account] = {}
        balances: dict[uuid.UUID, Balance] = {}
        legs: dict[uuid.UUID, Transaction] = {}
        async with self.unit_of_work.read() as store:
            for account in await store.list_accounts(customer_id=None, limit=_ACCOUNTS_READ_MAX):
                accounts[account.account_id] = account
                balance = await store.get_balance(account.account_id)
                if balance is not None:
                    balances[account.account_id] = balance
                for leg in await store.list_transactions(
                    account.account_id, HistoryFilter(), after=None, limit=_LEGS_READ_MAX
                ):
                    legs[leg.transaction_id] = leg
        return Books(accounts, balances, legs, await self.count_journal(), await self.outbox())
