"""Operator tasks on Kafka: create the topics, replay the permanent dead letters."""

from __future__ import annotations

import contextlib

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from banking.config import Settings
from banking.events import topics
from banking.events.transport import KafkaPublisher, message_of
from banking.workers.dead_letters import as_original

REPLAY_IDLE_SECONDS = 3.0
REPLAY_MESSAGES_MAX = 100_000


async def create_topics(settings: Settings) -> list[str]:
    """Create every topic of DESIGN.md section 7 that does not exist yet; the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [settings.kafka_topic_prefix + name for name in topics.ALL_TOPICS]
        missing = [name for name in wanted if name not in existing]
        if missing:
            # another process may create them concurrently
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [
                        NewTopic(
                            name,
                            num_partitions=settings.kafka_topic_partitions,
                            replication_factor=settings.kafka_replication_factor,
                            topic_configs={
                                "min.insync.replicas": str(
                                    min(2, settings.kafka_replication_factor)
                                )
                            },
                        )
                        for name in missing
                    ]
                )
        return missing
    finally:
        await admin.close()


async def replay_dead_letters(settings: Settings, *, limit: int = REPLAY_MESSAGES_MAX) -> int:
    """Re-submit the permanent dead letters to their original topic (after a fix), once each:
    the replay consumer group's committed offset remembers what was already replayed."""
    prefix = settings.kafka_topic_prefix
    publisher = KafkaPublisher(
        settings.kafka_bootstrap_servers, client_id="banking-dlq-replay", topic_prefix=prefix
    )
    consumer = AIOKafkaConsumer(
        prefix + topics.TRANSACTIONS_PERMANENT_DLQ,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=prefix + "banking-dlq-replay",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
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
