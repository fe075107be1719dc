"""The composition root: builds every service once and hands them to the doors."""

from __future__ import annotations

from dataclasses import dataclass

from banking.auth.passwords import Passwords
from banking.auth.tokens import TokenService
from banking.auth.users import UserService
from banking.cache.balances import MemoryBalanceCache, RedisBalanceCache
from banking.cache.locks import GuardedMovementService
from banking.cache.services import CacheServices, build_cache_services
from banking.config import Settings
from banking.ledger.accounts import AccountService
from banking.ledger.history import HistoryService
from banking.ledger.movements import MovementService
from banking.observability.metrics import Metrics
from banking.storage.database import Database, create_engine


@dataclass
class Container:
    settings: Settings
    database: Database
    metrics: Metrics
    tokens: TokenService
    users: UserService
    accounts: AccountService
    movements: MovementService
    history: HistoryService
    cache: CacheServices

    @property
    def balance_cache(self) -> MemoryBalanceCache | RedisBalanceCache | None:
        """What the ``balance-cache`` consumer invalidates (``invalidate(account_id)``)."""
        return self.cache.balances

    async def close(self) -> None:
        await self.cache.close()
        await self.database.dispose()


def build_container(settings: Settings, *, metrics: Metrics | None = None) -> Container:
    database = Database(create_engine(settings), retries_max=settings.transaction_retries_max)
    metrics = metrics or Metrics()
    if settings.metrics_enabled:
        metrics.watch_database(database)
    tokens = TokenService(
        secret=settings.jwt_signing_secret(),
        algorithm=settings.jwt_algorithm,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        expire_minutes=settings.jwt_expire_minutes,
    )
    cache = build_cache_services(settings, metrics)
    # The optional per-account lock (ACCOUNT_LOCKS) wraps the synchronous movements; the cache
    # is told after every commit which balances changed.
    movements = (
        MovementService(database, metrics, cache.balances)
        if cache.account_locks is None
        else GuardedMovementService(database, metrics, cache.balances, locks=cache.account_locks)
    )
    return Container(
        settings=settings,
        database=database,
        metrics=metrics,
        tokens=tokens,
        users=UserService(
            database,
            tokens,
            Passwords(
                time_cost=settings.password_hash_time_cost,
                memory_cost_kib=settings.password_hash_memory_kib,
            ),
        ),
        accounts=AccountService(database, cache.balances),
        movements=movements,
        history=HistoryService(
            database,
            page_size_default=settings.page_size_default,
            page_size_max=settings.page_size_max,
        ),
        cache=cache,
    )
