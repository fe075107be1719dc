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
from sqlalchemy.dialects.postgresql import JSONB

from banking.storage.types import Money, UTCDateTime

# A string map (metadata): JSONB on PostgreSQL, so that it can be searched with an index.
Labels = JSON().with_variant(JSONB(), "postgresql")

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
    Column("metadata", Labels, nullable=False, server_default=text("'{}'")),
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
    # An account product: how far below zero both balances may go (DESIGN.md invariant 2, "no
    # balance goes below its limit"). On the balance row, so that the conditional debit reads
    # it in the row it locks and a limit change waits for that lock (migration 0007).
    Column("overdraft_limit", Money, nullable=False, server_default="0"),
    CheckConstraint("overdraft_limit >= 0", name="overdraft_limit_not_negative"),
    CheckConstraint("available_balance >= -overdraft_limit", name="available_within_limit"),
    CheckConstraint("current_balance >= -overdraft_limit", name="current_within_limit"),
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
    # Why a pending leg waits for a reviewer (the fraud detector held its command); None otherwise.
    Column("hold_reason", String(200), nullable=True),
    # The caller's labels; the leg a reversal reverses; the hold a capture captures (0008).
    Column("metadata", Labels, nullable=False, server_default=text("'{}'")),
    Column("reverses_transaction_id", Uuid, nullable=True),
    Column("hold_id", Uuid, nullable=True),
    # How much of an initiating leg its reversals took: never more than its amount (0011).
    Column("reversed_amount", Money, nullable=False, server_default=text("0")),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint(
        "reversed_amount >= 0 AND reversed_amount <= amount", name="reversed_within_amount"
    ),
    CheckConstraint(
        "transaction_type IN ('debit', 'credit', 'transfer_out', 'transfer_in')", name="type"
    ),
    CheckConstraint("status IN ('pending', 'completed', 'failed')", name="status"),
    Index("ix_transactions_account_time", "account_id", "created_at"),
    Index("ix_transactions_created_at", "created_at"),
    # The lookup across accounts by the caller's own reference (GET /api/v1/transactions).
    Index("ix_transactions_reference_id", "reference_id"),
    Index(
        "ix_transactions_reverses_transaction_id",
        "reverses_transaction_id",
        sqlite_where=text("reverses_transaction_id IS NOT NULL"),
        postgresql_where=text("reverses_transaction_id IS NOT NULL"),
    ),
    Index(
        "ix_transactions_hold_id",
        "hold_id",
        sqlite_where=text("hold_id IS NOT NULL"),
        postgresql_where=text("hold_id IS NOT NULL"),
    ),
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
    # The tamper-evident chain (banking.audit.chain, migration 0009): NULL until the sealer
    # chains the row after commit; the money path never writes them.
    Column("chain_seq", BigInteger, nullable=True),
    Column("chain_hash", String(64), nullable=True),
    Index("ix_transaction_logs_transaction_id", "transaction_id"),
    Index("uq_transaction_logs_chain_seq", "chain_seq", unique=True),
    Index(
        "ix_transaction_logs_unsealed",
        "created_at",
        "log_id",
        sqlite_where=text("chain_seq IS NULL"),
        postgresql_where=text("chain_seq IS NULL"),
    ),
)

# The chain's head (one row, id 1): the last sealed position and hash. Sealers lock it.
journal_chain_head = Table(
    "journal_chain_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("last_hash", String(64), nullable=False),
    Column("sealed_at", UTCDateTime, nullable=True),
    CheckConstraint("id = 1", name="one_row"),
)

# The idempotency key of an authorization (its violation is how a duplicate is recognised).
HOLD_REFERENCE_KEY = "uq_holds_account_reference"
HOLD_REFERENCE_KEY_SQLITE_COLUMNS = "holds.account_id, holds.reference_id"

# Authorizations (``banking.ledger.holds``, migration 0012): while a hold is open, its
# ``amount - captured_amount`` is missing from its account's available balance.
holds = Table(
    "holds",
    metadata,
    Column("hold_id", Uuid, primary_key=True),
    Column("account_id", Uuid, ForeignKey("accounts.account_id"), nullable=False),
    Column("destination_account_id", Uuid, ForeignKey("accounts.account_id"), nullable=True),
    Column("amount", Money, nullable=False),
    Column("captured_amount", Money, nullable=False, server_default="0"),
    Column("currency", String(3), nullable=False),
    Column("description", String(500), nullable=True),
    Column("reference_id", String(255), nullable=False),
    Column("request_fingerprint", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("closed_at", UTCDateTime, nullable=True),
    Column("created_by", Uuid, nullable=True),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint(
        "captured_amount >= 0 AND captured_amount <= amount", name="captured_within_amount"
    ),
    CheckConstraint("status IN ('open', 'captured', 'voided', 'expired')", name="status"),
    Index(HOLD_REFERENCE_KEY, "account_id", "reference_id", unique=True),
    Index("ix_holds_account_created", "account_id", "created_at"),
    # The expiry scan: open holds by expiry.
    Index(
        "ix_holds_open_expires_at",
        "expires_at",
        sqlite_where=text("status = 'open'"),
        postgresql_where=text("status = 'open'"),
    ),
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

# --- fraud detection (banking.fraud; DESIGN.md section 10) ------------------------------------

# One score per leg: written by the fraud worker after commit (or by the processor when it holds
# an asynchronous command), never twice (the primary key is how a redelivered event is skipped).
fraud_scores = Table(
    "fraud_scores",
    metadata,
    Column(
        "transaction_id",
        Uuid,
        ForeignKey("transactions.transaction_id"),
        primary_key=True,
    ),
    Column("account_id", Uuid, nullable=False),
    # The event that was scored (None when the processor scored a command before applying it).
    Column("event_id", Uuid, nullable=True),
    # The score in [0, 1] in ten-thousandths (exact: 0.9312 is 9312).
    Column("score_bp", Integer, nullable=False),
    Column("reasons", JSON, nullable=False),
    Column("features", JSON, nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("decision", String(8), nullable=False),
    Column("scored_at", UTCDateTime, nullable=False),
    # The reviewer's decision on a held command: the label `banking fraud train` learns from.
    Column("review_decision", String(16), nullable=True),
    Column("reviewed_by", Uuid, nullable=True),
    Column("reviewed_at", UTCDateTime, nullable=True),
    CheckConstraint("score_bp BETWEEN 0 AND 10000", name="score_range"),
    CheckConstraint("decision IN ('allow', 'alert', 'hold')", name="decision"),
    CheckConstraint(
        "review_decision IS NULL OR review_decision IN ('released', 'rejected')",
        name="review_decision",
    ),
    Index("ix_fraud_scores_account_id", "account_id", "scored_at"),
)

# --- notifications (banking.notifications; DESIGN.md section 10) ------------------------------

# Which consumer already handled which event (consumers dedupe by event id, DESIGN.md 7).
consumed_events = Table(
    "consumed_events",
    metadata,
    Column("consumer", String(64), primary_key=True),
    Column("event_id", Uuid, primary_key=True),
    Column("consumed_at", UTCDateTime, nullable=False),
)

webhooks = Table(
    "webhooks",
    metadata,
    Column("webhook_id", Uuid, primary_key=True),
    Column("owner_id", Uuid, ForeignKey("users.user_id"), nullable=False),
    Column("url", String(2048), nullable=False),
    Column("event_types", JSON, nullable=False),
    # The HMAC-SHA256 signing secret: shown once when the webhook is created, never again.
    Column("secret", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("consecutive_failures", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("disabled_at", UTCDateTime, nullable=True),
    Column("disabled_reason", String(500), nullable=True),
    CheckConstraint("status IN ('active', 'disabled')", name="status"),
    Index("ix_webhooks_owner_id", "owner_id"),
)

# One delivery per (webhook, event): retried until it succeeds or gives up.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("delivery_id", Uuid, primary_key=True),
    Column("webhook_id", Uuid, ForeignKey("webhooks.webhook_id"), nullable=False),
    Column("event_id", Uuid, nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", String(500), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
    CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name="status"),
    Index("uq_webhook_deliveries_webhook_event", "webhook_id", "event_id", unique=True),
    Index(
        "ix_webhook_deliveries_due",
        "next_attempt_at",
        sqlite_where=text("status = 'pending'"),
        postgresql_where=text("status = 'pending'"),
    ),
)

# Every attempt of a delivery, as the receiver answered it.
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("attempt_id", Uuid, primary_key=True),
    Column("delivery_id", Uuid, ForeignKey("webhook_deliveries.delivery_id"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", String(500), nullable=True),
    Column("succeeded", Boolean, nullable=False),
    Index("ix_webhook_attempts_delivery_id", "delivery_id"),
)

# --- the audit trail (banking.audit; docs/audit.md) -------------------------------------------

# Append-only (migration 0003 adds triggers that refuse UPDATE and DELETE): one row per event
# consumed, in the order recorded (``audit_id``, also the API's cursor). A dead-letter copy
# keeps its event id and gets its own row per attempt (``delivery``: the DLQ ``attempts``
# header, 0 on the other topics), so a redelivered message inserts nothing.
audit_records = Table(
    "audit_records",
    metadata,
    Column(
        "audit_id",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("event_id", Uuid, nullable=False),
    # Whether the event id was derived (the message had no ce_id, or one that is no UUID:
    # then uuid5 of what identifies it), and the ce_id header as it came.
    Column("event_id_derived", Boolean, nullable=False),
    Column("ce_id", String(255), nullable=True),
    Column("topic", String(128), nullable=False),
    Column("delivery", Integer, nullable=False),
    Column("event_type", String(64), nullable=True),
    Column("source", String(255), nullable=True),
    Column("specversion", String(16), nullable=True),
    Column("event_time", UTCDateTime, nullable=True),
    Column("subject", String(255), nullable=True),
    Column("dataschema", String(255), nullable=True),
    Column("content_type", String(128), nullable=True),
    Column("event_key", String(255), nullable=True),
    Column("kafka_partition", Integer, nullable=True),
    Column("kafka_offset", BigInteger, nullable=True),
    Column("account_id", Uuid, nullable=True),
    Column("actor_id", String(64), nullable=True),
    Column("actor_name", String(64), nullable=False),
    Column("trace_id", String(128), nullable=True),
    # The payload as JSON text, amounts as exact decimal strings; None when unreadable.
    Column("payload", Text, nullable=True),
    # Why the payload could not be read (the message is recorded all the same).
    Column("unreadable_reason", String(500), nullable=True),
    Column("recorded_at", UTCDateTime, nullable=False),
    Index("uq_audit_records_event", "event_id", "topic", "delivery", unique=True),
    Index("ix_audit_records_account", "account_id", "audit_id"),
    Index("ix_audit_records_actor", "actor_name", "audit_id"),
    Index("ix_audit_records_time", "event_time"),
)

# Idempotency-Key of account and user creation (banking.ledger.creation_keys): the unique key
# (scope, caller_id, key) decides between concurrent duplicates. Only non-secret parameters.
IDEMPOTENCY_KEY = "uq_idempotency_keys_scope_caller_key"
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("scope", String(32), nullable=False),
    Column("caller_id", Uuid, nullable=False),
    Column("idempotency_key", String(255), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("parameters", JSON, nullable=False),
    Column("resource_id", Uuid, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index(IDEMPOTENCY_KEY, "scope", "caller_id", "idempotency_key", unique=True),
    Index("ix_idempotency_keys_caller_created", "caller_id", "created_at"),
)
