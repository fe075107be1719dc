"""The lookup of legs by reference across accounts

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

Issue 15, item 4: ``GET /api/v1/transactions?reference_id=...`` finds the legs with the
caller's own reference on any account, newest first. ``ix_transactions_reference_id`` serves
it; the time ordering of the lookup uses ``ix_transactions_created_at`` and statements and
balances at a point in time use ``ix_transactions_account_time`` (both from 0001).
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_transactions_reference_id", "transactions", ["reference_id"])


def downgrade() -> None:
    op.drop_index("ix_transactions_reference_id", table_name="transactions")
