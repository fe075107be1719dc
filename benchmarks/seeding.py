"""The bank a benchmark runs against, made through the core services (never through SQL):
users, funded accounts and their tokens; and the books checked after the load.

``seed_bank`` makes the ``banking bench`` workload: one teller and ``CUSTOMERS_COUNT``
customers with ``ACCOUNTS_PER_CUSTOMER`` USD checking accounts each, every account credited
``FUNDING_AMOUNT``; the first account of the first ``HOT_ACCOUNTS_COUNT`` customers is "hot".
``create_user``, ``open_funded_account`` and ``token`` are the pieces the load tools in
``benchmarks/load/`` seed with too.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

from pydantic import SecretStr

from banking.bootstrap import build_container
from banking.config import Environment, Settings
from banking.container import Container
from banking.domain.records import DebitOrCredit
from banking.domain.roles import Actor, Role
from banking.ledger.reconcile import ReconcileReport, reconcile
from benchmarks.processes import SERVER_LOG_LEVEL

CUSTOMERS_COUNT = 20
ACCOUNTS_PER_CUSTOMER = 5
HOT_ACCOUNTS_COUNT = 4  # the first account of the first customers
CURRENCY = "USD"
FUNDING_AMOUNT = Decimal("1000000.00")
SEED_POOL_SIZE = 2  # seeding and reconciling run one statement at a time
JWT_SECRET_LENGTH = 48
TOKEN_LIFETIME_MINUTES = 24 * 60


@dataclass(frozen=True)
class Customer:
    """A customer's token and accounts, as the load generator uses them."""

    token: str
    account_ids: tuple[str, ...]
    cold_account_ids: tuple[str, ...]


@dataclass(frozen=True)
class HotAccount:
    """An account many requests touch, and its owner."""

    account_id: str
    owner: int  # index in the customers


@dataclass(frozen=True)
class SeededBank:
    """Everything the load generator needs to know about the seeded bank."""

    teller_token: str
    customers: tuple[Customer, ...]
    hot_accounts: tuple[HotAccount, ...]


def settings_for(database_url: str, jwt_secret: str) -> Settings:
    """The core's settings for seeding and reconciling the bench database."""
    return Settings(
        banking_env=Environment.PRODUCTION,
        database_url=database_url,
        jwt_secret=SecretStr(jwt_secret),
        command_signing_keys=SecretStr(f"bench:{secrets.token_urlsafe(48)}"),
        command_signing_kid="bench",
        jwt_expire_minutes=TOKEN_LIFETIME_MINUTES,
        database_pool_size=SEED_POOL_SIZE,
        log_level=SERVER_LOG_LEVEL,
    )


async def seed_bank(database_url: str, jwt_secret: str) -> SeededBank:
    """One teller and the customers with their funded accounts, made through the core."""
    container = build_container(settings_for(database_url, jwt_secret))
    try:
        teller = await create_user(container, "bench-teller", Role.TELLER)
        owned: list[tuple[Actor, list[UUID]]] = []
        for index in range(CUSTOMERS_COUNT):
            customer = await create_user(container, f"bench-customer-{index:03d}", Role.CUSTOMER)
            account_ids = [
                await open_funded_account(container, teller, customer.user_id)
                for _ in range(ACCOUNTS_PER_CUSTOMER)
            ]
            owned.append((customer, account_ids))
        return _bank_of(container, teller, owned)
    finally:
        await container.close()


async def create_user(container: Container, username: str, role: Role) -> Actor:
    """A user with a random password (the benchmarks log in with tokens, never passwords)."""
    user = await container.users.create(
        None,
        username=username,
        email=f"{username}@bench.example.com",
        password=secrets.token_urlsafe(18),
        role=role,
    )
    return Actor(user.user_id, user.username, user.role)


async def open_funded_account(
    container: Container,
    teller: Actor,
    owner_id: UUID,
    funding: Decimal = FUNDING_AMOUNT,
    currency: str = CURRENCY,
) -> UUID:
    """A checking account of ``owner_id`` opened by ``teller`` and credited ``funding``."""
    account, _balance = await container.accounts.open(
        teller, account_type="checking", currency=currency, customer_id=owner_id
    )
    await container.movements.credit(
        teller,
        DebitOrCredit(
            account.account_id,
            funding,
            currency,
            "bench funding",
            f"bench-funding-{account.account_id}",
        ),
    )
    return account.account_id


def token(container: Container, actor: Actor) -> str:
    """A bearer token of ``actor``, valid for the settings' lifetime."""
    return container.tokens.issue(actor.user_id, actor.username, actor.role)


def _bank_of(
    container: Container, teller: Actor, owned: list[tuple[Actor, list[UUID]]]
) -> SeededBank:
    hot = tuple(
        HotAccount(str(ids[0]), owner) for owner, (_, ids) in enumerate(owned[:HOT_ACCOUNTS_COUNT])
    )
    hot_ids = {account.account_id for account in hot}
    customers = tuple(
        Customer(
            token=token(container, actor),
            account_ids=tuple(str(i) for i in ids),
            cold_account_ids=tuple(str(i) for i in ids if str(i) not in hot_ids),
        )
        for actor, ids in owned
    )
    return SeededBank(token(container, teller), customers, hot)


async def check_books(database_url: str) -> ReconcileReport:
    """The ledger's reconcile on the bench database after the load."""
    container = build_container(settings_for(database_url, "x" * JWT_SECRET_LENGTH))
    try:
        return await reconcile(container.unit_of_work)
    finally:
        await container.close()
