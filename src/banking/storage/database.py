"""Engine creation and the unit of work: the only place that begins and commits transactions."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from banking.config import Settings

T = TypeVar("T")

# PostgreSQL SQLSTATEs that mean "run the whole transaction again".
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
_UNIQUE_VIOLATION = "23505"
READ_ONLY_OPTION = "banking_read_only"


def create_engine(settings: Settings) -> AsyncEngine:
    """Create the async engine for the configured database (SQLite file or PostgreSQL)."""
    url = settings.effective_database_url
    if url.startswith("sqlite"):
        return _create_sqlite_engine(url, echo=settings.database_echo)
    return create_async_engine(
        url,
        echo=settings.database_echo,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_overflow,
        # No ping before every checkout (a round trip per transaction): a connection found
        # dead invalidates the pool and the unit of work is retried on a fresh one.
        pool_pre_ping=False,
        pool_recycle=1800,
        # Statement parameters (password hashes, e-mails) never appear in errors or logs.
        hide_parameters=True,
    )


def _create_sqlite_engine(url: str, *, echo: bool) -> AsyncEngine:
    path = url.split(":///", 1)[1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30}, hide_parameters=True)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy emit BEGIN itself (below) instead of pysqlite's deferred BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # SQLite has one writer: take the write lock at BEGIN, so two transactions never both
        # read and then fail to upgrade (SQLite's deadlock); they queue on busy_timeout instead.
        # Reads (WAL) need no lock and begin deferred.
        if connection.get_execution_options().get(READ_ONLY_OPTION):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def sqlstate_of(error: DBAPIError) -> str | None:
    """The SQLSTATE of a driver error when the driver reports one (asyncpg does)."""
    original = getattr(error, "orig", None)
    for candidate in (original, getattr(original, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def is_unique_violation(error: DBAPIError) -> bool:
    if not isinstance(error, IntegrityError):
        return False
    state = sqlstate_of(error)
    if state is not None:
        return state == _UNIQUE_VIOLATION
    return "UNIQUE constraint failed" in str(error.orig)


def is_retryable(error: DBAPIError) -> bool:
    """Deadlocks and serialization failures (PostgreSQL), a busy database (SQLite), and a
    pooled connection found dead (the server restarted). Running the whole unit of work again
    is safe even if a COMMIT was lost: a movement's idempotency key is fixed before the first
    attempt, so a second attempt can only replay the first."""
    if sqlstate_of(error) in _RETRYABLE_SQLSTATES or error.connection_invalidated:
        return True
    return isinstance(error, OperationalError) and "database is locked" in str(error.orig)


def _nothing() -> None:
    pass


class Database:
    """Owns the engine; hands out units of work and retries whole transactions when safe."""

    def __init__(self, engine: AsyncEngine, *, retries_max: int = 5) -> None:
        self.engine = engine
        self.retries_max = retries_max
        self.on_retry: Callable[[], None] = _nothing

    @property
    def dialect_name(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[AsyncConnection]:
        """One database transaction: commits when the block ends, rolls back on any error."""
        async with self.engine.begin() as connection:
            yield connection

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads: no write lock on SQLite, rolled back at the end."""
        async with self.engine.connect() as connection:
            await connection.execution_options(**{READ_ONLY_OPTION: True})
            yield connection

    async def run_in_transaction(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``work`` in a unit of work, again from the start on deadlock or serialization
        failure, at most ``retries_max`` more times, with jittered exponential backoff."""
        attempt = 0
        while True:
            try:
                async with self.unit_of_work() as connection:
                    return await work(connection)
            except DBAPIError as error:
                if not is_retryable(error) or attempt >= self.retries_max:
                    raise
                attempt += 1
                self.on_retry()
                await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))  # noqa: S311

    async def dispose(self) -> None:
        await self.engine.dispose()
