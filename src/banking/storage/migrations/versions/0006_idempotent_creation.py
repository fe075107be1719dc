"""idempotency_keys: Idempotency-Key of account and user creation

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

Issue 15, item 6 (``banking.ledger.creation_keys``): one row per claimed key, written in the
transaction that creates the account or user; the unique index ``(scope, caller_id,
idempotency_key)`` lets exactly one of concurrent duplicates create. No password, no hash.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from banking.storage.types import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(32), nullable=False),
        sa.Column("caller_id", sa.Uuid, nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("parameters", sa.JSON, nullable=False),
        sa.Column("resource_id", sa.Uuid, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_index(
        "uq_idempotency_keys_scope_caller_key",
        "idempotency_keys",
        ["scope", "caller_id", "idempotency_key"],
        unique=True,
    )
    op.create_index(
        "ix_idempotency_keys_caller_created", "idempotency_keys", ["caller_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_caller_created", table_name="idempotency_keys")
    op.drop_index("uq_idempotency_keys_scope_caller_key", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
