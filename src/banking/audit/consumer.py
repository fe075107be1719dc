"""The audit consumer (``banking worker audit``, and in-process in ``banking serve``).

Each message is recorded in one short transaction, and ``handle`` returns only after it
committed (the Kafka loop commits the offset after the handler returns: a crash re-reads the
message, and the unique key (event_id, topic, delivery) makes the second insert a no-op).
An unreadable message is recorded with what can be read (``records.read_message`` never
raises); a database error is raised, so the loop rewinds and retries and nothing is skipped.

``handle_batch`` records several messages in one transaction (one bulk insert, set-based
actor lookups), with the same rows, counters and log lines per message as ``handle``. When
that transaction fails for a reason that is not an outage (one message the database refuses),
the batch is recorded again one message at a time, so that only that message fails; an outage
is raised as it is by ``handle``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from banking.audit import store
from banking.audit.records import SYSTEM, ReadMessage, read_message, with_actor
from banking.domain.clock import utc_now
from banking.events.transport import Message, handle_one_by_one
from banking.observability.logging import get_logger
from banking.storage.database import Database, is_outage

log = get_logger(__name__)


class AuditObserver(Protocol):
    def audit_recorded(self, topic: str) -> None: ...

    def audit_duplicate(self, topic: str) -> None: ...


class _Unobserved:
    def audit_recorded(self, topic: str) -> None:
        pass

    def audit_duplicate(self, topic: str) -> None:
        pass


class AuditRecorder:
    """The consumer handler (``handle``) of the ``audit`` worker."""

    def __init__(self, database: Database, *, observer: AuditObserver | None = None) -> None:
        self._database = database
        self._observer: AuditObserver = observer or _Unobserved()

    async def handle(self, message: Message) -> None:
        await self.record(message)

    async def record(self, message: Message) -> bool:
        """Record one message; False when it had been recorded before."""
        read = read_message(message, recorded_at=utc_now())

        async def work(connection: AsyncConnection) -> bool:
            actor = read.actor
            if actor is None:
                actor = await store.actor_of_movement(connection, read.payload) or SYSTEM
            return await store.insert_record(connection, with_actor(read, actor))

        inserted = await self._database.run_in_transaction(work)
        return self._recorded(message, read, inserted=inserted)

    async def handle_batch(self, messages: Sequence[Message]) -> None:
        """Record ``messages`` (in order) in one transaction; one at a time if it fails."""
        if not messages:
            return
        recorded_at = utc_now()
        reads = [read_message(message, recorded_at=recorded_at) for message in messages]

        async def work(connection: AsyncConnection) -> list[bool]:
            unknown = [read for read in reads if read.actor is None]
            found = iter(await store.actors_of_movements(connection, [r.payload for r in unknown]))
            rows = [
                with_actor(read, read.actor if read.actor is not None else next(found) or SYSTEM)
                for read in reads
            ]
            return await store.insert_records(connection, rows)

        try:
            inserted = await self._database.run_in_transaction(work)
        except Exception as error:
            if is_outage(error):
                raise
            log.warning(
                "audit_batch_recorded_one_by_one",
                messages=len(messages),
                error_type=type(error).__name__,
                error=str(error)[:300],
            )
            await handle_one_by_one(self.record, messages, raise_at_once=is_outage)
            return
        for message, read, was_new in zip(messages, reads, inserted, strict=True):
            self._recorded(message, read, inserted=was_new)

    def _recorded(self, message: Message, read: ReadMessage, *, inserted: bool) -> bool:
        """Count and log one message's outcome (after its transaction committed)."""
        if not inserted:
            self._observer.audit_duplicate(message.topic)
            log.info(
                "audit_duplicate_skipped",
                topic=message.topic,
                event_id=str(read.values["event_id"]),
                trace_id=read.values["trace_id"],
            )
            return False
        self._observer.audit_recorded(message.topic)
        if read.values["unreadable_reason"] is not None:
            log.warning(
                "audit_recorded_unreadable",
                topic=message.topic,
                event_id=str(read.values["event_id"]),
                reason=read.values["unreadable_reason"][:200],
            )
        return True
