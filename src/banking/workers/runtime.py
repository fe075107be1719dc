"""Running the event-side workers: each as its own process on Kafka (`banking worker NAME`),
or all of them in-process inside `banking serve` when no Kafka is configured."""

from __future__ import annotations

import asyncio
from typing import Final

from banking.container import Container
from banking.events import topics
from banking.events.envelope import read_headers
from banking.events.relay import OutboxRelay
from banking.events.retention import OutboxRetention
from banking.events.serialization import EventFormat
from banking.events.signing import keyring_of
from banking.events.transport import (
    Handler,
    InProcessBus,
    KafkaConsumerLoop,
    KafkaPublisher,
    Message,
)
from banking.observability.logging import get_logger
from banking.workers.balance_cache import BalanceCacheInvalidator
from banking.workers.dead_letter_handler import DeadLetterHandler
from banking.workers.dead_letters import DeadLetters
from banking.workers.processor import CommandProcessor

log = get_logger(__name__)

CONSUMER_GROUPS: Final = {
    "processor": ("banking-transaction-processor", topics.TRANSACTIONS_SUBMITTED),
    "dlq": ("banking-dlq-handler", topics.TRANSACTIONS_DLQ),
    "balance-cache": ("banking-balance-cache", topics.ACCOUNT_BALANCES),
}
WORKER_NAMES: Final = ("relay", *CONSUMER_GROUPS)


def _handlers(container: Container, dead_letters: DeadLetters) -> dict[str, Handler]:
    settings = container.settings
    processor = CommandProcessor(
        container.movements,
        dead_letters,
        keyring=keyring_of(settings),
        observer=container.metrics,
    )
    handlers: dict[str, Handler] = {
        "processor": processor.handle,
        "dlq": DeadLetterHandler(
            processor,
            dead_letters,
            retries_max=settings.dlq_retries_max,
            backoff_base_seconds=settings.dlq_backoff_seconds,
        ).handle,
    }
    cache = container.balance_cache
    if cache is not None:
        handlers["balance-cache"] = BalanceCacheInvalidator(cache).handle
    return handlers


async def run_kafka_worker(name: str, container: Container, stop: asyncio.Event) -> None:
    """Run one worker against Kafka until ``stop`` is set."""
    settings = container.settings
    if not settings.uses_kafka:
        raise ValueError("KAFKA_BOOTSTRAP_SERVERS is not set; workers run inside `banking serve`")
    publisher = KafkaPublisher(
        settings.kafka_bootstrap_servers,
        client_id=f"banking-{name}",
        topic_prefix=settings.kafka_topic_prefix,
    )
    try:
        if name == "relay":
            relay = OutboxRelay(
                container.database,
                publisher,
                event_format=EventFormat(settings.event_format),
                observer=container.metrics,
                keyring=keyring_of(settings),
            )
            # The relay process also keeps the outbox bounded (OUTBOX_RETENTION_HOURS).
            await asyncio.gather(relay.run(stop), _retention(container).run(stop))
            return
        dead_letters = DeadLetters(publisher, container.metrics)
        handlers = _handlers(container, dead_letters)
        if name not in handlers:
            raise ValueError(f"unknown worker {name!r}; choose from {', '.join(WORKER_NAMES)}")
        group_id, topic = CONSUMER_GROUPS[name]
        loop = KafkaConsumerLoop(
            settings.kafka_bootstrap_servers,
            group_id=group_id,
            topics=[topic],
            handler=handlers[name],
            topic_prefix=settings.kafka_topic_prefix,
            observer=container.metrics,
        )
        await loop.run(stop)
    finally:
        await publisher.stop()


def _retention(container: Container) -> OutboxRetention:
    settings = container.settings
    return OutboxRetention(
        container.database,
        keep_hours=settings.outbox_retention_hours,
        batch_size=settings.outbox_retention_batch,
    )


class EmbeddedEvents:
    """The embedded event log: the outbox relay dispatches to the same consumers in-process.

    An outbox row is marked published only after its consumers handled it, so a crash re-runs
    them on restart (they are idempotent). Retries from the DLQ wait their backoff in a
    background queue; dead letters of the embedded mode are logged (there is no broker to keep
    them), and their pending legs stay pending for an operator to see.
    """

    def __init__(self, container: Container) -> None:
        self.bus = InProcessBus()
        dead_letters = DeadLetters(self.bus, container.metrics)
        handlers = _handlers(container, dead_letters)
        self.bus.subscribe(topics.TRANSACTIONS_SUBMITTED, handlers["processor"])
        self.bus.subscribe(topics.TRANSACTIONS_DLQ, handlers["dlq"], background=True)
        self.bus.subscribe(topics.TRANSACTIONS_PERMANENT_DLQ, _log_permanent)
        if "balance-cache" in handlers:
            self.bus.subscribe(topics.ACCOUNT_BALANCES, handlers["balance-cache"])
        # Nothing crosses a wire in-process: the outbox's JSON is passed as it is.
        self.relay = OutboxRelay(
            container.database,
            self.bus,
            event_format=EventFormat.JSON,
            observer=container.metrics,
            publish_schemas=False,  # no reader outside this process to resolve them
            keyring=keyring_of(container.settings),  # signed and verified as on Kafka
        )
        self.retention = _retention(container)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._stop.clear()
        self._tasks = [
            asyncio.create_task(self.relay.run(self._stop), name="embedded-relay"),
            asyncio.create_task(self.retention.run(self._stop), name="embedded-retention"),
        ]

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            await task
        self._tasks = []
        await self.bus.close()


async def _log_permanent(message: Message) -> None:
    headers = read_headers(message.headers)
    log.error(
        "command_dead_lettered",
        attempts=message.headers.get("attempts"),
        error=message.headers.get("error"),
        trace_id=headers.trace_id,
        event_id=headers.event_id,
    )
