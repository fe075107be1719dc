"""`banking worker analytics`: a batch-aware Kafka consumer in front of the sink.

Unlike ``events.transport.KafkaConsumerLoop`` (one commit per handled message), this loop
commits only after a flush: messages are buffered by the sink, and their offsets are
committed once the files holding them are durable. A partition taken away by a rebalance is
flushed and committed first (the listener runs before the group rejoins); a partition
assigned re-reads the files, which another member may have written since. A flush that fails
(the filesystem) drops the buffers and rewinds every partition to its committed offset, so the
messages are read again once the filesystem is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from banking.analytics.dataset import ParquetDataset
from banking.analytics.sink import AnalyticsSink, Flushed, SinkObserver
from banking.config import Settings
from banking.events.security import kafka_security
from banking.events.transport import ConsumerObserver, message_of, seconds_since_commit
from banking.observability.logging import get_logger

log = get_logger(__name__)

POLL_TIMEOUT_SECONDS_MAX: Final = 0.5
RECORDS_PER_POLL_MAX: Final = 1000
FLUSH_FAILURE_PAUSE_SECONDS: Final = 1.0


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: AnalyticsConsumer) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._loop.flush_and_commit()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await asyncio.to_thread(self._loop.sink.load)


class AnalyticsConsumer:
    """One member of the ``banking-analytics`` group, feeding ``sink``."""

    def __init__(
        self,
        bootstrap_servers: str,
        sink: AnalyticsSink,
        *,
        group_id: str,
        topics: Sequence[str],
        topic_prefix: str = "",
        observer: ConsumerObserver | None = None,
        security: Mapping[str, Any] | None = None,
    ) -> None:
        self.sink = sink
        self.group_id = group_id
        self._topic_prefix = topic_prefix
        self._topics = [topic_prefix + topic for topic in topics]
        self._observer = observer
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=topic_prefix + group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=RECORDS_PER_POLL_MAX,
            isolation_level="read_committed",  # the relay publishes in transactions
            **(security or {}),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; flush and commit what was read before returning."""
        await asyncio.to_thread(self.sink.load)
        self._consumer.subscribe(self._topics, listener=_Rebalance(self))
        await self._consumer.start()
        try:
            while not stop.is_set():
                wait = self.sink.seconds_until_due()
                timeout = POLL_TIMEOUT_SECONDS_MAX if wait is None else min(wait, 0.5)
                batches = await self._consumer.getmany(
                    timeout_ms=int(timeout * 1000), max_records=RECORDS_PER_POLL_MAX
                )
                for records in batches.values():
                    for record in records:
                        message = message_of(record, topic_prefix=self._topic_prefix)
                        self.sink.accept(message)
                        if self._observer is not None:
                            self._observer.consumed(
                                self.group_id, message.topic, seconds_since_commit(message)
                            )
                if self.sink.seconds_until_due() == 0.0:
                    await self.flush_and_commit()
                await self._report_lag()
            await self.flush_and_commit()
        finally:
            await self._consumer.stop()

    async def flush_and_commit(self) -> Flushed | None:
        """Make every buffered row durable, then commit the offsets of everything read."""
        try:
            flushed = await asyncio.to_thread(self.sink.flush)
        except OSError as error:
            log.error("analytics_flush_failed", error_type=type(error).__name__, error=str(error))
            await self._rewind()
            await asyncio.sleep(FLUSH_FAILURE_PAUSE_SECONDS)
            return None
        if flushed.positions:
            offsets = {
                TopicPartition(self._topic_prefix + topic, partition): offset
                for (topic, partition), offset in flushed.positions.items()
            }
            try:
                await self._consumer.commit(offsets)
            except KafkaError as error:
                # The files are durable and name their offsets: whoever reads these messages
                # again skips them.
                log.warning("analytics_commit_failed", error=str(error)[:300])
        return flushed

    async def _report_lag(self) -> None:
        if self._observer is None:
            return
        behind: dict[str, int] = {}
        for partition in self._consumer.assignment():
            highwater = self._consumer.highwater(partition)
            if highwater is None:
                continue
            topic = partition.topic.removeprefix(self._topic_prefix)
            position = await self._consumer.position(partition)
            behind[topic] = behind.get(topic, 0) + max(0, highwater - position)
        for topic, messages in behind.items():
            self._observer.lagging(self.group_id, topic, messages)

    async def _rewind(self) -> None:
        await asyncio.to_thread(self.sink.load)
        for partition in self._consumer.assignment():
            committed = await self._consumer.committed(partition)
            if committed is None:
                await self._consumer.seek_to_beginning(partition)
            else:
                self._consumer.seek(partition, committed)


class AnalyticsNotConfigured(ValueError):
    """The worker was asked to run without a place to write."""


def consumer_of(
    settings: Settings,
    *,
    group_id: str,
    topics: Sequence[str],
    observer: SinkObserver | None = None,
    consumer_observer: ConsumerObserver | None = None,
) -> AnalyticsConsumer:
    """The analytics worker of these settings (``ANALYTICS_LOCATION`` and friends)."""
    if not settings.analytics_location:
        raise AnalyticsNotConfigured(
            "ANALYTICS_LOCATION is not set: give the directory or pyarrow.fs URL "
            "(s3://bucket/path) the analytics worker writes its Parquet dataset to"
        )
    dataset = ParquetDataset(
        settings.analytics_location, row_group_rows=settings.analytics_row_group_rows
    )
    sink = AnalyticsSink(dataset, flush_seconds=settings.analytics_flush_seconds, observer=observer)
    return AnalyticsConsumer(
        settings.kafka_bootstrap_servers,
        sink,
        group_id=group_id,
        topics=topics,
        topic_prefix=settings.kafka_topic_prefix,
        observer=consumer_observer,
        security=kafka_security(settings),
    )
