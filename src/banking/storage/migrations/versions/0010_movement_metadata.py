"""Movement metadata: the group function stores it, and the lookup searches it with an index

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02

Issue 15, item 3. The legs' ``metadata`` column came with 0008 (JSONB on PostgreSQL, an empty
map by default). Two things remain, both on PostgreSQL only:

1. ``banking_decide_movements`` (0004, with 0007's limits) takes one argument more, the
   movements' metadata as JSON text (``p_metadata text[]``), and stores it on the legs it
   inserts (both legs of a transfer). Its text is 0007's with that argument and those two
   columns, so that the versions cannot drift apart elsewhere. The signature changes, so the
   18-argument function is dropped first (CREATE OR REPLACE would add an overload).
2. A GIN index on ``transactions.metadata`` (``jsonb_path_ops``: only containment, ``@>``, the
   one operator the lookup ``GET /api/v1/transactions?metadata[k]=v`` uses).

SQLite stores the metadata through the ledger's own decisions and searches it with
``json_extract`` without an index: the embedded shape's books are small, and SQLite cannot
index every key of a JSON map.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

METADATA_INDEX = "ix_transactions_metadata"
SIGNATURE = (
    "banking_decide_movements(text[], uuid[], uuid[], numeric[], uuid[], uuid[], uuid[], "
    "uuid[], text[], text[], uuid[], text[], text[], text[], text[], text[], text[], "
    "timestamptz[], text[])"
)

# 0007's function -> this one: (before, after, how many times).
_CHANGES = (
    # The last parameter gets a comma, and the metadata comes after it.
    (
        "    p_created_at timestamptz[]   -- the legs' and journal's time, the balances' "
        "last_updated\n",
        "    p_created_at timestamptz[],  -- the legs' and journal's time, the balances' "
        "last_updated\n"
        "    p_metadata text[]            -- the legs' metadata, a JSON object of strings\n",
        1,
    ),
    # Both INSERTs of a leg (the initiating one, a transfer's receiving one).
    ("created_by, hold_reason\n", "created_by, hold_reason, metadata\n", 2),
    (
        "p_fingerprints[i], p_created_by[i], NULL\n",
        "p_fingerprints[i], p_created_by[i], NULL,\n"
        "            coalesce(p_metadata[i]::jsonb, '{}'::jsonb)\n",
        2,
    ),
)


def _revision(name: str, module: str) -> ModuleType:
    path = Path(__file__).with_name(name)
    spec = importlib.util.spec_from_file_location(module, path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def _revision_0004() -> ModuleType:
    return _revision("0004_pg_decide_movements.py", "banking_migration_0004")


def _function_0007() -> str:
    text: str = _revision(
        "0007_overdraft_limits.py", "banking_migration_0007"
    ).function_with_limits()
    return text


def function_with_metadata() -> str:
    """0007's ``banking_decide_movements`` with the metadata argument and columns."""
    text = _function_0007()
    for before, after, times in _CHANGES:
        if text.count(before) != times:
            raise RuntimeError(f"0007's function should hold {before!r} {times} times")
        text = text.replace(before, after)
    return text


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP FUNCTION IF EXISTS {_revision_0004().SIGNATURE}")
    op.execute(function_with_metadata())
    op.create_index(
        METADATA_INDEX,
        "transactions",
        ["metadata"],
        postgresql_using="gin",
        postgresql_ops={"metadata": "jsonb_path_ops"},
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index(METADATA_INDEX, table_name="transactions")
    op.execute(f"DROP FUNCTION IF EXISTS {SIGNATURE}")
    op.execute(_function_0007())
