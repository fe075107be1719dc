"""The group function returns the current balance after each leg, for the balance events

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02

Issue 15, item 1. Before holds, an account's current and available balances were equal, and a
movement's balance event took both from the available balance after its leg. With an open hold
they differ (the hold has taken from available only), so the event needs the current balance
too: ``banking_decide_movements`` (0004, 0007's limits, 0010's metadata) now returns it with the
available one, read in the same ``RETURNING`` of each balance update (``r_current_after``, and
``r_in_current_after`` for a transfer's destination). Its text is 0010's with those columns;
the result type changes, so the function is dropped first (PostgreSQL only; SQLite decides in
Python, whose store returns the current balance the same way).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# 0010's function -> this one: (before, after, how many times).
_CHANGES = (
    (
        "    r_in_version_after bigint\n)",
        "    r_in_version_after bigint,\n"
        "    r_current_after numeric,     -- the (source) account's current balance after it\n"
        "    r_in_current_after numeric   -- a completed transfer's destination's\n)",
        1,
    ),
    (
        "        r_in_version_after := NULL;\n",
        "        r_in_version_after := NULL;\n"
        "        r_current_after := NULL;\n"
        "        r_in_current_after := NULL;\n",
        1,
    ),
    # A debit's and a credit's update.
    (
        "RETURNING available_balance, version INTO r_available_after, r_version_after;",
        "RETURNING available_balance, version, current_balance\n"
        "                     INTO r_available_after, r_version_after, r_current_after;",
        2,
    ),
    # A transfer's two updates.
    (
        "RETURNING available_balance, version\n"
        "                         INTO r_available_after, r_version_after;",
        "RETURNING available_balance, version, current_balance\n"
        "                         INTO r_available_after, r_version_after, r_current_after;",
        1,
    ),
    (
        "RETURNING available_balance, version\n"
        "                         INTO r_in_available_after, r_in_version_after;",
        "RETURNING available_balance, version, current_balance\n"
        "                         INTO r_in_available_after, r_in_version_after,"
        " r_in_current_after;",
        1,
    ),
)


def _revision_0010() -> ModuleType:
    path = Path(__file__).with_name("0010_movement_metadata.py")
    spec = importlib.util.spec_from_file_location("banking_migration_0010", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def function_with_current_balances() -> str:
    """0010's ``banking_decide_movements`` that also returns the current balances after."""
    text: str = _revision_0010().function_with_metadata()
    for before, after, times in _CHANGES:
        if text.count(before) != times:
            raise RuntimeError(f"0010's function should hold {before!r} {times} times")
        text = text.replace(before, after)
    return text


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"DROP FUNCTION IF EXISTS {_revision_0010().SIGNATURE}")
    op.execute(function_with_current_balances())


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    migration_0010 = _revision_0010()
    op.execute(f"DROP FUNCTION IF EXISTS {migration_0010.SIGNATURE}")
    op.execute(migration_0010.function_with_metadata())
