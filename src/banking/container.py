"""The composition root: builds every service once and hands them to the doors."""

from __future__ import annotations

from dataclasses import dataclass

from banking.auth.tokens import TokenService
from banking.auth.users import UserService
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

    async def close(self) -> None:
        await self.database.dispose()


def build_container(settings: Settings, *, metrics: Metrics | None = None) -> Container:
    database = Database(create_engine(settings), retries_max=settings.transaction_retries_max)
    metrics = metrics or Metrics()
    metrics.watch_database(database)
    tokens = TokenService(
        secret=settings.jwt_signing_secret(),
        algorithm=settings.jwt_algorithm,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        expire_minutes=settings.jwt_expire_minutes,
    )
    return Container(
        settings=settings,
        database=database,
        metrics=metrics,
        tokens=tokens,
        users=UserService(database, tokens),
        accounts=AccountService(database),
        movements=MovementService(database, metrics),
        history=HistoryService(
            database,
            page_size_default=settings.page_size_default,
            page_size_max=settings.page_size_max,
        ),
    )
