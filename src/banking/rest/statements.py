"""Transaction history as Arrow IPC stream or Parquet, for statements and analytics."""

from __future__ import annotations

import io
from decimal import Decimal
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq

from banking.domain.records import Transaction

ARROW_STREAM_MEDIA_TYPE: Final = "application/vnd.apache.arrow.stream"
PARQUET_MEDIA_TYPE: Final = "application/vnd.apache.parquet"

HISTORY_SCHEMA: Final = pa.schema(
    [
        ("transaction_id", pa.string()),
        ("account_id", pa.string()),
        ("transaction_type", pa.string()),
        ("amount", pa.decimal128(18, 2)),
        ("currency", pa.string()),
        ("description", pa.string()),
        ("reference_id", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("status", pa.string()),
        ("related_transaction_id", pa.string()),
        ("failure_code", pa.string()),
        ("available_balance_after", pa.decimal128(18, 2)),
    ]
)


def _table(legs: list[Transaction]) -> pa.Table:
    def text(value: object) -> str | None:
        return None if value is None else str(value)

    def money(value: Decimal | None) -> Decimal | None:
        return None if value is None else value.quantize(Decimal("0.01"))

    rows = [
        {
            "transaction_id": str(leg.transaction_id),
            "account_id": str(leg.account_id),
            "transaction_type": leg.transaction_type.value,
            "amount": money(leg.amount),
            "currency": leg.currency,
            "description": leg.description,
            "reference_id": leg.reference_id,
            "created_at": leg.created_at,
            "status": leg.status.value,
            "related_transaction_id": text(leg.related_transaction_id),
            "failure_code": leg.failure_code,
            "available_balance_after": money(leg.available_balance_after),
        }
        for leg in legs
    ]
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
