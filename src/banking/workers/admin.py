"""Operator tasks on Kafka: create the topics and publish the event schemas, read the
published schemas back, replay the permanent dead letters."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from banking.config import Settings
from banking.events import registry, topics
from banking.events.security import kafka_security
from banking.events.transport import KafkaPublisher, message_of
from banking.workers.dead_letters import as_original

REPLAY_IDLE_SECONDS = 3.0
REPLAY_MESSAGES_MAX = 100_000
SCHEMAS_READ_TIMEOUT_SECONDS = 30.0


async def create_topics(settings: Settings) -> list[str]:
    """Create every topic of DESIGN.md section 7 that does not exist yet, and the compacted
    ``banking.schemas``, then publish the event schemas on it; the names created."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers, **kafka_security(settings)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        prefix = settings.kafka_topic_prefix
        missing = [name for name in topics.ALL_TOPICS if prefix + name not in existing]
        if missing:
            # another process may create them concurrently
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([_new_topic(settings, name) for name in missing])
    finally:
        await admin.close()
    await publish_schemas(settings)
    return [prefix + name for name in missing]


def _new_topic(settings: Settings, name: str) -> NewTopic:
    configs = {"min.insync.replicas": str(min(2, settings.kafka_replication_factor))}
    partitions = settings.kafka_topic_partitions
    if name == topics.SCHEMAS:
        # One record per schema version, kept forever: compacted, never deleted by age.
        configs["cleanup.policy"] = "compact"
        partitions = 1
    return NewTopic(
        settings.kafka_topic_prefix + name,
        num_partitions=partitions,
        replication_factor=settings.kafka_replication_factor,
        topic_configs=configs,
    )


async def publish_schemas(settings: Settings) -> None:
    """Write every event schema to ``banking.schemas`` (idempotent: same key, same value)."""
    publisher = KafkaPublisher(
        settings.kafka_bootstrap_servers,
        client_id="banking-schemas",
        topic_prefix=settings.kafka_topic_prefix,
        security=kafka_security(settings),
    )
    try:
        await publisher.publish(registry.schema_messages())
    finally:
        await publisher.stop()


async def read_published_schemas(
    settings: Settings, *, timeout_seconds: float = SCHEMAS_READ_TIMEOUT_SECONDS
) -> dict[str, bytes]:
    """The latest record of each key on ``banking.schemas``: schema id -> Arrow IPC stream
    (empty when the topic does not exist: it is not created by reading)."""
    topic = settings.kafka_topic_prefix + topics.SCHEMAS
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers, **kafka_security(settings)
    )
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            return {}
        [description] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assigned = [TopicPartition(topic, p["partition"]) for p in description["partitions"]]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        **kafka_security(settings),
    )
    await consumer.start()
    published: dict[str, bytes] = {}
    try:
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        ends = await consumer.end_offsets(assigned)
        deadline = asyncio.get_running_loop().time() + timeout_seconds
        while any([await consumer.position(tp) < ends[tp] for tp in assigned]):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{topic} could not be read within {timeout_seconds} s")
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    if record.key is None:
                        continue
                    if record.value is None:  # a tombstone: the schema was withdrawn
                        published.pop(record.key.decode(), None)
                    else:
                        published[record.key.decode()] = record.value
    finally:
        await consumer.stop()
    return published


async def replay_dead_letters(settings: Settings, *, limit: int = REPLAY_MESSAGES_MAX) -> int:
    """Re-submit the permanent dead letters to their original topic (after a fix), once each:
    the replay consumer group's committed offset remembers what was already replayed."""
    prefix = settings.kafka_topic_prefix
    publisher = KafkaPublisher(
        settings.kafka_bootstrap_servers,
        client_id="banking-dlq-replay",
        topic_prefix=prefix,
        security=kafka_security(settings),
    )
    consumer = AIOKafkaConsumer(
        prefix + topics.TRANSACTIONS_PERMANENT_DLQ,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=prefix + "banking-dlq-replay",
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        **kafka_security(settings),
    )
    await consumer.start()
    replayed = 0
    try:
        while replayed < limit:
            batches = await consumer.getmany(timeout_ms=int(REPLAY_IDLE_SECONDS * 1000))
            if not batches:
                break
            for partition, records in batches.items():
                originals = [
                    as_original(message_of(record, topic_prefix=prefix)) for record in records
                ]
                await publisher.publish(originals)
                await consumer.commit({partition: records[-1].offset + 1})
                replayed += len(records)
    finally:
        await consumer.stop()
        await publisher.stop()
    return replayed
