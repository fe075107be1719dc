"""Reversals: how much of a movement its reversals took

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02

Issue 15, item 2. ``transactions.reversed_amount`` (default 0) on a movement's initiating leg
is the cap of its reversals: a reversal's unit of work raises it with a conditional update
(``reversed_amount + x <= amount``), and the database checks ``0 <= reversed_amount <=
amount`` as well, so the reversals of a movement never exceed it in total.

On SQLite the column is added with its CHECK by ``ALTER TABLE ADD COLUMN`` (a column check may
name another column there), not by a batch copy of the table; on PostgreSQL the check is added
as a table constraint. The PL/pgSQL group function does not name the column: its legs take
the default.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from banking.storage.types import Money

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_CHECK_NAME = "ck_transactions_reversed_within_amount"
_CHECK = "reversed_amount >= 0 AND reversed_amount <= amount"


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    checks = [] if postgresql else [sa.CheckConstraint(_CHECK, name=op.f(_CHECK_NAME))]
    op.add_column(
        "transactions",
        sa.Column("reversed_amount", Money(), *checks, nullable=False, server_default=sa.text("0")),
    )
    if postgresql:
        op.create_check_constraint(op.f(_CHECK_NAME), "transactions", _CHECK)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(op.f(_CHECK_NAME), "transactions", type_="check")
    op.drop_column("transactions", "reversed_amount")
