"""What ``banking fraud train`` learns from: the ledger's finished legs, oldest first, and the
reviewers' decisions on held commands (rejected: fraud; released: not fraud)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import select

from banking.domain.records import ReviewDecision, Transaction, TransactionStatus
from banking.storage.database import Database
from banking.storage.ledger_store import transaction_of_row
from banking.storage.tables import fraud_scores, transactions


async def finished_legs(database: Database, *, since: datetime, limit: int) -> list[Transaction]:
    """Completed and failed legs created at or after ``since``, oldest first (at most
    ``limit``: the newest ones)."""
    query = (
        select(transactions)
        .where(
            transactions.c.created_at >= since,
            transactions.c.status != TransactionStatus.PENDING.value,
        )
        .order_by(transactions.c.created_at.desc(), transactions.c.transaction_id.desc())
        .limit(limit)
    )
    async with database.read() as connection:
        legs = [transaction_of_row(row) for row in await connection.execute(query)]
    legs.reverse()
    return legs


async def review_labels(database: Database) -> dict[UUID, bool]:
    """Each reviewed leg: True when a reviewer rejected it as fraud, False when released."""
    query = select(fraud_scores.c.transaction_id, fraud_scores.c.review_decision).where(
        fraud_scores.c.review_decision.is_not(None)
    )
    async with database.read() as connection:
        rows = (await connection.execute(query)).all()
    return {row[0]: row[1] == ReviewDecision.REJECTED.value for row in rows}
