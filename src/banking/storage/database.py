"""Engine creation and the unit of work: the only place that begins and commits transactions.

Also the one classification of database failures that every door and worker uses:
``is_outage`` (the database cannot serve now, a later retry can succeed: REST 503 with
``Retry-After``, gRPC ``UNAVAILABLE``, workers retry with backoff) and ``is_retryable``
(``run_in_transaction`` runs the whole unit of work again).
"""

from __future__ import annotations

import asyncio
import errno
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from banking.config import Settings
from banking.storage.tls import asyncpg_tls

T = TypeVar("T")

# PostgreSQL SQLSTATEs of a conflict: "run the whole transaction again" (serialization
# failure, deadlock).
_CONFLICT_SQLSTATES: Final = frozenset({"40001", "40P01"})
_UNIQUE_VIOLATION: Final = "23505"
READ_ONLY_OPTION: Final = "banking_read_only"

# SQLSTATEs of an outage (PostgreSQL appendix A): class 08 connection exception (asyncpg's
# connection-lost errors are 08003/08006), class 53 insufficient resources (too many
# connections, disk full, out of memory), and 57P01-57P05 operator intervention: shutting down,
# crashed, "cannot connect now" (starting up, shutting down, in recovery). Not 57014
# (a cancelled statement): that is this request's own timeout, not the database's state.
_OUTAGE_SQLSTATE_CLASSES: Final = frozenset({"08", "53"})
_OUTAGE_SQLSTATE_PREFIX: Final = "57P0"
# SQLite has no SQLSTATE: its primary result codes. Busy or locked (another writer kept the
# lock past the busy timeout) is a conflict, and an outage when it persists; the others mean
# the storage cannot serve.
_SQLITE_BUSY_CODES: Final = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED
_OUTAGE_SQLITE_CODES: Final = _SQLITE_BUSY_CODES | {
    7,  # SQLITE_NOMEM
    10,  # SQLITE_IOERR
    13,  # SQLITE_FULL
    14,  # SQLITE_CANTOPEN
}
# An OSError while connecting is an outage whatever it says (refused, unreachable, no socket
# file); elsewhere only these network ones are.
_NETWORK_ERRNOS: Final = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.ENETDOWN,
        errno.ENETUNREACH,
        errno.EHOSTDOWN,
        errno.EHOSTUNREACH,
    }
)

# The unit of work's backoff between attempts (full jitter, seconds): short for conflicts
# (another transaction holds the rows for milliseconds), longer for outages (a restart takes
# about a second), both bounded by ``Database.retries_max`` attempts.
CONFLICT_BACKOFF_SECONDS: Final = 0.005
OUTAGE_BACKOFF_SECONDS: Final = 0.05
OUTAGE_BACKOFF_SECONDS_MAX: Final = 1.0


class DatabaseUnavailable(ConnectionError):
    """No connection could be had: the server refused or is unreachable, or every pooled
    connection stayed busy for the pool timeout. Raised from the driver's or the pool's own
    error (``__cause__``), so that every caller sees one outage type. ``timed_out``: the
    attempt already waited its whole timeout (pool or connect), so it is not retried in place."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


def create_engine(settings: Settings) -> AsyncEngine:
    """Create the async engine for the configured database (SQLite file or PostgreSQL)."""
    url = settings.effective_database_url
    if url.startswith("sqlite"):
        return _create_sqlite_engine(url, echo=settings.database_echo)
    # libpq's sslmode / sslrootcert in the URL become asyncpg's ssl argument (storage/tls.py)
    url, tls_connect_args = asyncpg_tls(url)
    engine = create_async_engine(
        url,
        connect_args=tls_connect_args,
        echo=settings.database_echo,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_overflow,
        # No ping before every checkout (a round trip per transaction): a connection found
        # dead invalidates the pool and the unit of work is retried on a fresh one; only a
        # connection that sat idle is pinged first (ping_idle_connections).
        pool_pre_ping=False,
        pool_recycle=1800,
        # Statement parameters (password hashes, e-mails) never appear in errors or logs.
        hide_parameters=True,
    )
    ping_idle_connections(engine)
    return engine


# A pooled connection unused for this long is pinged before it is handed out.
IDLE_PING_SECONDS: Final = 5.0


def ping_idle_connections(engine: AsyncEngine) -> None:
    """Ping a pooled connection before use when it has been idle for ``IDLE_PING_SECONDS``.

    A busy process finds a dead connection (the database restarted) on its next statement:
    that request is inside the outage anyway, the pool is invalidated at once and the unit of
    work retried. A process that was idle through the restart would instead fail the first
    request after it, with the database long back, on a read that is not retried (the token's
    user, a balance). Connections in steady use are never pinged: no extra round trip on the
    money path. A ping that fails makes the pool connect afresh (``DisconnectionError``).
    """
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        checked_in_at = record.info.get("checked_in_at")
        if checked_in_at is None or time.monotonic() - checked_in_at < IDLE_PING_SECONDS:
            return
        try:
            alive = sync_engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise DisconnectionError(f"idle connection is gone: {type(error).__name__}") from error
        if not alive:
            raise DisconnectionError("idle connection is gone")


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


def _driver_attribute(error: DBAPIError, *names: str) -> str | None:
    """The first of ``names`` that the driver's error (or what it wraps, as SQLAlchemy's
    asyncpg adapter does) carries as text."""
    original = getattr(error, "orig", None)
    for candidate in (original, getattr(original, "__cause__", None)):
        for name in names:
            value = getattr(candidate, name, None)
            if isinstance(value, str) and value:
                return value
    return None


def sqlstate_of(error: DBAPIError) -> str | None:
    """The SQLSTATE of a driver error when the driver reports one (asyncpg does)."""
    return _driver_attribute(error, "sqlstate", "pgcode")


def constraint_of(error: DBAPIError) -> str | None:
    """The name of the constraint a driver error violated, when the driver reports it
    (asyncpg does; SQLite names the columns in its message instead)."""
    return _driver_attribute(error, "constraint_name")


def is_unique_violation(error: DBAPIError) -> bool:
    if not isinstance(error, IntegrityError):
        return False
    state = sqlstate_of(error)
    if state is not None:
        return state == _UNIQUE_VIOLATION
    return "UNIQUE constraint failed" in str(error.orig)


def is_outage(error: BaseException) -> bool:
    """The database (or the network to it) cannot serve now and a retry later can succeed.

    Classified by the database's SQLSTATE class and by the connection's state, not by the
    exception's type, because the driver wraps them all alike (asyncpg's
    ``CannotConnectNowError`` arrives as a plain ``DBAPIError``): SQLSTATE class 08, 53 or
    57P0x; a connection SQLAlchemy invalidated; no connection to be had
    (``DatabaseUnavailable``, a pool timeout, a refused or lost socket, a timeout); SQLite busy,
    locked, out of memory, I/O error, full or cannot open. Anything else (a constraint, a bug)
    is not an outage.
    """
    if isinstance(error, DatabaseUnavailable | PoolTimeout | ConnectionError | TimeoutError):
        return True
    if isinstance(error, OSError):
        return error.errno in _NETWORK_ERRNOS
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        state = sqlstate_of(error)
        if state is not None:
            return _is_outage_sqlstate(state)
        return _sqlite_code(error) in _OUTAGE_SQLITE_CODES
    # The driver's own exception, unwrapped (a raw asyncpg connection): same SQLSTATE rules.
    state = getattr(error, "sqlstate", None)
    return isinstance(state, str) and _is_outage_sqlstate(state)


def _is_outage_sqlstate(state: str) -> bool:
    return state[:2] in _OUTAGE_SQLSTATE_CLASSES or state.startswith(_OUTAGE_SQLSTATE_PREFIX)


def _sqlite_code(error: DBAPIError) -> int | None:
    """The primary SQLite result code of a driver error (``sqlite3`` reports extended ones)."""
    code = getattr(error.orig, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def is_conflict(error: BaseException) -> bool:
    """Another transaction holds what this one needs, for milliseconds: a deadlock or a
    serialization failure (PostgreSQL), a busy database (SQLite, after its busy timeout)."""
    if not isinstance(error, DBAPIError):
        return False
    return sqlstate_of(error) in _CONFLICT_SQLSTATES or _sqlite_code(error) in _SQLITE_BUSY_CODES


def is_retryable(error: BaseException) -> bool:
    """Running the whole unit of work again may succeed: a conflict or an outage (the server
    restarting, a pooled connection found dead), but not a timeout, which already waited as
    long as it may. It is safe even if a COMMIT was lost: a movement's idempotency key is fixed
    before the first attempt, so a second attempt can only replay the first."""
    return is_conflict(error) or (is_outage(error) and not _timed_out(error))


def _timed_out(error: BaseException) -> bool:
    if isinstance(error, DatabaseUnavailable):
        return error.timed_out
    return isinstance(error, TimeoutError | PoolTimeout)


def backoff_seconds(error: BaseException, attempt: int) -> float:
    """How long to wait before attempt ``attempt + 1`` (full jitter, bounded): milliseconds
    after a conflict, up to ``OUTAGE_BACKOFF_SECONDS_MAX`` during an outage."""
    if is_conflict(error):
        ceiling = CONFLICT_BACKOFF_SECONDS * 2**attempt
    else:
        ceiling = min(OUTAGE_BACKOFF_SECONDS_MAX, OUTAGE_BACKOFF_SECONDS * 2**attempt)
    return random.uniform(0, ceiling)  # noqa: S311 - jitter, not a secret


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
        async with self._connection() as connection, connection.begin():
            yield connection

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads: no write lock on SQLite, rolled back at the end."""
        async with self._connection() as connection:
            await connection.execution_options(**{READ_ONLY_OPTION: True})
            yield connection

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection; ``DatabaseUnavailable`` when none can be had (the driver's
        socket errors and the pool's timeout are not ``DBAPIError``s)."""
        acquired = False
        try:
            async with self.engine.connect() as connection:
                acquired = True
                yield connection
        except (OSError, PoolTimeout) as error:
            if acquired:
                raise
            raise DatabaseUnavailable(
                f"no database connection: {type(error).__name__}: {error}"[:300],
                timed_out=isinstance(error, TimeoutError | PoolTimeout),
            ) from error

    async def run_in_transaction(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``work`` in a unit of work, again from the start on a conflict (deadlock,
        serialization failure) or an outage (``is_retryable``), at most ``retries_max`` more
        times, with jittered exponential backoff (``backoff_seconds``). The last error is raised
        when the attempts are spent: an outage is then the caller's 503 or ``UNAVAILABLE``."""
        attempt = 0
        while True:
            try:
                async with self.unit_of_work() as connection:
                    return await work(connection)
            except Exception as error:
                if attempt >= self.retries_max or not is_retryable(error):
                    raise
                attempt += 1
                self.on_retry()
                await asyncio.sleep(backoff_seconds(error, attempt))

    async def dispose(self) -> None:
        await self.engine.dispose()
