"""The services of one process, built once by the composition root (``banking.bootstrap``)
and handed to the doors (REST, gRPC, workers, command line)."""

from __future__ import annotations

from dataclasses import dataclass

from banking.audit.service import AuditService
from banking.auth.tokens import TokenService
from banking.auth.users import UserService
from banking.cache.balances import MemoryBalanceCache, RedisBalanceCache
from banking.cache.services import CacheServices
from banking.config import Settings
from banking.ledger.accounts import AccountService
from banking.ledger.history import HistoryService
from banking.ledger.ports import Holds, Movements, UnitOfWork
from banking.ledger.review import ReviewService
from banking.ledger.statements import StatementService
from banking.notifications.webhooks import WebhookService
from banking.observability.metrics import Metrics
from banking.storage.database import Database
from banking.storage.replicas import ReplicaReads


@dataclass
class Container:
    settings: Settings
    database: Database
    unit_of_work: UnitOfWork
    metrics: Metrics
    tokens: TokenService
    users: UserService
    accounts: AccountService
    movements: Movements
    history: HistoryService
    statements: StatementService
    review: ReviewService
    cache: CacheServices
    webhooks: WebhookService
    audit: AuditService
    holds: Holds
    replicas: ReplicaReads | None = None  # None: no DATABASE_REPLICA_URLS

    @property
    def balance_cache(self) -> MemoryBalanceCache | RedisBalanceCache | None:
        """What the ``balance-cache`` consumer invalidates (``invalidate(account_id)``)."""
        return self.cache.balances

    async def close(self) -> None:
        if self.replicas is not None:
            await self.replicas.close()
        await self.cache.close()
        await self.database.dispose()
