"""The schema (DESIGN.md section 3) as SQLAlchemy Core tables. Alembic migrations mirror it."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    text,
)

from banking.storage.types import Money, UTCDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

users = Table(
    "users",
    metadata,
    Column("user_id", Uuid, primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("email", String(254), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("is_active", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_login", UTCDateTime, nullable=True),
    CheckConstraint("role IN ('customer', 'teller', 'auditor', 'admin')", name="role"),
)

accounts = Table(
    "accounts",
    metadata,
    Column("account_id", Uuid, primary_key=True),
    Column("account_number", String(20), nullable=False, unique=True),
    Column("customer_id", Uuid, ForeignKey("users.user_id"), nullable=False),
    Column("account_type", String(32), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("is_active", Boolean, nullable=False),
    Index("ix_accounts_customer_id", "customer_id"),
)

balances = Table(
    "balances",
    metadata,
    Column("balance_id", Uuid, primary_key=True),
    Column("account_id", Uuid, ForeignKey("accounts.account_id"), nullable=False, unique=True),
    Column("current_balance", Money, nullable=False),
    Column("available_balance", Money, nullable=False),
    Column("last_updated", UTCDateTime, nullable=False),
    Column("version", BigInteger, nullable=False),
    CheckConstraint("available_balance >= 0", name="available_not_negative"),
    CheckConstraint("current_balance >= 0", name="current_not_negative"),
)

# The idempotency key's unique index (its violation is how a duplicate is recognised).
REFERENCE_KEY = "uq_transactions_account_reference"
# How SQLite names the same violation (it reports columns, not the index).
REFERENCE_KEY_SQLITE_COLUMNS = "transactions.account_id, transactions.reference_id"

transactions = Table(
    "transactions",
    metadata,
    Column("transaction_id", Uuid, primary_key=True),
    Column("account_id", Uuid, ForeignKey("accounts.account_id"), nullable=False),
    Column("transaction_type", String(16), nullable=False),
    Column("amount", Money, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("description", String(500), nullable=True),
    Column("reference_id", String(255), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False),
    Column("related_transaction_id", Uuid, nullable=True),
    Column("counterparty_account_id", Uuid, nullable=True),
    Column("failure_code", String(64), nullable=True),
    Column("failure_reason", String(500), nullable=True),
    # The resulting balance and its version, so a replayed request answers exactly as the first.
    Column("available_balance_after", Money, nullable=True),
    Column("balance_version_after", BigInteger, nullable=True),
    Column("request_fingerprint", String(64), nullable=False),
    Column("created_by", Uuid, nullable=True),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint(
        "transaction_type IN ('debit', 'credit', 'transfer_out', 'transfer_in')", name="type"
    ),
    CheckConstraint("status IN ('pending', 'completed', 'failed')", name="status"),
    Index("ix_transactions_account_time", "account_id", "created_at"),
    Index("ix_transactions_created_at", "created_at"),
    # The idempotency key: one initiating leg per (account, reference). The receiving leg of a
    # transfer repeats the reference for readability and is left out of the uniqueness.
    Index(
        REFERENCE_KEY,
        "account_id",
        "reference_id",
        unique=True,
        sqlite_where=text("transaction_type <> 'transfer_in'"),
        postgresql_where=text("transaction_type <> 'transfer_in'"),
    ),
    Index(
        "ix_transactions_pending",
        "account_id",
        "created_at",
        sqlite_where=text("status = 'pending'"),
        postgresql_where=text("status = 'pending'"),
    ),
)

transaction_logs = Table(
    "transaction_logs",
    metadata,
    Column("log_id", Uuid, primary_key=True),
    Column("transaction_id", Uuid, ForeignKey("transactions.transaction_id"), nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(64), nullable=False),
    Index("ix_transaction_logs_transaction_id", "transaction_id"),
)

outbox = Table(
    "outbox",
    metadata,
    # A sequence, not a uuid: the relay publishes in this order. Rows of one account are
    # inserted while its balance row is locked, so their order is that account's commit order.
    Column(
        "outbox_id",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("event_id", Uuid, nullable=False, unique=True),
    Column("topic", String(128), nullable=False),
    Column("event_key", String(64), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("payload", Text, nullable=False),
    Column("trace_id", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("published_at", UTCDateTime, nullable=True),
    Index(
        "ix_outbox_unpublished",
        "outbox_id",
        sqlite_where=text("published_at IS NULL"),
        postgresql_where=text("published_at IS NULL"),
    ),
)
