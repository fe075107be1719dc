"""Use cases on accounts: open, read, look up, list, activate or freeze, read the balance."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Protocol
from uuid import UUID, uuid4

from sqlalchemy.ext.asyncio import AsyncConnection

from banking.domain.errors import AccountNotFound, InvariantViolated, ValidationFailed
from banking.domain.money import normalize_currency
from banking.domain.records import Account, Balance
from banking.domain.roles import Actor, Role
from banking.ledger.access import require_manages_accounts, require_visible
from banking.storage import repositories as repo
from banking.storage.database import Database
from banking.storage.types import utc_now

ACCOUNT_TYPES = frozenset({"checking", "savings", "business", "loan"})
ACCOUNT_NUMBER_DIGITS = 11  # plus one Luhn check digit
ACCOUNT_NUMBER_ATTEMPTS_MAX = 10
ACCOUNTS_LISTED_MAX = 500


def luhn_check_digit(digits: str) -> str:
    """The Luhn (mod 10) check digit for a string of decimal digits."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 0:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return str((10 - total % 10) % 10)


def is_valid_account_number(number: str) -> bool:
    return number.isdigit() and len(number) > 1 and luhn_check_digit(number[:-1]) == number[-1]


def new_account_number() -> str:
    body = "".join(secrets.choice("0123456789") for _ in range(ACCOUNT_NUMBER_DIGITS))
    return body + luhn_check_digit(body)


class BalanceCache(Protocol):
    """Read-through cache for showing balances (``banking.cache``: memory or Redis). Money
    decisions never read it; the movement service invalidates it after every commit."""

    async def read_through(
        self, account_id: UUID, load: Callable[[], Awaitable[tuple[Account, Balance]]]
    ) -> tuple[Account, Balance]: ...


class NoBalanceCache:
    async def read_through(
        self, account_id: UUID, load: Callable[[], Awaitable[tuple[Account, Balance]]]
    ) -> tuple[Account, Balance]:
        return await load()


class AccountService:
    def __init__(self, database: Database, balance_cache: BalanceCache | None = None) -> None:
        self._database = database
        self._balance_cache = balance_cache or NoBalanceCache()

    async def open(
        self, actor: Actor, *, account_type: str, currency: str, customer_id: UUID | None
    ) -> tuple[Account, Balance]:
        """Open an account with a zero balance. Customers open their own; tellers and admins
        open for a customer (``customer_id``); auditors open none."""
        if account_type not in ACCOUNT_TYPES:
            raise ValidationFailed(
                f"account_type must be one of {sorted(ACCOUNT_TYPES)}", field="account_type"
            )
        code = normalize_currency(currency)
        owner_id = self._owner_for(actor, customer_id)

        async def work(connection: AsyncConnection) -> tuple[Account, Balance]:
            owner = await repo.get_user(connection, owner_id)
            if owner is None or owner.role != Role.CUSTOMER.value or not owner.is_active:
                raise ValidationFailed(
                    "customer_id must be an active customer", field="customer_id"
                )
            number = await self._unused_account_number(connection)
            now = utc_now()
            account = Account(uuid4(), number, owner_id, account_type, code, True, now, now)
            balance = await repo.insert_account(connection, account, balance_id=uuid4())
            return account, balance

        return await self._database.run_in_transaction(work)

    @staticmethod
    def _owner_for(actor: Actor, customer_id: UUID | None) -> UUID:
        if actor.role is Role.CUSTOMER:
            if customer_id is not None and customer_id != actor.user_id:
                raise ValidationFailed(
                    "customers open accounts for themselves only", field="customer_id"
                )
            return actor.user_id
        require_manages_accounts(actor)
        if customer_id is None:
            raise ValidationFailed("customer_id is required", field="customer_id")
        return customer_id

    @staticmethod
    async def _unused_account_number(connection: AsyncConnection) -> str:
        for _ in range(ACCOUNT_NUMBER_ATTEMPTS_MAX):
            number = new_account_number()
            if not await repo.account_number_exists(connection, number):
                return number
        raise InvariantViolated("could not find a free account number")

    async def get(self, actor: Actor, account_id: UUID) -> Account:
        async with self._database.read() as connection:
            return require_visible(actor, await repo.get_account(connection, account_id))

    async def find_by_number(self, actor: Actor, account_number: str) -> Account:
        if not is_valid_account_number(account_number):
            raise ValidationFailed("account_number is not valid", field="account_number")
        async with self._database.read() as connection:
            found = await repo.find_account_by_number(connection, account_number)
            return require_visible(actor, found)

    async def list(self, actor: Actor, *, limit: int = ACCOUNTS_LISTED_MAX) -> list[Account]:
        """A customer's own accounts; staff see all (bounded)."""
        customer_id = None if actor.reads_everything else actor.user_id
        async with self._database.read() as connection:
            return await repo.list_accounts(
                connection, customer_id=customer_id, limit=min(limit, ACCOUNTS_LISTED_MAX)
            )

    async def set_active(self, actor: Actor, account_id: UUID, *, is_active: bool) -> Account:
        """Freeze or re-open an account (teller or admin). A frozen account moves no money."""
        require_manages_accounts(actor)

        async def work(connection: AsyncConnection) -> Account:
            require_visible(actor, await repo.get_account(connection, account_id))
            await repo.set_account_active(connection, account_id, is_active=is_active, at=utc_now())
            updated = await repo.get_account(connection, account_id)
            if updated is None:
                raise AccountNotFound("account not found")
            return updated

        return await self._database.run_in_transaction(work)

    async def balance(self, actor: Actor, account_id: UUID) -> Balance:
        """The balance to show, through the balance cache (never used to decide money). The
        cache is keyed by account only: who may see it is checked on every read."""

        async def load() -> tuple[Account, Balance]:
            async with self._database.read() as connection:
                account = await repo.get_account(connection, account_id)
                if account is None:
                    raise AccountNotFound("account not found")
                balance = await repo.get_balance(connection, account_id)
            if balance is None:
                raise InvariantViolated(f"account {account_id} has no balance row")
            return account, balance

        account, balance = await self._balance_cache.read_through(account_id, load)
        require_visible(actor, account)
        return balance
