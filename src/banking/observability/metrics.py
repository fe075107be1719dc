"""Prometheus metrics. Labels are bounded: never an account id or user id."""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import event

import banking
from banking.domain.money import CURRENCY_MINOR_DIGITS
from banking.storage.database import Database

ERROR_CODES = (
    "VALIDATION_ERROR", "PAYLOAD_TOO_LARGE", "INSUFFICIENT_FUNDS", "CURRENCY_MISMATCH",
    "ACCOUNT_NOT_FOUND", "TRANSACTION_NOT_FOUND", "USER_NOT_FOUND", "NOT_FOUND",
    "ACCOUNT_INACTIVE", "ACCOUNT_BUSY", "IDEMPOTENCY_CONFLICT", "USER_ALREADY_EXISTS",
    "FRAUD_REJECTED", "TRANSACTION_NOT_HELD", "TRANSACTION_NOT_REVERSIBLE",
    "METHOD_NOT_ALLOWED", "NOT_ACCEPTABLE",
    "UNAUTHENTICATED", "FORBIDDEN", "RATE_LIMITED", "SERVICE_UNAVAILABLE", "INTERNAL_ERROR",
)  # fmt: skip
_STATEMENT_KINDS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "BEGIN", "COMMIT"})
EVENT_LAG_BUCKETS_SECONDS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip
GROUP_ITEMS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000)
LATENCY_BUCKETS_SECONDS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
FRAUD_SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
FRAUD_SCORING_BUCKETS_SECONDS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
)  # fmt: skip
# The pattern label of fraud alerts and holds: an assessment's main reason. Must follow
# banking.fraud's REASONS (plus "model", the pattern of an assessment without reasons); any
# other value is counted as "other" so that a new reason cannot grow the label set unbounded.
FRAUD_PATTERNS = (
    "velocity_1m", "amount_vs_mean", "new_counterparty", "night_time", "structuring",
    "card_testing", "fan_in", "fan_out", "declines_1h", "model_anomaly", "model",
)  # fmt: skip
FRAUD_REVIEW_DECISIONS = ("released", "rejected")
# What notifications are about (the source event types, banking.events.outbox) and the notice
# that a webhook was disabled.
NOTIFICATION_EVENT_TYPES = (
    "transaction.completed", "transaction.failed", "transaction.rejected", "transaction.held",
    "fraud.alert", "webhook.disabled",
)  # fmt: skip
# What the analytics sink stores (banking.analytics.rows.EVENT_TYPES) and why it skips one.
ANALYTICS_EVENT_TYPES = (
    "transaction.completed", "transaction.failed", "transaction.rejected", "balance.updated",
    "fraud.alert", "transaction.held",
)  # fmt: skip
ANALYTICS_SKIP_REASONS = ("already_written", "duplicate_event", "unreadable")
WEBHOOK_DELIVERY_RESULTS = ("succeeded", "retrying", "failed", "refused")
OTHER_LABEL = "other"


class Metrics:
    """Every metric the service exports, on one registry (one per process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "banking_http_requests_total",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "banking_http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=r,
        )
        self.http_in_flight = Gauge(
            "banking_http_requests_in_flight", "HTTP requests being served.", registry=r
        )
        self.movements = Counter(
            "banking_money_movements_total",
            "Debits, credits and transfers by type and outcome (completed or failed).",
            ["type", "status"],
            registry=r,
        )
        self.movement_amount = Counter(
            "banking_money_movement_amount_minor_units_total",
            "Sum of completed movement amounts by type and currency, in the currency's minor "
            "units (10^minor digits per unit: cents for USD, yen for JPY; integers, exact up to "
            "2^53). Divide by banking_currency_minor_units_per_unit for major units.",
            ["type", "currency"],
            registry=r,
        )
        self.currency_minor_units = Gauge(
            "banking_currency_minor_units_per_unit",
            "Minor units in one unit of a currency (10^ISO 4217 minor digits: 100 for USD, 1 "
            "for JPY), for each currency money moved in.",
            ["currency"],
            registry=r,
        )
        self.build_info = Gauge(
            "banking_build_info",
            "Always 1; the labels say which build of the service runs (version) on which "
            "Python (python_version, python_implementation).",
            ["version", "python_version", "python_implementation"],
            registry=r,
        )
        self.build_info.labels(
            banking.__version__, platform.python_version(), platform.python_implementation()
        ).set(1)
        self.declines = Counter(
            "banking_money_movement_declines_total",
            "Declined movements by reason code.",
            ["type", "reason"],
            registry=r,
        )
        self.replays = Counter(
            "banking_idempotent_replays_total",
            "Requests answered from an earlier request with the same idempotency key.",
            ["type"],
            registry=r,
        )
        self.errors = Counter(
            "banking_errors_total",
            "Errors returned to callers, by stable error code.",
            ["code"],
            registry=r,
        )
        self.invariant_violations = Counter(
            "banking_invariant_violations_total",
            "Broken invariants detected (should stay at zero).",
            registry=r,
        )
        self.db_retries = Counter(
            "banking_db_transaction_retries_total",
            "Database transactions retried after a deadlock or serialization failure.",
            registry=r,
        )
        # Read replicas (storage/replicas.py): counted only when DATABASE_REPLICA_URLS is set.
        self.db_reads = Counter(
            "banking_db_reads_total",
            "Reads that may be slightly behind (history, lookups, balances), by where they were "
            "served: replica, or primary (sticky window, no replica within the lag bound, a "
            "replica failure or not-found retried there).",
            ["target"],
            registry=r,
        )
        self.db_replica_lag = Gauge(
            "banking_db_replica_lag_seconds",
            "A read replica's replay lag at its last check (+Inf: down, or replay paused behind "
            "the primary).",
            ["replica"],
            registry=r,
        )
        self.db_replica_healthy = Gauge(
            "banking_db_replica_healthy",
            "1 while a read replica may serve reads (lag under REPLICA_LAG_MAX_SECONDS), else 0.",
            ["replica"],
            registry=r,
        )
        # Redis (balance cache, rate limits, account locks): never on the money path.
        self.cache_requests = Counter(
            "banking_cache_requests_total",
            "Cache lookups by cache and result (hit, miss, error: Redis unavailable, bypassed).",
            ["cache", "result"],
            registry=r,
        )
        self.rate_limit_rejections = Counter(
            "banking_rate_limit_rejections_total",
            "Requests refused with RATE_LIMITED, by limit scope (default, token).",
            ["scope"],
            registry=r,
        )
        self.rate_limit_fail_open = Counter(
            "banking_rate_limit_fail_open_total",
            "Requests let through unchecked because Redis was unavailable, by limit scope.",
            ["scope"],
            registry=r,
        )
        self.account_lock_wait = Histogram(
            "banking_account_lock_wait_seconds",
            "Time spent acquiring the optional per-account locks (ACCOUNT_LOCKS).",
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=r,
        )
        self.group_commit_items = Histogram(
            "banking_group_commit_items",
            "Movements decided in one transaction by group commit (GROUP_COMMIT), per group.",
            buckets=GROUP_ITEMS_BUCKETS,
            registry=r,
        )
        self.redis_errors = Counter(
            "banking_redis_errors_total",
            "Redis operations that failed or timed out, by operation.",
            ["operation"],
            registry=r,
        )
        self.redis_up = Gauge(
            "banking_redis_up",
            "1 while Redis answers (or is not configured), 0 while it is being bypassed.",
            registry=r,
        )
        self.redis_up.set(1)
        self.grpc_requests = Counter(
            "banking_grpc_requests_total",
            "gRPC calls answered, by full method name and status code.",
            ["method", "code"],
            registry=r,
        )
        self.grpc_latency = Histogram(
            "banking_grpc_request_duration_seconds",
            "gRPC call latency by full method name (a stream counts until it ends).",
            ["method"],
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=r,
        )

        self.outbox_published = Counter(
            "banking_outbox_published_total",
            "Outbox events published by the relay.",
            registry=r,
        )
        self.relay_errors = Counter(
            "banking_relay_errors_total",
            "Relay batches that failed (broker or database unavailable) and will be retried.",
            registry=r,
        )
        self.dead_letters = Counter(
            "banking_dead_letters_total",
            "Messages sent to a dead-letter topic (retry DLQ or permanent DLQ).",
            ["topic"],
            registry=r,
        )
        self.commands_refused = Counter(
            "banking_commands_refused_total",
            "Commands refused unapplied for want of a valid signature (events.signing), by "
            "reason: missing, unknown_key, bad_signature. Each went to the permanent DLQ.",
            ["reason"],
            registry=r,
        )
        self.outbox_backlog = Gauge(
            "banking_outbox_backlog_events",
            "Outbox events not yet published, as last counted by the relay.",
            registry=r,
        )
        self.outbox_oldest_age = Gauge(
            "banking_outbox_oldest_unpublished_age_seconds",
            "Age of the oldest unpublished outbox event (0 when none), as last seen by the relay.",
            registry=r,
        )
        self.events_consumed = Counter(
            "banking_events_consumed_total",
            "Events handled by a consumer, by consumer group and topic.",
            ["group", "topic"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "banking_consumer_lag_messages",
            "Messages between a consumer group's position and the end of the topic.",
            ["group", "topic"],
            registry=r,
        )
        self.event_lag = Histogram(
            "banking_event_lag_seconds",
            "Time from an event's commit (outbox write) to its handling, by consumer group.",
            ["group"],
            buckets=EVENT_LAG_BUCKETS_SECONDS,
            registry=r,
        )
        self.db_query_latency = Histogram(
            "banking_db_query_duration_seconds",
            "Database statement latency by statement kind (SELECT, INSERT, UPDATE, ...).",
            ["statement"],
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=r,
        )

        self.fraud_scores = Histogram(
            "banking_fraud_scores",
            "Fraud scores given to movements (0 = normal, 1 = certainly fraud).",
            buckets=FRAUD_SCORE_BUCKETS,
            registry=r,
        )
        self.fraud_scoring_latency = Histogram(
            "banking_fraud_scoring_seconds",
            "Time to score one movement (features, rules and model).",
            buckets=FRAUD_SCORING_BUCKETS_SECONDS,
            registry=r,
        )
        self.holds_expired = Counter(
            "banking_holds_expired_total",
            "Holds released by the expiry worker because their expires_at passed.",
            registry=r,
        )
        self.fraud_alerts = Counter(
            "banking_fraud_alerts_total",
            "Fraud alerts raised (score at or above FRAUD_ALERT_THRESHOLD), by main pattern.",
            ["pattern"],
            registry=r,
        )
        self.fraud_holds = Counter(
            "banking_fraud_holds_total",
            "Asynchronous commands held for review (score at or above FRAUD_HOLD_THRESHOLD), "
            "by main pattern.",
            ["pattern"],
            registry=r,
        )
        self.fraud_reviews = Counter(
            "banking_fraud_reviews_total",
            "Held commands decided by staff, by decision (released, rejected).",
            ["decision"],
            registry=r,
        )
        self.fraud_model_info = Gauge(
            "banking_fraud_model_info",
            "Always 1; the label says which fraud model version scores (one series per process "
            "that scores).",
            ["version"],
            registry=r,
        )
        self._fraud_model_version: str | None = None
        self.fraud_review_queue_size = Gauge(
            "banking_fraud_review_queue",
            "Held commands waiting for a reviewer's decision, as last counted.",
            registry=r,
        )
        self.notifications = Counter(
            "banking_notifications_total",
            "Notifications published on banking.notifications, by the event type they are about.",
            ["event_type"],
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "banking_webhook_deliveries_total",
            "Webhook delivery attempts by result: succeeded, retrying (failed, will be retried), "
            "failed (retries exhausted), refused (target not allowed: SSRF check).",
            ["result"],
            registry=r,
        )
        self.webhook_delivery_latency = Histogram(
            "banking_webhook_delivery_seconds",
            "Time from the event's commit to its successful delivery at the receiver.",
            buckets=EVENT_LAG_BUCKETS_SECONDS,
            registry=r,
        )
        self.webhook_retry_backlog = Gauge(
            "banking_webhook_retry_backlog",
            "Webhook deliveries waiting for a retry, as last counted.",
            registry=r,
        )
        self.webhooks_disabled = Counter(
            "banking_webhooks_disabled_total",
            "Webhooks disabled after failing every retry up to the bound.",
            registry=r,
        )
        # The audit trail (banking.audit): its topic label takes only the topics the audit
        # consumer group subscribes to (a fixed list).
        self.audit_records = Counter(
            "banking_audit_records_total",
            "Events recorded in the audit trail, by topic.",
            ["topic"],
            registry=r,
        )
        self.audit_duplicates = Counter(
            "banking_audit_duplicates_skipped_total",
            "Redelivered events the audit trail already held (nothing written), by topic.",
            ["topic"],
            registry=r,
        )
        # The tamper-evident journal (banking.audit.chain): sealed by the relay, verified by
        # the audit worker (in-process in `banking serve` when embedded).
        self.journal_rows_sealed = Counter(
            "banking_journal_rows_sealed_total",
            "Journal (transaction_logs) rows sealed into the hash chain.",
            registry=r,
        )
        self.journal_chain_broken = Gauge(
            "banking_journal_chain_broken",
            "1 when the last verification of the journal's hash chain found a break, else 0.",
            registry=r,
        )
        self.journal_chain_verified_seq = Gauge(
            "banking_journal_chain_verified_seq",
            "The last chain position the last verification found intact.",
            registry=r,
        )
        self.journal_unsealed_overdue = Gauge(
            "banking_journal_unsealed_overdue_rows",
            "Journal rows left unsealed for more than a minute at the last verification.",
            registry=r,
        )
        self.journal_verifications = Counter(
            "banking_journal_chain_verifications_total",
            "Verifications of the journal's hash chain, by result: clean, broken or error.",
            ["result"],
            registry=r,
        )

        # The analytics sink (banking.analytics): event_type takes only ANALYTICS_EVENT_TYPES.
        self.analytics_rows = Counter(
            "banking_analytics_rows_written_total",
            "Event rows made durable in the analytics Parquet dataset, by event type.",
            ["event_type"],
            registry=r,
        )
        self.analytics_files = Counter(
            "banking_analytics_files_written_total",
            "Parquet files written to the analytics dataset, by event type.",
            ["event_type"],
            registry=r,
        )
        self.analytics_bytes = Counter(
            "banking_analytics_bytes_written_total",
            "Bytes of Parquet written to the analytics dataset, by event type.",
            ["event_type"],
            registry=r,
        )
        self.analytics_skips = Counter(
            "banking_analytics_messages_skipped_total",
            "Messages the analytics sink did not store: already_written (re-read after a "
            "restart), duplicate_event (an event id stored before), unreadable.",
            ["reason"],
            registry=r,
        )
        self.analytics_flush_lag_seconds = Histogram(
            "banking_analytics_flush_lag_seconds",
            "Time from an event's commit (ce_time) to the flush that made its row durable.",
            buckets=EVENT_LAG_BUCKETS_SECONDS,
            registry=r,
        )

        self._expose_known_labels()

    def _expose_known_labels(self) -> None:
        """Export every bounded label value at 0 from the start, so dashboards and alerts see
        a series (and rates) before the first error, dead letter or fail-open happens."""
        for code in ERROR_CODES:
            self.errors.labels(code)
        for topic in ("banking.transactions.dlq", "banking.transactions.permanent.dlq"):
            self.dead_letters.labels(topic)
        for reason in ("missing", "unknown_key", "bad_signature"):
            self.commands_refused.labels(reason)
        for scope in ("default", "token"):
            self.rate_limit_rejections.labels(scope)
            self.rate_limit_fail_open.labels(scope)
        for kind in ("debit", "credit", "transfer_out"):
            for status in ("completed", "failed"):
                self.movements.labels(kind, status)
            for reason in ("INSUFFICIENT_FUNDS", "ACCOUNT_INACTIVE"):
                self.declines.labels(kind, reason)
        for pattern in (*FRAUD_PATTERNS, OTHER_LABEL):
            self.fraud_alerts.labels(pattern)
            self.fraud_holds.labels(pattern)
        for decision in FRAUD_REVIEW_DECISIONS:
            self.fraud_reviews.labels(decision)
        for event_type in NOTIFICATION_EVENT_TYPES:
            self.notifications.labels(event_type)
        for result in WEBHOOK_DELIVERY_RESULTS:
            self.webhook_deliveries.labels(result)
        for target in ("primary", "replica"):
            self.db_reads.labels(target)
        for result in ("clean", "broken", "error"):
            self.journal_verifications.labels(result)

    # ReplicaObserver (storage.replicas)
    def read_served(self, target: str) -> None:
        self.db_reads.labels(target).inc()

    def replica_measured(self, replica: str, lag_seconds: float, healthy: bool) -> None:
        self.db_replica_lag.labels(replica).set(lag_seconds)
        self.db_replica_healthy.labels(replica).set(1 if healthy else 0)

    # RelayObserver
    def relay_published(self, count: int) -> None:
        self.outbox_published.inc(count)

    def relay_failed(self) -> None:
        self.relay_errors.inc()

    # DeadLetterObserver
    def dead_lettered(self, topic: str) -> None:
        self.dead_letters.labels(topic).inc()

    # RefusalObserver (workers.processor)
    def command_refused(self, reason: str) -> None:
        self.commands_refused.labels(reason).inc()

    def relay_backlog(self, count: int, oldest_age_seconds: float) -> None:
        self.outbox_backlog.set(count)
        self.outbox_oldest_age.set(oldest_age_seconds)

    # ConsumerObserver
    def consumed(self, group: str, topic: str, lag_seconds: float | None) -> None:
        self.events_consumed.labels(group, topic).inc()
        if lag_seconds is not None:
            self.event_lag.labels(group).observe(max(0.0, lag_seconds))

    def lagging(self, group: str, topic: str, messages: int) -> None:
        self.consumer_lag.labels(group, topic).set(messages)

    def watch_database(self, database: Database) -> None:
        """Statement latency (engine events) and pool use (read at scrape time)."""
        engine = database.engine.sync_engine
        histogram = self.db_query_latency
        database.on_retry = self.db_retries.inc

        @event.listens_for(engine, "before_cursor_execute")
        def _started(conn: Any, _cursor: Any, _statement: Any, *_: Any) -> None:
            conn.info.setdefault("banking_query_started", []).append(time.perf_counter())

        @event.listens_for(engine, "after_cursor_execute")
        def _finished(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            started = conn.info.get("banking_query_started")
            if started:
                kind = statement.lstrip().split(" ", 1)[0].upper()
                label = kind if kind in _STATEMENT_KINDS else "OTHER"
                histogram.labels(label).observe(time.perf_counter() - started.pop())

        self.registry.register(_PoolCollector(database))

    # MovementMetrics (banking.observability.movements)
    def movement(self, kind: str, status: str, currency: str, amount: Decimal) -> None:
        self.movements.labels(kind, status).inc()
        if status != "completed":
            return
        digits = CURRENCY_MINOR_DIGITS.get(currency)
        if digits is None:  # a completed movement's currency was validated: cannot happen
            self.invariant_violations.inc()
            return
        self.movement_amount.labels(kind, currency).inc(int(amount.scaleb(digits)))
        self.currency_minor_units.labels(currency).set(10**digits)

    def declined(self, kind: str, reason: str) -> None:
        self.declines.labels(kind, reason).inc()

    def replayed(self, kind: str) -> None:
        self.replays.labels(kind).inc()

    # Fraud detector (workers.fraud) and the review endpoints
    def fraud_scored(self, score: Decimal, seconds: float) -> None:
        # float only for the observation: the score itself stays exact where it is stored
        self.fraud_scores.observe(float(score))
        self.fraud_scoring_latency.observe(max(0.0, seconds))

    def fraud_alerted(self, pattern: str) -> None:
        self.fraud_alerts.labels(_known(pattern, FRAUD_PATTERNS)).inc()

    def fraud_held(self, pattern: str) -> None:
        self.fraud_holds.labels(_known(pattern, FRAUD_PATTERNS)).inc()

    def fraud_reviewed(self, decision: str) -> None:
        self.fraud_reviews.labels(_known(decision, FRAUD_REVIEW_DECISIONS)).inc()

    def fraud_model_loaded(self, version: str) -> None:
        """The model now scoring: its version is the only series at 1."""
        previous = self._fraud_model_version
        if previous is not None and previous != version:
            # 0 first: in multiprocess mode a removed child's last value stays in its file
            self.fraud_model_info.labels(previous).set(0)
            self.fraud_model_info.remove(previous)
        self.fraud_model_info.labels(version).set(1)
        self._fraud_model_version = version

    def fraud_review_queue(self, held: int) -> None:
        self.fraud_review_queue_size.set(held)

    # AuditObserver (audit.consumer)
    def audit_recorded(self, topic: str) -> None:
        self.audit_records.labels(topic).inc()

    def audit_duplicate(self, topic: str) -> None:
        self.audit_duplicates.labels(topic).inc()

    # SealObserver and VerifyObserver (audit.chain)
    def journal_sealed(self, count: int) -> None:
        self.journal_rows_sealed.inc(count)

    def journal_verified(self, *, broken: bool, verified_seq: int, unsealed_overdue: int) -> None:
        self.journal_chain_broken.set(1 if broken else 0)
        self.journal_chain_verified_seq.set(verified_seq)
        self.journal_unsealed_overdue.set(unsealed_overdue)
        self.journal_verifications.labels("broken" if broken else "clean").inc()

    def journal_verify_failed(self) -> None:
        self.journal_verifications.labels("error").inc()

    # Notifications and webhooks (workers.notifications)
    def notification_published(self, event_type: str) -> None:
        self.notifications.labels(_known(event_type, NOTIFICATION_EVENT_TYPES)).inc()

    def webhook_delivery(self, result: str, seconds: float | None) -> None:
        self.webhook_deliveries.labels(_known(result, WEBHOOK_DELIVERY_RESULTS)).inc()
        if seconds is not None:
            self.webhook_delivery_latency.observe(max(0.0, seconds))

    def webhook_backlog(self, pending_retries: int) -> None:
        self.webhook_retry_backlog.set(pending_retries)

    def webhook_disabled(self) -> None:
        self.webhooks_disabled.inc()

    # SinkObserver (analytics.sink)
    def analytics_file_written(self, event_type: str, rows: int, size_bytes: int) -> None:
        label = _known(event_type, ANALYTICS_EVENT_TYPES)
        self.analytics_rows.labels(label).inc(rows)
        self.analytics_files.labels(label).inc()
        self.analytics_bytes.labels(label).inc(size_bytes)

    def analytics_flush_lag(self, lag_seconds: float) -> None:
        self.analytics_flush_lag_seconds.observe(max(0.0, lag_seconds))

    def analytics_skipped(self, reason: str) -> None:
        self.analytics_skips.labels(_known(reason, ANALYTICS_SKIP_REASONS)).inc()


def _known(value: str, known: tuple[str, ...]) -> str:
    """A label value from a fixed vocabulary, or "other": labels stay bounded."""
    return value if value in known else OTHER_LABEL


class _PoolCollector(Collector):
    """Connection-pool use of the database engine, read when Prometheus scrapes."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pool = self._database.engine.sync_engine.pool
        family = GaugeMetricFamily(
            "banking_db_pool_connections",
            "Database connections of this process by state (checked_out, idle).",
            labels=["state"],
        )
        checked_out = getattr(pool, "checkedout", None)
        idle = getattr(pool, "checkedin", None)
        family.add_metric(["checked_out"], float(checked_out()) if callable(checked_out) else 0.0)
        family.add_metric(["idle"], float(idle()) if callable(idle) else 0.0)
        yield family
