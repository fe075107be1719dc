"""Running the event-side workers: each as its own process on Kafka (`banking worker NAME`),
or all of them in-process inside `banking serve` when no Kafka is configured."""

from __future__ import annotations

import asyncio
from typing import Final

from banking.analytics.consumer import consumer_of as analytics_consumer_of
from banking.audit.chain import JournalSealer, JournalVerifier
from banking.audit.consumer import AuditRecorder
from banking.container import Container
from banking.events import topics
from banking.events.envelope import read_headers
from banking.events.relay import OutboxRelay, relay_transactional_id
from banking.events.retention import OutboxRetention
from banking.events.security import kafka_security
from banking.events.serialization import EventFormat
from banking.events.signing import keyring_of
from banking.events.transport import (
    BatchHandler,
    Handler,
    InProcessBus,
    KafkaConsumerLoop,
    KafkaPublisher,
    Message,
)
from banking.notifications.delivery import WebhookDelivery
from banking.notifications.observer import DeliveryObserver
from banking.notifications.routing import TOPICS as NOTIFICATION_TOPICS
from banking.notifications.routing import NotificationRouter
from banking.observability.logging import get_logger
from banking.workers.balance_cache import BalanceCacheInvalidator
from banking.workers.dead_letter_handler import DeadLetterHandler
from banking.workers.dead_letters import DeadLetters
from banking.workers.fraud import CommandScreening, FraudWorker, build_detector
from banking.workers.holds import HoldExpiry
from banking.workers.processor import CommandProcessor

log = get_logger(__name__)

# Worker name -> (consumer group, the topics it reads).
CONSUMER_GROUPS: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "processor": ("banking-transaction-processor", (topics.TRANSACTIONS_SUBMITTED,)),
    "dlq": ("banking-dlq-handler", (topics.TRANSACTIONS_DLQ,)),
    "balance-cache": ("banking-balance-cache", (topics.ACCOUNT_BALANCES,)),
    "notifications": ("banking-notifications", NOTIFICATION_TOPICS),
    "fraud": (
        "banking-fraud-detector",
        (topics.TRANSACTIONS_COMPLETED, topics.TRANSACTIONS_FAILED),
    ),
    # Every topic the service publishes events on (the schema records are not events).
    "audit": (
        "banking-audit",
        tuple(topic for topic in topics.ALL_TOPICS if topic != topics.SCHEMAS),
    ),
    "analytics": (
        "banking-analytics",
        (
            topics.TRANSACTIONS_COMPLETED,
            topics.TRANSACTIONS_FAILED,
            topics.ACCOUNT_BALANCES,
            topics.TRANSACTIONS_HELD,
            topics.FRAUD_ALERTS,
        ),
    ),
}
# Workers that read no topic: they run a pass on the database every so often.
PERIODIC_WORKERS: Final = ("holds",)
WORKER_NAMES: Final = ("relay", *CONSUMER_GROUPS, *PERIODIC_WORKERS)


def _handlers(
    container: Container,
    dead_letters: DeadLetters,
    batch: dict[str, BatchHandler] | None = None,
) -> dict[str, Handler]:
    """The per-message handler of each worker; ``batch`` gets the batch handlers of those
    that have one (``handle_batch``: several messages in one transaction)."""
    batch = {} if batch is None else batch
    settings = container.settings
    # FRAUD_ENABLED: one detector (one model source) for the screening and the scoring.
    detector = build_detector(settings) if settings.fraud_enabled else None
    screening = None
    if detector is not None and settings.fraud_mode == "hold":
        screening = CommandScreening(container.unit_of_work, detector, observer=container.metrics)
    processor = CommandProcessor(
        container.movements,
        dead_letters,
        keyring=keyring_of(settings),
        observer=container.metrics,
        screening=screening,
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
    if detector is not None:
        worker = FraudWorker(
            container.unit_of_work, detector, dead_letters, observer=container.metrics
        )
        handlers["fraud"] = worker.handle
        batch["fraud"] = worker.handle_batch
    if settings.audit_enabled:
        recorder = AuditRecorder(container.database, observer=container.metrics)
        handlers["audit"] = recorder.handle
        batch["audit"] = recorder.handle_batch
    return handlers


def _notifications(
    container: Container, dead_letters: DeadLetters
) -> tuple[NotificationRouter, WebhookDelivery]:
    """The notifications consumer and the webhook delivery loop it feeds (woken by it)."""
    metrics = container.metrics
    observer = metrics if isinstance(metrics, DeliveryObserver) else None
    delivery = WebhookDelivery(container.database, container.settings, observer=observer)
    router = NotificationRouter(
        container.database, dead_letters=dead_letters, observer=observer, on_routed=delivery.wake
    )
    return router, delivery


async def run_kafka_worker(name: str, container: Container, stop: asyncio.Event) -> None:
    """Run one worker against Kafka until ``stop`` is set."""
    settings = container.settings
    if not settings.uses_kafka:
        raise ValueError("KAFKA_BOOTSTRAP_SERVERS is not set; workers run inside `banking serve`")
    if name == "holds":  # the expiry of holds: no topic, a pass every HOLD_EXPIRY_SECONDS
        await hold_expiry(container).run(stop)
        return
    if name == "analytics":  # its own loop (commits after each flush); it publishes nothing
        group_id, topic_names = CONSUMER_GROUPS[name]
        await analytics_consumer_of(
            settings,
            group_id=group_id,
            topics=topic_names,
            observer=container.metrics,
            consumer_observer=container.metrics,
        ).run(stop)
        return
    publisher = KafkaPublisher(
        settings.kafka_bootstrap_servers,
        client_id=f"banking-{name}",
        topic_prefix=settings.kafka_topic_prefix,
        # Every relay process shares one transactional id: the leader's producer fences the
        # one before it, so a relay that lost its lock cannot add to the topics any more.
        transactional_id=relay_transactional_id(settings.kafka_topic_prefix)
        if name == "relay"
        else None,
        security=kafka_security(settings),
    )
    try:
        if name == "relay":
            relay = OutboxRelay(
                container.database,
                publisher,
                event_format=EventFormat(settings.event_format),
                observer=container.metrics,
                keyring=keyring_of(settings),
                sealer=journal_sealer(container),
            )
            # The relay process also keeps the outbox bounded (OUTBOX_RETENTION_HOURS).
            await asyncio.gather(relay.run(stop), _retention(container).run(stop))
            return
        dead_letters = DeadLetters(publisher, container.metrics)
        handlers = _handlers(container, dead_letters)
        delivery = None
        if name == "notifications":
            router, delivery = _notifications(container, dead_letters)
            handlers[name] = router.handle
        if name not in handlers:
            raise ValueError(f"unknown worker {name!r}; choose from {', '.join(WORKER_NAMES)}")
        group_id, topic_names = CONSUMER_GROUPS[name]
        loop = KafkaConsumerLoop(
            settings.kafka_bootstrap_servers,
            group_id=group_id,
            topics=list(topic_names),
            handler=handlers[name],
            topic_prefix=settings.kafka_topic_prefix,
            observer=container.metrics,
            security=kafka_security(settings),
        )
        if delivery is not None:  # the consumer and the delivery loop, side by side
            await asyncio.gather(loop.run(stop), delivery.run(stop))
            return
        if name == "audit":  # the audit worker also verifies the journal's chain
            await asyncio.gather(loop.run(stop), journal_verifier(container).run(stop))
            return
        await loop.run(stop)
    finally:
        await publisher.stop()


def journal_sealer(container: Container) -> JournalSealer | None:
    """The sealer of the tamper-evident journal the relay runs after each publish pass; None
    with ``JOURNAL_SEAL=false`` (the rows then wait unsealed, and verify warns about them)."""
    if not container.settings.journal_seal:
        return None
    return JournalSealer(
        container.database,
        batch_size=container.settings.journal_seal_batch,
        observer=container.metrics,
    )


def journal_verifier(container: Container) -> JournalVerifier:
    """The periodic verifier of the journal's chain (JOURNAL_VERIFY_SECONDS; 0: off)."""
    return JournalVerifier(
        container.database,
        interval_seconds=container.settings.journal_verify_seconds,
        observer=container.metrics,
    )


def hold_expiry(container: Container) -> HoldExpiry:
    """The expiry of holds (``banking worker holds``, in-process when embedded)."""
    return HoldExpiry(container.holds, interval_seconds=container.settings.hold_expiry_seconds)


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
        if container.settings.analytics_location:
            # Not in-process: the bus marks an outbox row published when its handlers return,
            # before the sink's buffered rows are durable, so a crash could lose them.
            log.warning(
                "analytics_sink_not_embedded",
                reason="the analytics sink runs only as `banking worker analytics` on Kafka",
            )
        dead_letters = DeadLetters(self.bus, container.metrics)
        batch: dict[str, BatchHandler] = {}
        handlers = _handlers(container, dead_letters, batch)
        self.bus.subscribe(topics.TRANSACTIONS_SUBMITTED, handlers["processor"])
        self.bus.subscribe(topics.TRANSACTIONS_DLQ, handlers["dlq"], background=True)
        self.bus.subscribe(topics.TRANSACTIONS_PERMANENT_DLQ, _log_permanent)
        if "balance-cache" in handlers:
            self.bus.subscribe(topics.ACCOUNT_BALANCES, handlers["balance-cache"])
        # The consumers that write to the database take each relay batch at once (one
        # transaction per batch), after the per-message handlers, in this order.
        if "fraud" in batch:
            self.bus.subscribe_batch(CONSUMER_GROUPS["fraud"][1], batch["fraud"])
        notifications, self.delivery = _notifications(container, dead_letters)
        self.bus.subscribe_batch(NOTIFICATION_TOPICS, notifications.handle_batch)
        if "audit" in batch:
            # Last on every topic, the permanent DLQ included: the others see what they saw
            # before, and a message is recorded after they handled it.
            self.bus.subscribe_batch(CONSUMER_GROUPS["audit"][1], batch["audit"])
        # Nothing crosses a wire in-process: the outbox's JSON is passed as it is.
        self.relay = OutboxRelay(
            container.database,
            self.bus,
            event_format=EventFormat.JSON,
            observer=container.metrics,
            publish_schemas=False,  # no reader outside this process to resolve them
            keyring=keyring_of(container.settings),  # signed and verified as on Kafka
            sealer=journal_sealer(container),
        )
        self.retention = _retention(container)
        self.verifier = journal_verifier(container)
        self.hold_expiry = hold_expiry(container)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._stop.clear()
        self._tasks = [
            asyncio.create_task(self.relay.run(self._stop), name="embedded-relay"),
            asyncio.create_task(self.retention.run(self._stop), name="embedded-retention"),
            asyncio.create_task(self.delivery.run(self._stop), name="embedded-webhooks"),
            asyncio.create_task(self.verifier.run(self._stop), name="embedded-journal-verify"),
            asyncio.create_task(self.hold_expiry.run(self._stop), name="embedded-holds"),
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
