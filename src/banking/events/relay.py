"""The outbox relay: publishes committed outbox rows, in order, at least once.

Rows are read in ``outbox_id`` order, converted to the wire format, sent as one batch that
returns only when every message is acknowledged (idempotent producer, acks=all), and then
marked published. A crash between the two re-sends the batch: consumers see the same event
ids (``ce_id``) again and skip them. On PostgreSQL only one relay publishes at a time (an
advisory lock), so per-account order holds with several relay processes running for
availability.

Leadership is fenced twice. In the database: the leader reads and marks its batches on the
very connection that holds the lock, so a batch is marked published only while the lock is
held (a statement that succeeds on that session proves the session, and so the lock, is
alive); when the session dies (``pg_terminate_backend``, a restart, a network cut) the next
statement fails, and the relay stops and competes for the lock again. In Kafka: every relay
publishes each batch as one transaction under one transactional id
(``relay_transactional_id``), so the next leader's producer fences the one before it, whose
open transaction is aborted, and consumers read committed messages only. So a batch is seen
whole or not at all, and never from a relay that lost the lock to a newer leader; a batch
committed to Kafka but not marked (a crash in between) is sent again from the oldest
unpublished row, and consumers skip it by ``ce_id``.

Each message is one CloudEvent in Kafka binary mode (``events.envelope``); the event schemas go
to ``banking.schemas`` before the first (``events.registry``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Protocol, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from banking.domain.clock import utc_now
from banking.events import envelope, registry, signing
from banking.events.outbox import EVENT_TRANSACTION_SUBMITTED
from banking.events.serialization import JSON_CONTENT_TYPE, EventFormat, encode
from banking.events.transport import Message, Publisher, PublisherFenced
from banking.observability.logging import get_logger
from banking.storage import repositories as repo
from banking.storage.database import Database, is_outage

log = get_logger(__name__)

T = TypeVar("T")

RELAY_LOCK_KEY: Final = 0x62616E6B  # "bank": the advisory lock every relay process competes for
BATCH_SIZE_MAX: Final = 500
IDLE_POLL_SECONDS: Final = 0.05
ERROR_BACKOFF_SECONDS_MAX: Final = 5.0
STANDBY_POLL_SECONDS: Final = 2.0
BACKLOG_REPORT_SECONDS: Final = 5.0
SEAL_BACKOFF_SECONDS: Final = 5.0


def headers_of(row: Any, content_type: str) -> dict[str, str]:
    """The CloudEvents headers of an outbox row (``events.envelope``): its id, type, commit
    time (consumers measure their lag from it), account, schema, trace and outbox position."""
    schema = registry.lookup(row.event_type, row.schema_version)
    return envelope.write_headers(
        event_id=row.event_id,
        event_type=row.event_type,
        content_type=content_type,
        time=row.created_at,
        subject=row.event_key,
        trace_id=row.trace_id,
        schema=schema.schema_id if schema is not None else None,
        sequence=row.outbox_id,
    )


def message_of(
    row: Any, event_format: EventFormat, keyring: signing.CommandKeyring | None = None
) -> Message:
    """The wire message of an outbox row; a command (``transaction.submitted``) is signed with
    this service's key (``events.signing``; the development key when no keyring is given)."""
    if event_format is EventFormat.JSON:
        # The outbox already holds the canonical JSON text: no need to parse and re-encode.
        value, content_type = row.payload.encode(), JSON_CONTENT_TYPE
    else:
        value, content_type = encode(
            row.event_type, row.schema_version, json.loads(row.payload), event_format
        )
    headers = headers_of(row, content_type)
    if row.event_type == EVENT_TRANSACTION_SUBMITTED:
        headers |= (keyring or signing.development_keyring()).signature_headers(
            str(row.event_id), row.event_type, row.event_key, value
        )
    return Message(row.topic, row.event_key, value, headers)


def relay_transactional_id(topic_prefix: str) -> str:
    """The Kafka transactional id every relay of one environment publishes with."""
    return f"{topic_prefix}banking-relay"


class LeadershipLost(ConnectionError):
    """The session holding the relay lock ended: another relay may be the leader now."""


class RelayObserver(Protocol):
    def relay_published(self, count: int) -> None: ...

    def relay_failed(self) -> None: ...

    def relay_backlog(self, count: int, oldest_age_seconds: float) -> None: ...


class JournalSealing(Protocol):
    """Seals committed journal rows into the hash chain (``banking.audit.chain``): the relay
    runs one batch after each publish pass, when one is wired in."""

    batch_size: int

    async def seal_batch(self) -> int: ...


class _Unobserved:
    def relay_published(self, count: int) -> None:
        pass

    def relay_failed(self) -> None:
        pass

    def relay_backlog(self, count: int, oldest_age_seconds: float) -> None:
        pass


class OutboxRelay:
    def __init__(
        self,
        database: Database,
        publisher: Publisher,
        *,
        event_format: EventFormat = EventFormat.ARROW,
        batch_size: int = BATCH_SIZE_MAX,
        observer: RelayObserver | None = None,
        publish_schemas: bool = True,
        keyring: signing.CommandKeyring | None = None,
        sealer: JournalSealing | None = None,
    ) -> None:
        self._database = database
        # Off the money path: the journal rows committed since the last pass are chained
        # here, after publishing, in a transaction of their own (docs/audit.md).
        self._sealer = sealer
        self._seal_paused_until = 0.0
        self._keyring = keyring or signing.development_keyring()
        self._publisher = publisher
        self._event_format = event_format
        self._batch_size = min(batch_size, BATCH_SIZE_MAX)
        # The schemas go to ``banking.schemas`` before the first event (again after a restart:
        # the topic is compacted), so every event's schema is resolvable when it arrives.
        self._schemas_pending = publish_schemas
        self._observer: RelayObserver = observer or _Unobserved()
        # The leader's lock session (PostgreSQL): batches are read and marked on it, one at a
        # time (``drain`` may run beside ``run``; a connection runs one statement at a time).
        self._session: AsyncConnection | None = None
        self._batch_lock = asyncio.Lock()

    async def publish_batch(self) -> int:
        """Publish the oldest unpublished rows once; the number published."""
        async with self._batch_lock:
            return await self._publish_batch()

    async def _publish_batch(self) -> int:
        if self._schemas_pending:
            await self._publisher.publish(registry.schema_messages())
            self._schemas_pending = False
        rows = await self._fetch()
        if not rows:
            return 0
        try:
            await self._publisher.publish(
                [message_of(row, self._event_format, self._keyring) for row in rows]
            )
        except PublisherFenced as error:
            raise LeadershipLost(f"another relay's producer took over: {error}") from error
        await self._mark([row.outbox_id for row in rows])
        self._observer.relay_published(len(rows))
        log.debug(
            "relay_batch_published",
            count=len(rows),
            first_outbox_id=rows[0].outbox_id,
            last_outbox_id=rows[-1].outbox_id,
        )
        return len(rows)

    async def _fetch(self) -> list[Any]:
        if self._session is not None:
            return await self._on_session(
                lambda session: repo.fetch_unpublished(session, self._batch_size)
            )
        async with self._database.read() as connection:
            return await repo.fetch_unpublished(connection, self._batch_size)

    async def _mark(self, outbox_ids: Sequence[int]) -> None:
        async def work(connection: AsyncConnection) -> None:
            await repo.mark_published(connection, outbox_ids, utc_now())

        if self._session is not None:
            await self._on_session(work)
            return
        await self._database.run_in_transaction(work)

    async def _on_session(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``work`` in one transaction on the lock session; LeadershipLost if it is gone."""
        session = self._session
        assert session is not None
        try:
            result = await work(session)
            await session.commit()
        except Exception as error:
            if session.invalidated or session.closed or is_outage(error):
                raise LeadershipLost(f"the relay lock's session ended: {error}") from error
            await session.rollback()
            raise
        return result

    async def drain(self) -> int:
        """Publish until nothing is left (used at shutdown and by tests)."""
        total = 0
        while published := await self.publish_batch():
            total += published
        return total

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop`` is set; back off (bounded) while Kafka or the database fail."""
        if self._database.dialect_name == "postgresql":
            await self._run_as_leader(stop)
        else:
            await self._loop(stop)

    async def report_backlog(self) -> tuple[int, float]:
        """Count what waits in the outbox and tell the observer (for metrics and alerts)."""
        async with self._database.read() as connection:
            count, oldest = await repo.outbox_backlog(connection)
        age_seconds = (utc_now() - oldest).total_seconds() if oldest is not None else 0.0
        self._observer.relay_backlog(count, age_seconds)
        return count, age_seconds

    async def _loop(self, stop: asyncio.Event) -> None:
        failures = 0
        backlog_reported_at = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                if loop.time() - backlog_reported_at >= BACKLOG_REPORT_SECONDS:
                    backlog_reported_at = loop.time()
                    await self.report_backlog()
                published = await self.publish_batch()
                failures = 0
            except LeadershipLost:
                raise  # not ours to publish any more: compete for the lock again
            except Exception as error:  # noqa: BLE001 - Kafka or the database is down: retry
                failures += 1
                self._observer.relay_failed()
                delay = min(ERROR_BACKOFF_SECONDS_MAX, 0.1 * 2**failures)
                log.warning(
                    "relay_publish_failed",
                    error_type=type(error).__name__,
                    error=str(error)[:300],
                    database_unavailable=is_outage(error),
                    retry_in_seconds=delay,
                )
                await _sleep_or_stop(stop, delay)
                continue
            sealed_full = await self._seal_journal()
            if published < self._batch_size and not sealed_full:
                await _sleep_or_stop(stop, IDLE_POLL_SECONDS)

    async def _seal_journal(self) -> bool:
        """Seal one batch of the journal when a sealer is wired in; True when it was full
        (more may wait). A failure never stops publishing: it is logged, and sealing pauses
        for ``SEAL_BACKOFF_SECONDS`` (the rows wait unsealed; ``banking audit verify`` warns
        about rows left unsealed for long)."""
        if self._sealer is None:
            return False
        loop = asyncio.get_running_loop()
        if loop.time() < self._seal_paused_until:
            return False
        try:
            return await self._sealer.seal_batch() >= self._sealer.batch_size
        except Exception as error:  # noqa: BLE001 - the database is down or busy: later
            self._seal_paused_until = loop.time() + SEAL_BACKOFF_SECONDS
            log.warning(
                "journal_seal_failed",
                error_type=type(error).__name__,
                error=str(error)[:300],
                database_unavailable=is_outage(error),
                retry_in_seconds=SEAL_BACKOFF_SECONDS,
            )
            return False

    async def _run_as_leader(self, stop: asyncio.Event) -> None:
        """Hold the relay advisory lock on a dedicated connection while publishing."""
        while not stop.is_set():
            try:
                async with self._database.engine.connect() as connection:
                    acquired = (
                        await connection.execute(
                            text("SELECT pg_try_advisory_lock(:key)"), {"key": RELAY_LOCK_KEY}
                        )
                    ).scalar_one()
                    await connection.commit()
                    if not acquired:
                        log.info("relay_standby", reason="another relay holds the lock")
                        await _sleep_or_stop(stop, STANDBY_POLL_SECONDS)
                        continue
                    log.info("relay_leader")
                    self._session = connection
                    try:
                        await self._loop(stop)
                    finally:
                        self._session = None
                    await connection.execute(
                        text("SELECT pg_advisory_unlock(:key)"), {"key": RELAY_LOCK_KEY}
                    )
                    await connection.commit()
            except LeadershipLost as error:
                await self._publisher.reset()  # a fenced producer cannot send again
                self._observer.relay_failed()
                log.warning(
                    "relay_leadership_lost",
                    error=str(error)[:300],
                    retry_in_seconds=STANDBY_POLL_SECONDS,
                )
                await _sleep_or_stop(stop, STANDBY_POLL_SECONDS)
            except Exception as error:  # noqa: BLE001 - database down: wait and compete again
                self._observer.relay_failed()
                log.warning(
                    "relay_leadership_failed",
                    error_type=type(error).__name__,
                    error=str(error)[:300],
                    database_unavailable=is_outage(error),
                    retry_in_seconds=STANDBY_POLL_SECONDS,
                )
                await _sleep_or_stop(stop, STANDBY_POLL_SECONDS)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
