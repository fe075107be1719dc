"""Overdraft limits: how far below zero an account's balances may go

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

Issue 15, item 8. ``balances.overdraft_limit`` (default 0, never negative) is an account
product that staff set; DESIGN.md invariant 2 becomes "no balance goes below its limit":
``available_balance >= -overdraft_limit`` and ``current_balance >= -overdraft_limit``, checked
by the database as the zero floors were.

The limit lives on the balance row, not on the account: the conditional debit reads it in the
row it updates (and locks), and a limit change updates that same row, so a debit and a change
of the limit are serialized by the row lock and a debit never uses a limit that was lowered
before it committed.

``banking_decide_movements`` (migration 0004) is replaced with the same function but for the
two checks of available money, which now count the limit; its text is 0004's with those two
changes, so that the two versions cannot drift apart elsewhere.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations

from banking.storage.types import Money

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# The two checks of available money in 0004's function: (before, after).
_DEBIT_CHECK = (
    "WHERE account_id = v_account AND available_balance >= v_amount",
    "WHERE account_id = v_account AND available_balance + overdraft_limit >= v_amount",
)
_TRANSFER_CHECK = (
    "SELECT available_balance INTO v_available",
    "SELECT available_balance + overdraft_limit INTO v_available",
)


def _revision_0004() -> ModuleType:
    path = Path(__file__).with_name("0004_pg_decide_movements.py")
    spec = importlib.util.spec_from_file_location("banking_migration_0004", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def function_with_limits() -> str:
    """0004's ``banking_decide_movements`` with the limit in both checks of available money."""
    text: str = _revision_0004()._FUNCTION
    for before, after in (_DEBIT_CHECK, _TRANSFER_CHECK):
        if text.count(before) != 1:
            raise RuntimeError(f"0004's function should hold {before!r} exactly once")
        text = text.replace(before, after)
    return text


def upgrade() -> None:
    with op.batch_alter_table("balances") as batch:
        batch.add_column(sa.Column("overdraft_limit", Money(), nullable=False, server_default="0"))
    with op.batch_alter_table("balances") as batch:
        _replace_checks(batch, _ZERO_FLOORS, _LIMIT_FLOORS)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(function_with_limits())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_revision_0004()._FUNCTION)
    with op.batch_alter_table("balances") as batch:
        _replace_checks(batch, _LIMIT_FLOORS, _ZERO_FLOORS)
    with op.batch_alter_table("balances") as batch:
        batch.drop_column("overdraft_limit")


# The balances' checks before and after: (name, condition).
_ZERO_FLOORS = (
    ("ck_balances_available_not_negative", "available_balance >= 0"),
    ("ck_balances_current_not_negative", "current_balance >= 0"),
)
_LIMIT_FLOORS = (
    ("ck_balances_overdraft_limit_not_negative", "overdraft_limit >= 0"),
    ("ck_balances_available_within_limit", "available_balance >= -overdraft_limit"),
    ("ck_balances_current_within_limit", "current_balance >= -overdraft_limit"),
)


def _replace_checks(
    batch: BatchOperations,
    dropped: tuple[tuple[str, str], ...],
    created: tuple[tuple[str, str], ...],
) -> None:
    for name, _condition in dropped:
        batch.drop_constraint(op.f(name), type_="check")
    for name, condition in created:
        batch.create_check_constraint(op.f(name), condition)
