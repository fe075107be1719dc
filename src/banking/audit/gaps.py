"""``banking audit gaps``: every event the outbox says was published, on a topic the audit
consumer reads, that has no audit record.

The outbox is the source of truth for what was published, but it is bounded: the relay's
retention (``OUTBOX_RETENTION_HOURS``) deletes published rows, so the check reaches back only
as far as the outbox still does. Events published less than ``grace_seconds`` ago are left
out: the consumer may not have recorded them yet. Messages that never went through the outbox
(the dead-letter copies) have no outbox row to compare with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final
from uuid import UUID

from banking.audit import store
from banking.domain.clock import utc_now
from banking.storage.database import Database

GAPS_LISTED_MAX: Final = 10_000


@dataclass(frozen=True, slots=True)
class Gap:
    """An outbox event the audit trail lacks."""

    event_id: UUID
    topic: str
    event_type: str
    created_at: datetime
    published_at: datetime | None


async def find_gaps(
    database: Database,
    *,
    topics: Sequence[str],
    grace_seconds: float,
    limit: int = GAPS_LISTED_MAX,
) -> list[Gap]:
    """Published outbox events on ``topics`` with no audit record, oldest first (at most
    ``limit``), leaving out those published in the last ``grace_seconds``."""
    published_before = utc_now() - timedelta(seconds=grace_seconds)
    async with database.read() as connection:
        rows = await store.unaudited_outbox_rows(
            connection, topics=topics, published_before=published_before, limit=limit
        )
    return [
        Gap(row.event_id, row.topic, row.event_type, row.created_at, row.published_at)
        for row in rows
    ]
