"""Kafka topic names (DESIGN.md section 7, from the sketch)."""

from typing import Final

TRANSACTIONS_SUBMITTED: Final = "banking.transactions.submitted"
TRANSACTIONS_COMPLETED: Final = "banking.transactions.completed"
TRANSACTIONS_FAILED: Final = "banking.transactions.failed"
ACCOUNT_BALANCES: Final = "banking.accounts.balances"
FRAUD_ALERTS: Final = "banking.fraud.alerts"
TRANSACTIONS_HELD: Final = "banking.transactions.held"
NOTIFICATIONS: Final = "banking.notifications"
# Staff actions that move no money (user created, account frozen, hold released, webhook
# created, signing key rotated), written through the outbox for the audit trail.
AUDIT_ACTIONS: Final = "banking.audit.actions"
# Holds: authorized, captured, voided, expired (``banking.ledger.holds``).
HOLDS: Final = "banking.holds"
TRANSACTIONS_DLQ: Final = "banking.transactions.dlq"
TRANSACTIONS_PERMANENT_DLQ: Final = "banking.transactions.permanent.dlq"
# The event schemas, keyed by schema id (compacted: the latest record per schema is kept).
SCHEMAS: Final = "banking.schemas"

ALL_TOPICS: Final = (
    TRANSACTIONS_SUBMITTED,
    TRANSACTIONS_COMPLETED,
    TRANSACTIONS_FAILED,
    ACCOUNT_BALANCES,
    FRAUD_ALERTS,
    TRANSACTIONS_HELD,
    NOTIFICATIONS,
    AUDIT_ACTIONS,
    HOLDS,
    TRANSACTIONS_DLQ,
    TRANSACTIONS_PERMANENT_DLQ,
    SCHEMAS,
)
