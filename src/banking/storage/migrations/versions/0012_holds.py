"""holds: authorize, then capture or void

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02

Issue 15, item 1 (``banking.ledger.holds``). One row per hold: the amount taken from the
account's available balance, how much of it was captured (never more than the amount: a
CHECK), its state (open, captured, voided, expired) and expiry. ``(account_id, reference_id)``
is unique: the authorization's idempotency key. The expiry scan reads open holds by
``expires_at`` through a partial index. Capture legs point at their hold through
``transactions.hold_id`` (migration 0008).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from banking.storage.types import Money, UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "holds",
        sa.Column("hold_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("destination_account_id", sa.Uuid(), nullable=True),
        sa.Column("amount", Money(), nullable=False),
        sa.Column("captured_amount", Money(), nullable=False, server_default="0"),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("reference_id", sa.String(length=255), nullable=False),
        sa.Column("request_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("closed_at", UTCDateTime(), nullable=True),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.CheckConstraint("amount > 0", name=op.f("ck_holds_amount_positive")),
        sa.CheckConstraint(
            "captured_amount >= 0 AND captured_amount <= amount",
            name=op.f("ck_holds_captured_within_amount"),
        ),
        sa.CheckConstraint(
            "status IN ('open', 'captured', 'voided', 'expired')", name=op.f("ck_holds_status")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.account_id"], name=op.f("fk_holds_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["destination_account_id"],
            ["accounts.account_id"],
            name=op.f("fk_holds_destination_account_id_accounts"),
        ),
        sa.PrimaryKeyConstraint("hold_id", name=op.f("pk_holds")),
    )
    with op.batch_alter_table("holds", schema=None) as batch_op:
        batch_op.create_index(
            "uq_holds_account_reference", ["account_id", "reference_id"], unique=True
        )
        batch_op.create_index("ix_holds_account_created", ["account_id", "created_at"])
        batch_op.create_index(
            "ix_holds_open_expires_at",
            ["expires_at"],
            sqlite_where=sa.text("status = 'open'"),
            postgresql_where=sa.text("status = 'open'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("holds", schema=None) as batch_op:
        batch_op.drop_index("ix_holds_open_expires_at")
        batch_op.drop_index("ix_holds_account_created")
        batch_op.drop_index("uq_holds_account_reference")
    op.drop_table("holds")
