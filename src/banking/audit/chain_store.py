"""The journal chain's SQL (SQLite and PostgreSQL): the head row, the unsealed rows, sealing
them, and the sealed rows in chain order (``banking.audit.chain`` decides what to write)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from banking.domain.errors import InvariantViolated
from banking.storage.tables import journal_chain_head, transaction_logs

HEAD_ID = 1
_JOURNAL_COLUMNS = (
    transaction_logs.c.log_id,
    transaction_logs.c.transaction_id,
    transaction_logs.c.event_type,
    transaction_logs.c.metadata,
    transaction_logs.c.created_at,
    transaction_logs.c.created_by,
    transaction_logs.c.chain_seq,
    transaction_logs.c.chain_hash,
)


@dataclass(frozen=True, slots=True)
class Head:
    """The chain's head row: the last sealed position and its hash."""

    last_seq: int
    last_hash: str
    sealed_at: datetime | None


@dataclass(frozen=True, slots=True)
class Sealed:
    """What the sealer writes for one row."""

    log_id: UUID
    chain_seq: int
    chain_hash: str


async def read_head(connection: AsyncConnection, *, lock: bool = False) -> Head:
    """The head row; with ``lock``, locked until the transaction ends (``FOR UPDATE`` on
    PostgreSQL; SQLite's write transactions hold the database's one write lock already)."""
    statement = select(journal_chain_head).where(journal_chain_head.c.id == HEAD_ID)
    if lock:
        statement = statement.with_for_update()
    row = (await connection.execute(statement)).one()
    return Head(int(row.last_seq), str(row.last_hash), row.sealed_at)


async def any_unsealed(connection: AsyncConnection) -> bool:
    """Whether some journal row waits for the sealer (one index probe)."""
    statement = select(transaction_logs.c.log_id).where(transaction_logs.c.chain_seq.is_(None))
    return (await connection.execute(statement.limit(1))).first() is not None


async def unsealed_rows(connection: AsyncConnection, *, limit: int) -> Sequence[Any]:
    """The oldest unsealed journal rows, by (created_at, log_id), at most ``limit``."""
    c = transaction_logs.c
    statement = (
        select(*_JOURNAL_COLUMNS)
        .where(c.chain_seq.is_(None))
        .order_by(c.created_at, c.log_id)
        .limit(limit)
    )
    return (await connection.execute(statement)).all()


async def seal(
    connection: AsyncConnection, rows: Sequence[Sealed], head: Head, sealed_at: datetime
) -> None:
    """Write each row's place and hash, and move the head to ``head``. Only unsealed rows
    are written; InvariantViolated (and the caller's rollback) if one was sealed already."""
    if connection.dialect.name == "postgresql":
        # One statement over three arrays: a round trip per batch, not per row.
        result = await connection.execute(
            _SEAL_FROM_ARRAYS,
            {
                "log_ids": [row.log_id for row in rows],
                "seqs": [row.chain_seq for row in rows],
                "hashes": [row.chain_hash for row in rows],
            },
        )
    else:
        c = transaction_logs.c
        statement = (
            update(transaction_logs)
            .where(c.log_id == bindparam("sealed_log_id"), c.chain_seq.is_(None))
            .values(chain_seq=bindparam("sealed_seq"), chain_hash=bindparam("sealed_hash"))
        )
        result = await connection.execute(
            statement,
            [
                {
                    "sealed_log_id": row.log_id,
                    "sealed_seq": row.chain_seq,
                    "sealed_hash": row.chain_hash,
                }
                for row in rows
            ],
        )
    if result.rowcount != len(rows):
        raise InvariantViolated(
            f"sealing {len(rows)} journal rows wrote {result.rowcount}: another sealer ran "
            "without the head's lock"
        )
    await connection.execute(
        update(journal_chain_head)
        .where(journal_chain_head.c.id == HEAD_ID)
        .values(last_seq=head.last_seq, last_hash=head.last_hash, sealed_at=sealed_at)
    )


_SEAL_FROM_ARRAYS = text(
    "UPDATE transaction_logs AS t SET chain_seq = v.seq, chain_hash = v.hash "
    "FROM unnest(CAST(:log_ids AS uuid[]), CAST(:seqs AS bigint[]), CAST(:hashes AS varchar[])) "
    "AS v(log_id, seq, hash) WHERE t.log_id = v.log_id AND t.chain_seq IS NULL"
)


async def sealed_page(
    connection: AsyncConnection, *, after_seq: int, through_seq: int, limit: int
) -> Sequence[Any]:
    """Sealed rows with ``after_seq < chain_seq <= through_seq``, in chain order."""
    c = transaction_logs.c
    statement = (
        select(*_JOURNAL_COLUMNS)
        .where(c.chain_seq > after_seq, c.chain_seq <= through_seq)
        .order_by(c.chain_seq)
        .limit(limit)
    )
    return (await connection.execute(statement)).all()


async def sealed_row(connection: AsyncConnection, seq: int) -> Any | None:
    """The sealed row at ``seq``, or None."""
    statement = select(*_JOURNAL_COLUMNS).where(transaction_logs.c.chain_seq == seq)
    return (await connection.execute(statement)).first()


async def row_past_head(connection: AsyncConnection) -> Any | None:
    """The first sealed row past the head's last position, or None (one statement, so one
    snapshot on PostgreSQL too: a batch sealed meanwhile moved the head with its rows)."""
    last_seq = (
        select(journal_chain_head.c.last_seq)
        .where(journal_chain_head.c.id == HEAD_ID)
        .scalar_subquery()
    )
    statement = (
        select(*_JOURNAL_COLUMNS)
        .where(transaction_logs.c.chain_seq > last_seq)
        .order_by(transaction_logs.c.chain_seq)
        .limit(1)
    )
    return (await connection.execute(statement)).first()


async def unsealed_before(
    connection: AsyncConnection, before: datetime
) -> tuple[int, datetime | None]:
    """How many unsealed rows were created before ``before``, and the oldest one's time."""
    c = transaction_logs.c
    statement = select(func.count(), func.min(c.created_at)).where(
        c.chain_seq.is_(None), c.created_at < before
    )
    count, oldest = (await connection.execute(statement)).one()
    return int(count), oldest
