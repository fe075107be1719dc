"""Use cases on accounts: open, read, look up, list, activate or freeze, read the balance."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID, uuid4

from banking.domain.clock import utc_now
from banking.domain.errors import AccountNotFound, InvariantViolated, ValidationFailed
from banking.domain.money import (
    check_amount_for_currency,
    format_amount,
    normalize_currency,
    parse_non_negative,
)
from banking.domain.records import Account, Balance, StaffAction, StaffActionType
from banking.domain.roles import Actor, Role
from banking.ledger.access import require_manages_accounts, require_visible
from banking.ledger.creation_keys import (
    ACCOUNT_CREATE,
    RETENTION_HOURS_DEFAULT,
    CreationKey,
    check_key,
    require_same,
)
from banking.ledger.history import decode_cursor, keyset_cursor, page_size_within
from banking.ledger.metadata import canonical_metadata, check_metadata
from banking.ledger.ports import BalanceCache, LedgerStore, NoBalanceCache, UnitOfWork

ACCOUNT_TYPES = frozenset({"checking", "savings", "business", "loan"})
ACCOUNT_NUMBER_DIGITS = 11  # plus one Luhn check digit
ACCOUNT_NUMBER_ATTEMPTS_MAX = 10
ACCOUNTS_LISTED_MAX = 500
OVERDRAFT_LIMIT_FIELD = "overdraft_limit"


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


@dataclass(frozen=True, slots=True)
class OpenedAccount:
    """An account just opened, or (``replayed``) the one an earlier request with the same
    ``Idempotency-Key`` opened, as it is now."""

    account: Account
    balance: Balance
    replayed: bool


@dataclass(frozen=True, slots=True)
class AccountPage:
    accounts: list[Account]
    next_cursor: str | None  # None on the last page


def encode_account_cursor(account: Account) -> str:
    """The history's cursor form (``history.decode_cursor`` reads it)."""
    return keyset_cursor(account.created_at, account.account_id)


class AccountService:
    def __init__(
        self,
        unit_of_work: UnitOfWork,
        balance_cache: BalanceCache | None = None,
        *,
        key_retention_hours: float = RETENTION_HOURS_DEFAULT,
        page_size_max: int = ACCOUNTS_LISTED_MAX,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._balance_cache = balance_cache or NoBalanceCache()
        self._key_retention = timedelta(hours=key_retention_hours)
        self.page_size_max = page_size_max
        # Without page_size a list answers what it always did: up to ACCOUNTS_LISTED_MAX.
        self.page_size_default = min(ACCOUNTS_LISTED_MAX, page_size_max)

    async def open(
        self,
        actor: Actor,
        *,
        account_type: str,
        currency: str,
        customer_id: UUID | None,
        metadata: Mapping[str, str] | None = None,
    ) -> tuple[Account, Balance]:
        """Open an account with a zero balance. Customers open their own; tellers and admins
        open for a customer (``customer_id``); auditors open none."""
        opened = await self.open_once(
            actor,
            account_type=account_type,
            currency=currency,
            customer_id=customer_id,
            idempotency_key=None,
            metadata=metadata,
        )
        return opened.account, opened.balance

    async def open_once(
        self,
        actor: Actor,
        *,
        account_type: str,
        currency: str,
        customer_id: UUID | None,
        idempotency_key: str | None,
        metadata: Mapping[str, str] | None = None,
    ) -> OpenedAccount:
        """``open`` under an ``Idempotency-Key`` (``banking.ledger.creation_keys``): the first
        request with the key opens the account; a retry with the same parameters answers that
        account (``replayed``); other parameters are ``IDEMPOTENCY_CONFLICT``, nothing opened.
        ``metadata`` (the caller's labels, ``ledger.metadata``'s rules) is one of them."""
        if account_type not in ACCOUNT_TYPES:
            raise ValidationFailed(
                f"account_type must be one of {sorted(ACCOUNT_TYPES)}", field="account_type"
            )
        code = normalize_currency(currency)
        owner_id = self._owner_for(actor, customer_id)
        key = None if idempotency_key is None else check_key(idempotency_key)
        account_id = uuid4()
        labels = check_metadata(metadata)
        parameters = {"account_type": account_type, "currency": code, "customer_id": str(owner_id)}
        if labels:
            # Only when there is some: a key claimed before metadata existed still replays.
            parameters["metadata"] = canonical_metadata(labels)

        async def work(store: LedgerStore) -> OpenedAccount:
            now = utc_now()
            if key is not None:
                claim = CreationKey(ACCOUNT_CREATE, actor.user_id, key, parameters, account_id, now)
                stored = await store.claim_creation_key(
                    claim, expired_before=now - self._key_retention
                )
                if stored is not None:
                    require_same(stored, parameters)
                    return await _replayed(store, stored.resource_id)
            owner = await store.get_owner(owner_id)
            if owner is None or owner.role is not Role.CUSTOMER or not owner.is_active:
                raise ValidationFailed(
                    "customer_id must be an active customer", field="customer_id"
                )
            number = await self._unused_account_number(store)
            account = Account(
                account_id, number, owner_id, account_type, code, True, now, now, labels
            )
            return OpenedAccount(account, await store.insert_account(account), replayed=False)

        return await self._unit_of_work.run(work)

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
    async def _unused_account_number(store: LedgerStore) -> str:
        for _ in range(ACCOUNT_NUMBER_ATTEMPTS_MAX):
            number = new_account_number()
            if not await store.account_number_exists(number):
                return number
        raise InvariantViolated("could not find a free account number")

    async def get(self, actor: Actor, account_id: UUID) -> Account:
        async with self._unit_of_work.read() as store:
            return require_visible(actor, await store.get_account(account_id))

    async def find_by_number(self, actor: Actor, account_number: str) -> Account:
        if not is_valid_account_number(account_number):
            raise ValidationFailed("account_number is not valid", field="account_number")
        async with self._unit_of_work.read() as store:
            return require_visible(actor, await store.find_account_by_number(account_number))

    async def list(self, actor: Actor, *, limit: int = ACCOUNTS_LISTED_MAX) -> list[Account]:
        """A customer's own accounts; staff see all (bounded)."""
        customer_id = None if actor.reads_everything else actor.user_id
        async with self._unit_of_work.read() as store:
            return await store.list_accounts(
                customer_id=customer_id, limit=min(limit, ACCOUNTS_LISTED_MAX)
            )

    async def page(
        self, actor: Actor, *, cursor: str | None = None, page_size: int | None = None
    ) -> AccountPage:
        """One page of ``list``, oldest first, keyset-paginated like the history: pass the
        previous page's ``next_cursor`` to get the next one."""
        size = page_size_within(
            page_size, default=self.page_size_default, maximum=self.page_size_max
        )
        after = decode_cursor(cursor) if cursor else None
        customer_id = None if actor.reads_everything else actor.user_id
        async with self._unit_of_work.read() as store:
            found = await store.list_accounts(customer_id=customer_id, limit=size + 1, after=after)
        if len(found) <= size:
            return AccountPage(found, None)
        return AccountPage(found[:size], encode_account_cursor(found[size - 1]))

    async def set_active(
        self, actor: Actor, account_id: UUID, *, is_active: bool, trace_id: str | None = None
    ) -> Account:
        """Freeze or re-open an account (teller or admin). A frozen account moves no money.
        A change is audited (``staff.account_frozen`` / ``staff.account_unfrozen``) in the
        same transaction; setting the state it already has changes and audits nothing."""
        require_manages_accounts(actor)

        async def work(store: LedgerStore) -> Account:
            before = require_visible(actor, await store.get_account(account_id))
            now = utc_now()
            await store.set_account_active(account_id, is_active=is_active, at=now)
            updated = await store.get_account(account_id)
            if updated is None:
                raise AccountNotFound("account not found")
            if before.is_active != is_active:
                await store.add_events(
                    [
                        StaffAction(
                            action_id=uuid4(),
                            action=(
                                StaffActionType.ACCOUNT_UNFROZEN
                                if is_active
                                else StaffActionType.ACCOUNT_FROZEN
                            ),
                            actor=actor,
                            created_at=now,
                            trace_id=trace_id,
                            account_id=account_id,
                            user_id=updated.customer_id,
                            details={"is_active": is_active},
                        )
                    ]
                )
            return updated

        return await self._unit_of_work.run(work)

    async def set_overdraft_limit(
        self, actor: Actor, account_id: UUID, limit: object, *, trace_id: str | None = None
    ) -> Balance:
        """Set how far below zero the account's balances may go (tellers and admins; 0 for
        none). A limit below what the account already uses is refused and changes nothing.
        A change is audited (``staff.overdraft_limit_set``) in the same transaction; setting
        the limit it already has changes and audits nothing."""
        require_manages_accounts(actor)
        parsed = parse_non_negative(limit, OVERDRAFT_LIMIT_FIELD)

        async def work(store: LedgerStore) -> Balance:
            account = require_visible(actor, await store.get_account(account_id))
            amount = check_amount_for_currency(parsed, account.currency, OVERDRAFT_LIMIT_FIELD)
            before = await store.get_balance(account_id)
            if before is None:
                raise InvariantViolated(f"account {account_id} has no balance row")
            if before.overdraft_limit == amount:
                return before
            now = utc_now()
            updated = await store.set_overdraft_limit(account_id, amount, now)
            if updated is None:
                raise ValidationFailed(
                    f"the balance ({format_amount(before.available_balance)}) is below the "
                    f"new limit's floor (-{format_amount(amount)})",
                    field="overdraft_limit",
                )
            await store.add_events(
                [
                    StaffAction(
                        action_id=uuid4(),
                        action=StaffActionType.OVERDRAFT_LIMIT_SET,
                        actor=actor,
                        created_at=now,
                        trace_id=trace_id,
                        account_id=account_id,
                        user_id=account.customer_id,
                        details={
                            "overdraft_limit": format_amount(amount),
                            "previous": format_amount(before.overdraft_limit),
                        },
                    )
                ]
            )
            return updated

        balance = await self._unit_of_work.run(work)
        await self._balance_cache.invalidate_many([account_id])
        return balance

    async def balance(self, actor: Actor, account_id: UUID) -> Balance:
        """The balance to show, through the balance cache (never used to decide money). The
        cache is keyed by account only: who may see it is checked on every read.

        Without a cache the balance may come from a read replica (``read_may_lag``: never
        behind the caller's own writes). With one, a miss loads from the primary: the cache's
        generation check only guarantees that a value it keeps was read after the account's
        last invalidation, which a replica read is not (it may replay that commit later), so a
        replica value could stay cached, stale, for the whole TTL."""

        async def read(store: LedgerStore) -> tuple[Account, Balance]:
            account = await store.get_account(account_id)
            if account is None:
                raise AccountNotFound("account not found")
            balance = await store.get_balance(account_id)
            if balance is None:
                raise InvariantViolated(f"account {account_id} has no balance row")
            return account, balance

        async def load() -> tuple[Account, Balance]:
            async with self._unit_of_work.read() as store:
                return await read(store)

        if isinstance(self._balance_cache, NoBalanceCache):
            account, balance = await self._unit_of_work.read_may_lag(actor.user_id, read)
        else:
            account, balance = await self._balance_cache.read_through(account_id, load)
        require_visible(actor, account)
        return balance


async def _replayed(store: LedgerStore, account_id: UUID) -> OpenedAccount:
    account = await store.get_account(account_id)
    balance = await store.get_balance(account_id)
    if account is None or balance is None:
        raise InvariantViolated(f"the idempotency key holds account {account_id}, not found")
    return OpenedAccount(account, balance, replayed=True)
