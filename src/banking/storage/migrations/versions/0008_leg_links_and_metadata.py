"""Leg fields for metadata, reversals and holds

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

Issue 15, items 1-3: a leg carries the caller's labels (``metadata``, a string map; JSONB on
PostgreSQL so that 0009 can index it), the leg it reverses (``reverses_transaction_id``) and
the hold it captures (``hold_id``); an account carries labels too. Existing rows get an empty
map and no links. The PL/pgSQL group function (0004, 0007) does not name these columns: its
legs take the defaults.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_LABELS = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(
            sa.Column("metadata", _LABELS, nullable=False, server_default=sa.text("'{}'"))
        )
    with op.batch_alter_table("transactions") as batch:
        batch.add_column(
            sa.Column("metadata", _LABELS, nullable=False, server_default=sa.text("'{}'"))
        )
        batch.add_column(sa.Column("reverses_transaction_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("hold_id", sa.Uuid(), nullable=True))
    op.create_index(
        "ix_transactions_reverses_transaction_id",
        "transactions",
        ["reverses_transaction_id"],
        sqlite_where=sa.text("reverses_transaction_id IS NOT NULL"),
        postgresql_where=sa.text("reverses_transaction_id IS NOT NULL"),
    )
    op.create_index(
        "ix_transactions_hold_id",
        "transactions",
        ["hold_id"],
        sqlite_where=sa.text("hold_id IS NOT NULL"),
        postgresql_where=sa.text("hold_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_transactions_hold_id", table_name="transactions")
    op.drop_index("ix_transactions_reverses_transaction_id", table_name="transactions")
    with op.batch_alter_table("transactions") as batch:
        batch.drop_column("hold_id")
        batch.drop_column("reverses_transaction_id")
        batch.drop_column("metadata")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("metadata")
