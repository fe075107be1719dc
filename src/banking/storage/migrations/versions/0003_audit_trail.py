"""the audit trail: audit_records, append-only

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

Issue 16: the audit consumer writes one row per event it consumes (docs/audit.md). The table
is append-only: triggers refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL) for every role
the triggers apply to. A database superuser can still disable them (``ALTER TABLE ... DISABLE
TRIGGER``, ``session_replication_role = replica``, or dropping them on SQLite): they stop
mistakes and ordinary roles, not the owner of the database (``banking audit gaps`` then names
what is missing).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from banking.storage.types import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

REFUSED = "audit_records is append-only"

_PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION audit_records_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '{REFUSED}: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$ LANGUAGE plpgsql
"""
_PG_TRIGGERS = (
    "CREATE TRIGGER audit_records_no_update BEFORE UPDATE OR DELETE ON audit_records "
    "FOR EACH ROW EXECUTE FUNCTION audit_records_refuse_change()",
    "CREATE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON audit_records "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_records_refuse_change()",
)
_SQLITE_TRIGGERS = tuple(
    f"CREATE TRIGGER audit_records_no_{operation.lower()} BEFORE {operation} ON audit_records "
    f"BEGIN SELECT RAISE(ABORT, '{REFUSED}: {operation} refused'); END"
    for operation in ("UPDATE", "DELETE")
)


def upgrade() -> None:
    op.create_table(
        "audit_records",
        sa.Column(
            "audit_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("event_id_derived", sa.Boolean(), nullable=False),
        sa.Column("ce_id", sa.String(length=255), nullable=True),
        sa.Column("topic", sa.String(length=128), nullable=False),
        sa.Column("delivery", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=True),
        sa.Column("source", sa.String(length=255), nullable=True),
        sa.Column("specversion", sa.String(length=16), nullable=True),
        sa.Column("event_time", UTCDateTime(), nullable=True),
        sa.Column("subject", sa.String(length=255), nullable=True),
        sa.Column("dataschema", sa.String(length=255), nullable=True),
        sa.Column("content_type", sa.String(length=128), nullable=True),
        sa.Column("event_key", sa.String(length=255), nullable=True),
        sa.Column("kafka_partition", sa.Integer(), nullable=True),
        sa.Column("kafka_offset", sa.BigInteger(), nullable=True),
        sa.Column("account_id", sa.Uuid(), nullable=True),
        sa.Column("actor_id", sa.String(length=64), nullable=True),
        sa.Column("actor_name", sa.String(length=64), nullable=False),
        sa.Column("trace_id", sa.String(length=128), nullable=True),
        sa.Column("payload", sa.Text(), nullable=True),
        sa.Column("unreadable_reason", sa.String(length=500), nullable=True),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("audit_id", name=op.f("pk_audit_records")),
    )
    with op.batch_alter_table("audit_records", schema=None) as batch_op:
        batch_op.create_index(
            "uq_audit_records_event", ["event_id", "topic", "delivery"], unique=True
        )
        batch_op.create_index("ix_audit_records_account", ["account_id", "audit_id"], unique=False)
        batch_op.create_index("ix_audit_records_actor", ["actor_name", "audit_id"], unique=False)
        batch_op.create_index("ix_audit_records_time", ["event_time"], unique=False)

    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        for statement in _PG_TRIGGERS:
            op.execute(statement)
    else:
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    # Dropping the table drops its triggers (DROP is not refused: it is a schema change).
    op.drop_table("audit_records")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS audit_records_refuse_change()")
