"""Read replicas: where a read that may be slightly behind is served (docs/replicas.md).

One engine per PostgreSQL streaming replica (``DATABASE_REPLICA_URLS``). A checker measures
every replica's replay lag each ``REPLICA_CHECK_SECONDS``:

- the primary's ``pg_current_wal_lsn()`` is read first; a replica whose
  ``pg_last_wal_replay_lsn()`` has reached it is 0 s behind (it has replayed every commit made
  before the measurement);
- otherwise its lag is ``now() - pg_last_xact_replay_timestamp()`` on the replica; a replica
  that is behind with its replay paused (``pg_is_wal_replay_paused()``), or that has never
  replayed a transaction, is behind without bound;
- a replica that does not answer within the check timeout, or is not in recovery (promoted),
  is down.

A replica serves a read only while ``lag + age of the measurement < REPLICA_LAG_MAX_SECONDS``:
the lag it may have *now* if its replay stopped right after it was measured. So a replica read
sees every commit older than ``REPLICA_LAG_MAX_SECONDS``; the sticky window
(``REPLICA_STICKY_SECONDS``, longer than that bound) keeps a caller's reads on the primary
after their own write, so no caller reads their own write stale.

A replica that fails in the middle of a read (stopped, crashed, a recovery conflict) is marked
down and the read runs again on the primary; so does a read that found no such account or
transaction on the replica (it may not have replayed its creation yet). Reads that decide money
(everything inside ``UnitOfWork.run``) never come here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol, TypeVar
from urllib.parse import urlsplit
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from banking.config import Settings, normalize_database_url
from banking.domain.errors import AccountNotFound, TransactionNotFound
from banking.ledger.ports import RecentWriters
from banking.storage.database import Database, DatabaseUnavailable
from banking.storage.tls import asyncpg_tls

T = TypeVar("T")

TARGET_PRIMARY: Final = "primary"
TARGET_REPLICA: Final = "replica"
# A replica measurement (and the primary's LSN) that takes longer than this counts as down.
CHECK_TIMEOUT_SECONDS_MAX: Final = 2.0
REPLICA_POOL_SIZE_MAX: Final = 20

_PRIMARY_LSN: Final = text("SELECT pg_current_wal_lsn()::text")
# One round trip per replica; the paused flag only exists in recovery.
_REPLICA_STATE: Final = text(
    """
    SELECT pg_is_in_recovery() AS in_recovery,
           COALESCE(pg_last_wal_replay_lsn() >= CAST(CAST(:primary_lsn AS text) AS pg_lsn), false)
               AS caught_up,
           CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END
               AS paused,
           EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp()))::float8
               AS replay_age_seconds
    """
)

# What a replica read may fail with and the primary can still answer: the replica's outage,
# a recovery conflict (SQLSTATE 40001 on a hot standby), any driver error.
_REPLICA_FAILURES: Final = (DBAPIError, DatabaseUnavailable, OSError, PoolTimeout, TimeoutError)
# Not found on a replica may be "not replayed yet": the primary decides.
_MAYBE_NOT_REPLAYED: Final = (AccountNotFound, TransactionNotFound)


class ReplicaObserver(Protocol):
    """Where the router reports (``observability.metrics.ReplicaMetrics``)."""

    def read_served(self, target: str) -> None: ...
    def replica_measured(self, replica: str, lag_seconds: float, healthy: bool) -> None: ...


class NoReplicaObserver:
    def read_served(self, target: str) -> None:
        return None

    def replica_measured(self, replica: str, lag_seconds: float, healthy: bool) -> None:
        return None


@dataclass
class Replica:
    """One replica and its last measurement (``lag_seconds`` is ``inf`` when down or behind
    without bound; ``measured_at`` on the monotonic clock)."""

    name: str
    database: Database
    lag_seconds: float = math.inf
    measured_at: float = -math.inf
    error: str | None = None
    _failures: int = field(default=0, repr=False)

    def worst_lag_seconds(self, now: float) -> float:
        """The lag it may have now: the measured lag plus the time since (replay may have
        stopped right after the measurement)."""
        return self.lag_seconds + max(0.0, now - self.measured_at)


def lag_of(*, caught_up: bool, paused: bool, replay_age_seconds: float | None) -> float:
    """A replica's replay lag from one measurement (see the module docstring)."""
    if caught_up:
        return 0.0
    if paused or replay_age_seconds is None:
        return math.inf
    return max(0.0, replay_age_seconds)


def replica_name(url: str) -> str:
    """``host:port`` of a replica URL (the metric label; never the password)."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}"


class ReplicaRouter:
    """Picks the replica for a read (round robin among those within the lag bound) and keeps
    their measurements fresh with a background checker."""

    def __init__(
        self,
        primary: Database,
        replicas: Sequence[Replica],
        *,
        lag_max_seconds: float,
        check_seconds: float,
        observer: ReplicaObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not replicas:
            raise ValueError("a replica router needs at least one replica")
        self.primary = primary
        self.replicas = list(replicas)
        self.lag_max_seconds = lag_max_seconds
        self.check_seconds = check_seconds
        self.observer: ReplicaObserver = observer or NoReplicaObserver()
        self._clock = clock
        self._turn = itertools.count()
        self._checker: asyncio.Task[None] | None = None
        self._first_check: asyncio.Lock | None = None
        self._checked_once = False

    # --- choice ---
    def usable(self, replica: Replica) -> bool:
        return replica.worst_lag_seconds(self._clock()) < self.lag_max_seconds

    def pick(self) -> Replica | None:
        """A replica within the lag bound now (round robin), or None: read on the primary."""
        candidates = [replica for replica in self.replicas if self.usable(replica)]
        if not candidates:
            return None
        return candidates[next(self._turn) % len(candidates)]

    def mark_down(self, replica: Replica, error: BaseException) -> None:
        """A read failed on ``replica``: no reads go there until a check finds it healthy."""
        replica.lag_seconds = math.inf
        replica.error = f"{type(error).__name__}: {error}"[:200]
        self.observer.replica_measured(replica.name, replica.lag_seconds, False)

    # --- measurement ---
    async def check_once(self) -> None:
        """Measure every replica once (concurrently, each bounded by the check timeout)."""
        timeout = min(CHECK_TIMEOUT_SECONDS_MAX, max(self.check_seconds, 0.1) * 2)
        started = self._clock()
        try:
            primary_lsn = await asyncio.wait_for(self._primary_lsn(), timeout)
        except (TimeoutError, *_REPLICA_FAILURES):
            # No primary position to compare with: keep the last measurements, which age
            # out by themselves (worst_lag_seconds grows with time).
            return
        await asyncio.gather(
            *(self._measure(replica, primary_lsn, started, timeout) for replica in self.replicas)
        )

    async def _primary_lsn(self) -> str:
        async with self.primary.read() as connection:
            return str((await connection.execute(_PRIMARY_LSN)).scalar_one())

    async def _measure(
        self, replica: Replica, primary_lsn: str, started: float, bound_seconds: float
    ) -> None:
        try:
            lag_seconds = await asyncio.wait_for(
                self._replica_lag(replica, primary_lsn), bound_seconds
            )
            replica.error = None
        except (TimeoutError, *_REPLICA_FAILURES, _NotAStandby) as error:
            lag_seconds = math.inf
            replica.error = f"{type(error).__name__}: {error}"[:200]
        # The measurement holds from the moment the primary's position was read.
        replica.lag_seconds = lag_seconds
        replica.measured_at = started
        self.observer.replica_measured(replica.name, lag_seconds, self.usable(replica))

    @staticmethod
    async def _replica_lag(replica: Replica, primary_lsn: str) -> float:
        async with replica.database.read() as connection:
            row = (await connection.execute(_REPLICA_STATE, {"primary_lsn": primary_lsn})).one()
        if not row.in_recovery:
            raise _NotAStandby(f"{replica.name} is not in recovery (promoted?)")
        return lag_of(
            caught_up=bool(row.caught_up),
            paused=bool(row.paused),
            replay_age_seconds=row.replay_age_seconds,
        )

    # --- the checker ---
    async def ensure_checking(self) -> None:
        """Start the background checker in this event loop (once), after a first measurement,
        so that the first read already has replicas to choose from."""
        if self._checker is not None and not self._checker.done():
            return
        if self._first_check is None:
            self._first_check = asyncio.Lock()
        async with self._first_check:
            if self._checker is not None and not self._checker.done():
                return
            await self.check_once()
            self._checker = asyncio.create_task(self._check_forever(), name="replica-checker")

    async def _check_forever(self) -> None:
        while True:
            await asyncio.sleep(self.check_seconds)
            await self.check_once()

    async def close(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await self._checker
            self._checker = None
        for replica in self.replicas:
            await replica.database.dispose()


class _NotAStandby(Exception):
    pass


class ReplicaReads:
    """Reads that may be slightly behind: on a replica within the lag bound, unless the
    caller wrote within the sticky window; on the primary otherwise or when the replica fails.
    ``SqlUnitOfWork.read_may_lag`` runs through this."""

    def __init__(self, router: ReplicaRouter, recent_writers: RecentWriters) -> None:
        self.router = router
        self.recent_writers = recent_writers

    async def run(
        self,
        caller: UUID,
        work: Callable[[AsyncConnection], Awaitable[T]],
        on_primary: Callable[[], Awaitable[T]],
    ) -> T:
        """``work`` on a replica connection, or ``on_primary()``; the read is counted by
        where it was served."""
        replica = await self._replica_for(caller)
        if replica is not None:
            try:
                async with replica.database.read() as connection:
                    result = await work(connection)
            except _MAYBE_NOT_REPLAYED:
                pass  # the primary says whether it exists
            except _REPLICA_FAILURES as error:
                self.router.mark_down(replica, error)
            else:
                self.router.observer.read_served(TARGET_REPLICA)
                return result
        result = await on_primary()
        self.router.observer.read_served(TARGET_PRIMARY)
        return result

    async def _replica_for(self, caller: UUID) -> Replica | None:
        if await self.recent_writers.wrote_recently(caller):
            return None
        await self.router.ensure_checking()
        return self.router.pick()

    async def close(self) -> None:
        await self.router.close()


def build_replica_router(
    settings: Settings, primary: Database, observer: ReplicaObserver | None = None
) -> ReplicaRouter | None:
    """One engine per ``DATABASE_REPLICA_URLS`` entry (None when there is none). The replicas'
    pools are as large as the primary's, bounded by ``REPLICA_POOL_SIZE_MAX``."""
    if not settings.database_replica_urls:
        return None
    if primary.dialect_name != "postgresql":
        raise ValueError("DATABASE_REPLICA_URLS needs a PostgreSQL DATABASE_URL (the primary)")
    replicas = []
    for url in settings.database_replica_urls:
        replica_url, tls_connect_args = asyncpg_tls(normalize_database_url(url))
        engine = create_async_engine(
            replica_url,
            connect_args=tls_connect_args,
            pool_size=min(settings.database_pool_size, REPLICA_POOL_SIZE_MAX),
            max_overflow=settings.database_pool_overflow,
            pool_pre_ping=False,
            pool_recycle=1800,
            hide_parameters=True,
        )
        replicas.append(Replica(replica_name(url), Database(engine, retries_max=0)))
    return ReplicaRouter(
        primary,
        replicas,
        lag_max_seconds=settings.replica_lag_max_seconds,
        check_seconds=settings.replica_check_seconds,
        observer=observer,
    )
