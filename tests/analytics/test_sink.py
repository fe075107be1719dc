"""The sink on real wire messages (the relay's own encoding of real outbox rows, Arrow and
JSON) and real files: column types, row-group bound, restart without duplicates or loss, and
the DuckDB views."""

from __future__ import annotations

import json
import zlib
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from banking.analytics import query
from banking.analytics.dataset import ParquetDataset, parse_path
from banking.analytics.reconcile import reconcile_dataset
from banking.analytics.sink import AnalyticsSink
from banking.domain.roles import Role
from banking.events.relay import message_of
from banking.events.serialization import EventFormat
from banking.events.transport import Message
from banking.storage.tables import outbox
from banking.workers.runtime import CONSUMER_GROUPS
from tests.conftest import Bank

ANALYTICS_TOPICS = CONSUMER_GROUPS["analytics"][1]

MONEY = pa.decimal128(18, 2)
TIME = pa.timestamp("us", tz="UTC")


async def _workload(bank: Bank) -> None:
    """Credits, debits, a transfer and a decline, in two currencies."""
    _, staff = await bank.user(Role.TELLER)
    owner_id, owner = await bank.user(Role.CUSTOMER)
    usd = await bank.account(owner_id, staff, funded="100.10")
    usd2 = await bank.account(owner_id, staff, funded="5.00")
    eur = await bank.account(owner_id, staff, currency="EUR", funded="42.42")
    client = bank.client
    for body, path in (
        ({"account_id": usd, "amount": "0.01", "currency": "USD"}, "debit"),
        ({"account_id": eur, "amount": "2.40", "currency": "EUR"}, "debit"),
        ({"account_id": usd, "amount": "999.00", "currency": "USD"}, "debit"),  # declined
        (
            {
                "source_account_id": usd,
                "destination_account_id": usd2,
                "amount": "10.09",
                "currency": "USD",
            },
            "transfer",
        ),
    ):
        answer = await client.post(f"/api/v1/transactions/{path}", json=body, headers=owner)
        assert answer.status_code in (200, 422), answer.text


async def _messages(bank: Bank, event_format: EventFormat) -> list[Message]:
    """The outbox as the relay would publish it, on two partitions with Kafka-like offsets."""
    async with bank.container.database.read() as connection:
        rows = list(await connection.execute(select(outbox).order_by(outbox.c.outbox_id)))
    offsets: dict[tuple[str, int], int] = {}
    messages = []
    for row in rows:
        if row.topic not in ANALYTICS_TOPICS:
            continue  # what the worker's consumer group does not subscribe to
        wire = message_of(row, event_format)
        partition = zlib.crc32((wire.key or "").encode()) % 2
        offset = offsets.get((wire.topic, partition), 0)
        offsets[(wire.topic, partition)] = offset + 1
        messages.append(Message(wire.topic, wire.key, wire.value, wire.headers, partition, offset))
    return messages


def _sink(location: Path, *, rows: int = 10_000) -> AnalyticsSink:
    return AnalyticsSink(ParquetDataset(str(location), row_group_rows=rows), flush_seconds=10)


def _event_ids(location: Path) -> list[str]:
    result = query.run(
        str(location), "SELECT event_id FROM transactions UNION ALL SELECT event_id FROM balances"
    )
    return [row[0] for row in result.rows]


@pytest.mark.parametrize("event_format", [EventFormat.ARROW, EventFormat.JSON])
async def test_files_have_exact_types_and_bounded_row_groups(
    bank: Bank, tmp_path: Path, event_format: EventFormat
) -> None:
    await _workload(bank)
    messages = await _messages(bank, event_format)
    sink = _sink(tmp_path, rows=2)
    sink.load()
    for message in messages:
        sink.accept(message)
    flushed = sink.flush()
    assert flushed.rows == len(messages)

    dataset = ParquetDataset(str(tmp_path), row_group_rows=2)
    files = dataset.files()
    assert files and sum(pq.ParquetFile(f.path).metadata.num_rows for f in files) == len(messages)
    for data_file in files:
        parquet = pq.ParquetFile(data_file.path)
        assert all(
            parquet.metadata.row_group(i).num_rows <= 2 for i in range(parquet.num_row_groups)
        )
        schema = parquet.schema_arrow
        assert schema.field("event_time").type == TIME
        assert all(
            schema.field(name).type == MONEY
            for name in schema.names
            if name in ("amount", "current_balance", "available_balance")
        )
        assert not any(pa.types.is_floating(field.type) for field in schema)
        metadata = parquet.schema_arrow.metadata
        assert metadata[b"banking.analytics.last_offset"] == str(data_file.last_offset).encode()
        assert parse_path(data_file.path[len(dataset.root) + 1 :]) is not None

    amounts = query.run(
        str(tmp_path),
        "SELECT amount FROM transactions WHERE event_type = 'transaction.completed' "
        "ORDER BY amount",
    )
    assert [row[0] for row in amounts.rows] == sorted(
        Decimal(v) for v in ("100.10", "5.00", "42.42", "0.01", "2.40", "10.09", "10.09")
    )
    report = await reconcile_dataset(str(tmp_path), bank.container.database)
    assert report.clean, report.problems


async def test_a_restart_after_files_but_before_the_commit_stores_nothing_twice(
    bank: Bank, tmp_path: Path
) -> None:
    await _workload(bank)
    messages = await _messages(bank, EventFormat.ARROW)
    half = len(messages) // 2
    first = _sink(tmp_path)
    first.load()
    for message in messages[:half]:
        first.accept(message)
    first.flush()  # durable, and then "killed" before committing: everything is re-read

    restarted = _sink(tmp_path)
    restarted.load()
    accepted = [restarted.accept(message) for message in messages]
    assert accepted == [False] * half + [True] * (len(messages) - half)
    restarted.flush()
    ids = _event_ids(tmp_path)
    assert sorted(ids) == sorted(m.headers["ce_id"] for m in messages)


async def test_a_kill_before_the_flush_loses_nothing_and_a_half_file_is_never_read(
    bank: Bank, tmp_path: Path
) -> None:
    await _workload(bank)
    messages = await _messages(bank, EventFormat.ARROW)
    doomed = _sink(tmp_path)
    doomed.load()
    for message in messages:
        doomed.accept(message)  # buffered only: the process dies here
    leftover = tmp_path / "event_type=transaction.completed" / "date=2020-01-01"
    leftover.mkdir(parents=True)
    (leftover / ".part-x-0-0-9.parquet.tmp").write_bytes(b"PAR1 half a file")

    restarted = _sink(tmp_path)
    restarted.load()
    assert not (leftover / ".part-x-0-0-9.parquet.tmp").exists()
    assert all(restarted.accept(message) for message in messages)
    restarted.flush()
    assert sorted(_event_ids(tmp_path)) == sorted(m.headers["ce_id"] for m in messages)


async def test_an_event_the_relay_sent_twice_is_stored_once(bank: Bank, tmp_path: Path) -> None:
    await _workload(bank)
    messages = await _messages(bank, EventFormat.JSON)
    last = messages[-1]
    assert last.offset is not None
    again = Message(last.topic, last.key, last.value, last.headers, last.partition, last.offset + 5)
    sink = _sink(tmp_path)
    sink.load()
    for message in messages:
        sink.accept(message)
    sink.flush()
    restarted = _sink(tmp_path)
    restarted.load()
    assert restarted.accept(again) is False
    assert restarted.flush().rows == 0
    assert len(_event_ids(tmp_path)) == len(messages)


def test_unreadable_messages_are_skipped_and_still_committed(tmp_path: Path) -> None:
    sink = _sink(tmp_path)
    sink.load()
    poison = Message(
        "banking.transactions.completed",
        "k",
        b"\x00not json",
        {
            "ce_specversion": "1.0",
            "ce_id": "x",
            "ce_type": "transaction.completed",
            "content-type": "application/json",
        },
        0,
        7,
    )
    assert sink.accept(poison) is False
    flushed = sink.flush()
    assert flushed.rows == 0
    assert flushed.positions == {("banking.transactions.completed", 0): 8}
    assert list(tmp_path.iterdir()) == []


def test_queries_over_an_empty_dataset_answer_with_no_rows(tmp_path: Path) -> None:
    result = query.run(
        str(tmp_path), "SELECT count(*) AS n, sum(amount) AS total FROM transactions"
    )
    assert result.rows == [(0, None)]
    assert json.loads(query.render(result, "json")) == [{"n": 0, "total": None}]


def test_bad_sql_is_a_query_failure_with_duckdbs_reason(tmp_path: Path) -> None:
    with pytest.raises(query.QueryFailed, match=r"(?i)syntax|parser"):
        query.run(str(tmp_path), "SELEC amount FROM transactions")
    with pytest.raises(query.QueryFailed, match="no_such_column"):
        query.run(str(tmp_path), "SELECT no_such_column FROM transactions")


def test_decimals_print_exactly_in_every_format() -> None:
    result = query.Result(["currency", "total"], [("USD", Decimal("12345678901234.05"))])
    assert query.render(result, "csv") == "currency,total\nUSD,12345678901234.05"
    assert json.loads(query.render(result, "json")) == [
        {"currency": "USD", "total": "12345678901234.05"}
    ]
    table = query.render(result, "table").splitlines()
    assert table[0].split() == ["currency", "total"]
    assert table[2].split() == ["USD", "12345678901234.05"]
