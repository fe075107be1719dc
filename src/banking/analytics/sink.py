"""The sink's state between Kafka and the files: buffered rows, what is already written, and
when to flush.

Exactly once per event, across restarts:

- Offsets are tracked with the files (``analytics.dataset``): on start the sink reads the
  highest offset written per (event type, day, topic, partition) and skips every message at or
  below it; so a worker killed after writing files but before committing its Kafka offsets
  re-reads those messages and stores none of them twice.
- Kafka offsets are committed only after a flush made every row read so far durable (the
  consumer, ``analytics.consumer``, does that with the positions ``flush`` returns); a worker
  killed before a flush re-reads what it had buffered, so nothing is lost.
- The relay is at-least-once: a batch it published twice (killed between the send and the
  mark) puts the same event id at two offsets. The ids of the last ``RECENT_EVENT_IDS_MAX``
  events stored are kept (rebuilt from the newest files on start) and a repeat is skipped;
  that window is far wider than a relay batch (``events.relay.BATCH_SIZE_MAX``).

One flush writes every buffer, so a file key's offsets never interleave with an unwritten
message of the same key.
"""

from __future__ import annotations

import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Protocol

import pyarrow.parquet as pq

from banking.analytics.dataset import FileKey, ParquetDataset
from banking.analytics.rows import Row, UnreadableEvent, row_of, table_of
from banking.events.transport import Message
from banking.observability.logging import get_logger

log = get_logger(__name__)

RECENT_EVENT_IDS_MAX: Final = 100_000

TopicPartition = tuple[str, int]


class SinkObserver(Protocol):
    def analytics_file_written(self, event_type: str, rows: int, size_bytes: int) -> None: ...

    def analytics_flush_lag(self, lag_seconds: float) -> None: ...

    def analytics_skipped(self, reason: str) -> None: ...


class _Unobserved:
    def analytics_file_written(self, event_type: str, rows: int, size_bytes: int) -> None:
        pass

    def analytics_flush_lag(self, lag_seconds: float) -> None:
        pass

    def analytics_skipped(self, reason: str) -> None:
        pass


@dataclass
class _Buffer:
    rows: list[Row] = field(default_factory=list)
    first_offset: int = -1
    last_offset: int = -1


@dataclass(frozen=True, slots=True)
class Flushed:
    """What one flush made durable: files and rows written, and the next offset to commit per
    (logical topic, partition)."""

    files: int
    rows: int
    size_bytes: int
    positions: dict[TopicPartition, int]


class AnalyticsSink:
    """Buffer event rows by file key; ``flush`` writes them all and says what to commit."""

    def __init__(
        self,
        dataset: ParquetDataset,
        *,
        flush_seconds: float,
        observer: SinkObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dataset = dataset
        self._rows_max = dataset.row_group_rows
        self._flush_seconds = flush_seconds
        self._observer: SinkObserver = observer or _Unobserved()
        self._clock = clock
        self._written: dict[FileKey, int] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._buffers: dict[FileKey, _Buffer] = defaultdict(_Buffer)
        self._buffered_rows = 0
        self._received: dict[TopicPartition, int] = {}
        self._pending_since: float | None = None

    def load(self) -> None:
        """Forget anything buffered and read what the files say is written (at start, after a
        rebalance, after a failed flush)."""
        self._buffers.clear()
        self._buffered_rows = 0
        self._received.clear()
        self._pending_since = None
        removed = self._dataset.remove_temporary_files()
        if removed:
            log.warning("analytics_temporary_files_removed", files=removed)
        self._written = self._dataset.written_offsets()
        self._recent = OrderedDict()
        files = self._dataset.files()
        # Newest files first: the ids a re-sent relay batch can repeat.
        ids: list[str] = []
        for data_file in sorted(files, key=lambda f: f.last_offset, reverse=True):
            if len(ids) >= RECENT_EVENT_IDS_MAX:
                break
            table = pq.read_table(
                data_file.path, columns=["event_id"], filesystem=self._dataset.filesystem
            )
            ids.extend(str(value) for value in table.column("event_id").to_pylist())
        for event_id in reversed(ids[:RECENT_EVENT_IDS_MAX]):
            self._recent[event_id] = None
        log.info("analytics_sink_loaded", files=len(files), keys=len(self._written))

    @property
    def buffered_rows(self) -> int:
        return self._buffered_rows

    def accept(self, message: Message) -> bool:
        """Take one message; True when its row was buffered, False when it was skipped
        (written before, a repeated event id, or no event the sink stores)."""
        if message.partition is None or message.offset is None:
            raise ValueError("the analytics sink needs messages with a partition and offset")
        partition = (message.topic, message.partition)
        self._received[partition] = max(self._received.get(partition, -1), message.offset)
        if self._pending_since is None:
            self._pending_since = self._clock()
        try:
            row = row_of(message)
        except UnreadableEvent as error:
            log.error(
                "analytics_event_unreadable",
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                error=str(error)[:300],
            )
            self._observer.analytics_skipped("unreadable")
            return False
        key = FileKey(row.event_type, row.date, message.topic, message.partition)
        if message.offset <= self._written.get(key, -1):
            self._observer.analytics_skipped("already_written")
            return False
        if row.event_id in self._recent:
            self._observer.analytics_skipped("duplicate_event")
            return False
        buffer = self._buffers[key]
        if not buffer.rows:
            buffer.first_offset = message.offset
        buffer.last_offset = message.offset
        buffer.rows.append(row)
        self._buffered_rows += 1
        self._remember(row.event_id)
        return True

    def _remember(self, event_id: str) -> None:
        self._recent[event_id] = None
        if len(self._recent) > RECENT_EVENT_IDS_MAX:
            self._recent.popitem(last=False)

    def seconds_until_due(self) -> float | None:
        """How long until a flush is due (0: now); None when nothing waits."""
        if self._pending_since is None:
            return None
        if self._buffered_rows >= self._rows_max:
            return 0.0
        return max(0.0, self._pending_since + self._flush_seconds - self._clock())

    def flush(self) -> Flushed:
        """Write every buffered row (one file per key, row groups of at most
        ``ANALYTICS_ROW_GROUP_ROWS``), then say what may be committed. Blocking I/O: the
        consumer runs it in a thread."""
        files = rows = size_bytes = 0
        for key in sorted(self._buffers):
            buffer = self._buffers[key]
            if not buffer.rows:
                continue
            table = table_of(key.event_type, buffer.rows)
            written_bytes = self._dataset.write(key, buffer.first_offset, buffer.last_offset, table)
            self._written[key] = buffer.last_offset
            files += 1
            rows += len(buffer.rows)
            size_bytes += written_bytes
            self._observer.analytics_file_written(key.event_type, len(buffer.rows), written_bytes)
            now = datetime.now(UTC)
            for row in buffer.rows:
                self._observer.analytics_flush_lag((now - row.event_time).total_seconds())
        positions = {partition: offset + 1 for partition, offset in self._received.items()}
        self._buffers.clear()
        self._buffered_rows = 0
        self._received.clear()
        self._pending_since = None
        if files:
            log.info("analytics_flushed", files=files, rows=rows, bytes=size_bytes)
        return Flushed(files, rows, size_bytes, positions)
