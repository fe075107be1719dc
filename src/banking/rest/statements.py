"""Transaction history as Arrow IPC stream or Parquet, for statements and analytics."""

from __future__ import annotations

import io
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq

from banking.domain.records import Transaction
from banking.events.schemas import HISTORY

ARROW_STREAM_MEDIA_TYPE: Final = "application/vnd.apache.arrow.stream"
PARQUET_MEDIA_TYPE: Final = "application/vnd.apache.parquet"

# The history export is a leg's columns as defined once in ``events.schemas`` (its names are the
# record's: ``created_at``, not the Kafka event's ``timestamp``).
HISTORY_SCHEMA: Final = HISTORY.schema


def _table(legs: list[Transaction]) -> pa.Table:
    rows = [HISTORY.arrow_row(leg) for leg in legs]
    return pa.Table.from_pylist(rows, schema=HISTORY_SCHEMA)


def to_arrow_stream(legs: list[Transaction]) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, HISTORY_SCHEMA) as writer:
        writer.write_table(_table(legs))
    return sink.getvalue()


def to_parquet(legs: list[Transaction]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(_table(legs), sink)
    return sink.getvalue()
