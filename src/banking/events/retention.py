"""Outbox retention: published rows are deleted once they are older than the retention age.

The outbox is the log the relay publishes from; once a row is on Kafka (or was handled
in-process) and older than ``OUTBOX_RETENTION_HOURS`` it is only history, and an outbox that
only grows slows the relay's reads and the backups. Rows are deleted oldest first in batches,
each batch its own short transaction, so the relay and the money path never wait behind a
long delete. An unpublished row is never deleted, however old.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from sqlalchemy.ext.asyncio import AsyncConnection

from banking.domain.clock import utc_now
from banking.observability.logging import get_logger
from banking.storage import repositories as repo
from banking.storage.database import Database

log = get_logger(__name__)

PRUNE_INTERVAL_SECONDS: Final = 300.0
BATCHES_PER_PRUNE_MAX: Final = 1000  # a bound on one pass; the next pass goes on


@dataclass(frozen=True)
class PruneReport:
    deleted: int
    batches: int


class OutboxRetention:
    def __init__(
        self,
        database: Database,
        *,
        keep_hours: float,
        batch_size: int,
        interval_seconds: float = PRUNE_INTERVAL_SECONDS,
    ) -> None:
        self._database = database
        self._keep = timedelta(hours=keep_hours)
        self._batch_size = batch_size
        self._interval_seconds = interval_seconds
        self.enabled = keep_hours > 0

    async def prune_once(self) -> PruneReport:
        """Delete every published row older than the retention age, batch by batch."""
        if not self.enabled:
            return PruneReport(0, 0)
        cutoff = utc_now() - self._keep
        deleted = batches = 0
        while batches < BATCHES_PER_PRUNE_MAX:

            async def work(connection: AsyncConnection) -> int:
                return await repo.delete_published_before(connection, cutoff, self._batch_size)

            count = await self._database.run_in_transaction(work)
            if count == 0:
                break
            deleted += count
            batches += 1
            if count < self._batch_size:
                break
            await asyncio.sleep(0)  # let the relay and requests in between batches
        if deleted:
            log.info("outbox_pruned", deleted=deleted, batches=batches)
        return PruneReport(deleted, batches)

    async def run(self, stop: asyncio.Event) -> None:
        """Prune every ``interval_seconds`` until ``stop``; a failure is logged and retried
        at the next interval (retention is never urgent)."""
        while self.enabled and not stop.is_set():
            try:
                await self.prune_once()
            except Exception as error:  # noqa: BLE001 - the database is down: next interval
                log.warning("outbox_prune_failed", error_type=type(error).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._interval_seconds)
