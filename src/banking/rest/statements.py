"""Transaction history as Arrow IPC stream or Parquet, for statements and analytics."""

from __future__ import annotations

import csv
import io
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq

from banking.domain.money import format_amount
from banking.domain.records import Transaction
from banking.events.schemas import HISTORY, labels_text
from banking.ledger.statements import Statement

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


# --- statements (GET /api/v1/accounts/{id}/statement) ------------------------------------------

CSV_MEDIA_TYPE: Final = "text/csv"
_MONEY: Final = pa.decimal128(18, 2)
# A statement's rows: the history's columns and the running balance after each leg, exact.
STATEMENT_SCHEMA: Final = HISTORY_SCHEMA.append(pa.field("running_balance", _MONEY, False))


def statement_summary(statement: Statement) -> dict[str, str]:
    """The figures around the rows, as text: the Arrow/Parquet schema metadata and the
    ``X-Statement-*`` headers of every format but JSON."""
    return {
        "account_id": str(statement.account.account_id),
        "currency": statement.account.currency,
        "from": statement.period_from.isoformat(),
        "to": statement.period_to.isoformat(),
        "opening_balance": format_amount(statement.opening_balance),
        "closing_balance": format_amount(statement.closing_balance),
        "credits_total": format_amount(statement.credits_total),
        "debits_total": format_amount(statement.debits_total),
        "count": str(statement.count),
    }


def statement_headers(statement: Statement) -> dict[str, str]:
    summary = statement_summary(statement)
    return {
        f"X-Statement-{name.replace('_', '-').title()}": value
        for name, value in summary.items()
        if name not in ("account_id", "currency", "from", "to")
    }


def _statement_table(statement: Statement) -> pa.Table:
    rows = [
        {**HISTORY.arrow_row(line.leg), "running_balance": line.running_balance}
        for line in statement.lines
    ]
    schema = STATEMENT_SCHEMA.with_metadata(statement_summary(statement))
    return pa.Table.from_pylist(rows, schema=schema)


def statement_arrow_stream(statement: Statement) -> bytes:
    table = _statement_table(statement)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def statement_parquet(statement: Statement) -> bytes:
    sink = io.BytesIO()
    pq.write_table(_statement_table(statement), sink)
    return sink.getvalue()


def _csv_value(value: object) -> object:
    """A CSV cell: empty for None, a string map as its JSON text."""
    if value is None:
        return ""
    return labels_text(value) if isinstance(value, dict) else value


def statement_csv(statement: Statement) -> bytes:
    """One row per leg (amounts and running balances as plain decimal strings)."""
    names = [*HISTORY_SCHEMA.names, "running_balance"]
    sink = io.StringIO()
    writer = csv.DictWriter(sink, fieldnames=names, lineterminator="\r\n")
    writer.writeheader()
    for line in statement.lines:
        row = HISTORY.text_row(line.leg)
        writer.writerow(
            {
                **{name: _csv_value(value) for name, value in row.items()},
                "running_balance": format_amount(line.running_balance),
            }
        )
    return sink.getvalue().encode()
