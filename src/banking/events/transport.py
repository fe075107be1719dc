"""Moving messages: Apache Kafka (aiokafka) in production, an in-process bus when embedded.

Both give a ``Publisher`` (send a batch; returns once every message is acknowledged) and run
consumers whose handler is awaited for each message, in order per key, before the message
counts as consumed (the Kafka offset is committed only after the handler returned).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import InvalidProducerEpoch, KafkaError, ProducerFenced

from banking.events.envelope import event_time
from banking.observability.logging import get_logger

log = get_logger(__name__)
T = TypeVar("T")

CONSUMER_BATCH_MAX = 100
CONSUMER_POLL_TIMEOUT_MS = 500
HANDLER_FAILURE_PAUSE_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    key: str | None
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)
    partition: int | None = None
    offset: int | None = None


Handler = Callable[[Message], Awaitable[None]]
# Several messages of the consumer's topics at once, in publish order; returns only once every
# one of them is handled (the in-process bus gives it each relay batch in one call).
BatchHandler = Callable[[Sequence[Message]], Awaitable[None]]


async def handle_one_by_one(
    handle: Callable[[T], Awaitable[object]],
    items: Sequence[T],
    *,
    raise_at_once: Callable[[BaseException], bool],
) -> None:
    """A batch handler's fallback: ``handle`` each item (message) in order, each whatever the
    ones before did (one bad message neither blocks nor loses the others), then raise the
    first error as the per-message path raises it. An error ``raise_at_once`` picks (an
    outage: the next messages would fail alike) is raised at once."""
    failure: Exception | None = None
    for item in items:
        try:
            await handle(item)
        except Exception as error:
            if raise_at_once(error):
                raise
            failure = failure or error
    if failure is not None:
        raise failure


class BatchConsumer(Protocol):
    """A consumer with both paths: ``handle`` one message, ``handle_batch`` several at once
    (the same outcome per message as ``handle`` on each in order, in fewer transactions)."""

    async def handle(self, message: Message) -> None: ...

    async def handle_batch(self, messages: Sequence[Message]) -> None: ...


class Publisher(Protocol):
    async def publish(self, messages: Sequence[Message]) -> None:
        """Send every message; return only when all are acknowledged (else raise)."""

    async def reset(self) -> None:
        """Forget the connection's state (a relay that lost its leadership calls it)."""


class PublisherFenced(ConnectionError):
    """A newer producer with the same transactional id started: this one may not publish."""


class KafkaPublisher:
    """An idempotent producer (acks=all): retries never duplicate or reorder within a partition.

    With a ``transactional_id`` each ``publish`` is one Kafka transaction: consumers reading
    committed messages (every consumer of this service does) see the whole batch or none of it,
    and a producer started with the same id fences this one (``PublisherFenced``; its open
    transaction is aborted). The relay uses this so that only the current leader's batches
    count. ``reset`` drops a fenced producer; the next ``publish`` starts a new one.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str = "banking",
        topic_prefix: str = "",
        transactional_id: str | None = None,
        security: Mapping[str, Any] | None = None,
    ) -> None:
        self._bootstrap_servers = bootstrap_servers
        # events.security.kafka_security: protocol, TLS context, SASL credentials
        self._security = dict(security or {})
        self._client_id = client_id
        self._topic_prefix = topic_prefix
        self._transactional_id = transactional_id
        self._producer: AIOKafkaProducer | None = None
        self._start_lock = asyncio.Lock()

    async def start(self) -> AIOKafkaProducer:
        # Several senders (the relay, the DLQ) may make the first send at once: start once.
        async with self._start_lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self._bootstrap_servers,
                    client_id=self._client_id,
                    enable_idempotence=True,
                    acks="all",
                    linger_ms=5,
                    request_timeout_ms=15000,
                    transactional_id=self._transactional_id,
                    **self._security,
                )
                await producer.start()
                self._producer = producer
            return self._producer

    async def stop(self) -> None:
        async with self._start_lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def reset(self) -> None:
        """Stop the producer (for example a fenced one); the next publish starts another."""
        with contextlib.suppress(KafkaError):
            await self.stop()

    async def publish(self, messages: Sequence[Message]) -> None:
        producer = await self.start()
        if self._transactional_id is None:
            await self._send(producer, messages)
            return
        try:
            async with producer.transaction():
                await self._send(producer, messages)
        except (ProducerFenced, InvalidProducerEpoch) as error:
            raise PublisherFenced(str(error)) from error

    async def _send(self, producer: AIOKafkaProducer, messages: Sequence[Message]) -> None:
        pending = []
        for message in messages:
            pending.append(
                await producer.send(
                    self._topic_prefix + message.topic,
                    value=message.value,
                    key=message.key.encode() if message.key is not None else None,
                    headers=[(name, value.encode()) for name, value in message.headers.items()],
                )
            )
        await asyncio.gather(*pending)


def message_of(record: Any, *, topic_prefix: str = "") -> Message:
    """A consumed record as a Message with the logical (unprefixed) topic name."""
    return Message(
        topic=record.topic.removeprefix(topic_prefix),
        key=record.key.decode() if record.key is not None else None,
        value=record.value or b"",
        headers={name: value.decode(errors="replace") for name, value in record.headers or ()},
        partition=record.partition,
        offset=record.offset,
    )


class ConsumerObserver(Protocol):
    def consumed(self, group: str, topic: str, lag_seconds: float | None) -> None: ...

    def lagging(self, group: str, topic: str, messages: int) -> None: ...


class _Unobserved:
    def consumed(self, group: str, topic: str, lag_seconds: float | None) -> None:
        pass

    def lagging(self, group: str, topic: str, messages: int) -> None:
        pass


def seconds_since_commit(message: Message) -> float | None:
    """End-to-end lag: now minus the commit time the relay put in the headers (``ce_time``)."""
    committed = event_time(message.headers)
    if committed is None:
        return None
    return (datetime.now(UTC) - committed).total_seconds()


class KafkaConsumerLoop:
    """One consumer group member: handle each message in order, commit after the handler.

    A handler that raises is a bug or an outage of what the handler itself relies on (for
    example the producer of the dead-letter topic): the offset is not committed, the partition
    is rewound to the message and tried again after a pause, so nothing is skipped.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        group_id: str,
        topics: Sequence[str],
        handler: Handler,
        topic_prefix: str = "",
        observer: ConsumerObserver | None = None,
        security: Mapping[str, Any] | None = None,
    ) -> None:
        self._topic_prefix = topic_prefix
        self._observer: ConsumerObserver = observer or _Unobserved()
        self._consumer = AIOKafkaConsumer(
            *[topic_prefix + topic for topic in topics],
            bootstrap_servers=bootstrap_servers,
            group_id=topic_prefix + group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=CONSUMER_BATCH_MAX,
            # The relay publishes in transactions: an aborted batch (a fenced relay's, one cut
            # by a crash) is never handled.
            isolation_level="read_committed",
            **(security or {}),
        )
        self._handler = handler
        self.group_id = group_id

    async def run(self, stop: asyncio.Event) -> None:
        await self._consumer.start()
        try:
            while not stop.is_set():
                batches = await self._consumer.getmany(
                    timeout_ms=CONSUMER_POLL_TIMEOUT_MS, max_records=CONSUMER_BATCH_MAX
                )
                for partition, records in batches.items():
                    await self._handle_partition(partition, records)
                await self._report_lag()
        finally:
            await self._consumer.stop()

    async def _handle_partition(self, partition: TopicPartition, records: list[Any]) -> None:
        for record in records:
            message = message_of(record, topic_prefix=self._topic_prefix)
            try:
                await self._handler(message)
            except Exception as error:  # noqa: BLE001 - never lose the message: rewind
                log.error(
                    "consumer_handler_failed",
                    group=self.group_id,
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    error_type=type(error).__name__,
                    error=str(error)[:300],
                )
                self._consumer.seek(partition, record.offset)
                await asyncio.sleep(HANDLER_FAILURE_PAUSE_SECONDS)
                return
            try:
                await self._consumer.commit({partition: record.offset + 1})
            except KafkaError as error:  # a rebalance: the next owner re-reads, handlers dedupe
                log.warning("consumer_commit_failed", group=self.group_id, error=str(error))
                # The rest of this batch was not handled: if the partition is still ours, go
                # on right after this record, not after the batch (no record skipped).
                if partition in self._consumer.assignment():
                    self._consumer.seek(partition, record.offset + 1)
                return
            self._observer.consumed(self.group_id, message.topic, seconds_since_commit(message))

    async def _report_lag(self) -> None:
        behind: dict[str, int] = defaultdict(int)
        for partition in self._consumer.assignment():
            highwater = self._consumer.highwater(partition)
            if highwater is None:
                continue
            topic = partition.topic.removeprefix(self._topic_prefix)
            behind[topic] += max(0, highwater - await self._consumer.position(partition))
        for topic, messages in behind.items():
            self._observer.lagging(self.group_id, topic, messages)


class InProcessBus:
    """The embedded event log's dispatch: ``publish`` awaits each subscribed handler, so the
    relay marks an outbox row published only after its consumers have handled it. Topics
    subscribed in background (the DLQ, whose handler waits out its backoff) get a queue.

    Batch handlers (``subscribe_batch``) get the messages of their topics of one ``publish``
    call (the relay's batch) at once, in order, after the per-message handlers have seen them,
    in the order they were subscribed; ``publish`` returns after the last of them."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = defaultdict(list)
        self._batch_handlers: list[tuple[frozenset[str], BatchHandler]] = []
        self._queues: dict[str, asyncio.Queue[Message]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def subscribe_batch(self, topics: Iterable[str], handler: BatchHandler) -> None:
        """Give ``handler`` the messages on ``topics`` of each ``publish``, all at once."""
        self._batch_handlers.append((frozenset(topics), handler))

    def subscribe(self, topic: str, handler: Handler, *, background: bool = False) -> None:
        if not background:
            self._handlers[topic].append(handler)
            return
        queue: asyncio.Queue[Message] = asyncio.Queue()
        self._queues[topic] = queue

        async def drain() -> None:
            while True:
                message = await queue.get()
                try:
                    await handler(message)
                except Exception as error:  # noqa: BLE001 - keep draining
                    log.error("background_handler_failed", topic=topic, error=str(error)[:300])

        self._handlers[topic].append(self._enqueue(queue))
        self._tasks.append(asyncio.create_task(drain(), name=f"bus-{topic}"))

    @staticmethod
    def _enqueue(queue: asyncio.Queue[Message]) -> Handler:
        async def put(message: Message) -> None:
            queue.put_nowait(message)

        return put

    async def publish(self, messages: Sequence[Message]) -> None:
        for message in messages:
            for handler in self._handlers.get(message.topic, ()):
                await handler(message)
        for topics, batch_handler in self._batch_handlers:
            mine = [message for message in messages if message.topic in topics]
            if mine:
                await batch_handler(mine)

    async def reset(self) -> None:
        pass  # nothing is kept between batches in-process

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
