"""The tamper-evident journal: transaction_logs rows hash-chained after commit

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

Issue 15, item 7 (docs/audit.md, "Tamper-evident journal"). Every ``transaction_logs`` row
gets a place in one chain (``chain_seq``, unique) and a hash over the previous row's hash and
its own canonical content (``chain_hash``, hex sha256). Both are NULL when the row is written:
the money path (the Python decisions and ``banking_decide_movements``) is unchanged, and the
sealer (``banking.audit.chain``, run by the outbox relay) fills them in batches after commit.

``journal_chain_head`` is one row (id 1): the last sealed position and hash. A sealer locks it
for its batch, so only sealers wait for each other, never a money movement.

Existing rows are left unsealed: the first sealer pass chains them (oldest first).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from banking.storage.types import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

GENESIS_HASH = "0" * 64
_UNSEALED = sa.text("chain_seq IS NULL")


def upgrade() -> None:
    # Added columns and indexes only (no table rebuild on SQLite: ALTER TABLE ADD COLUMN).
    op.add_column("transaction_logs", sa.Column("chain_seq", sa.BigInteger(), nullable=True))
    op.add_column("transaction_logs", sa.Column("chain_hash", sa.String(length=64), nullable=True))
    op.create_index("uq_transaction_logs_chain_seq", "transaction_logs", ["chain_seq"], unique=True)
    op.create_index(
        "ix_transaction_logs_unsealed",
        "transaction_logs",
        ["created_at", "log_id"],
        sqlite_where=_UNSEALED,
        postgresql_where=_UNSEALED,
    )
    head = op.create_table(
        "journal_chain_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.Column("sealed_at", UTCDateTime(), nullable=True),
        sa.CheckConstraint("id = 1", name=op.f("ck_journal_chain_head_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journal_chain_head")),
    )
    op.bulk_insert(head, [{"id": 1, "last_seq": 0, "last_hash": GENESIS_HASH, "sealed_at": None}])


def downgrade() -> None:
    op.drop_table("journal_chain_head")
    op.drop_index("ix_transaction_logs_unsealed", table_name="transaction_logs")
    op.drop_index("uq_transaction_logs_chain_seq", table_name="transaction_logs")
    with op.batch_alter_table("transaction_logs") as batch:
        batch.drop_column("chain_hash")
        batch.drop_column("chain_seq")
