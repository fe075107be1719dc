"""Prometheus metrics. Labels are bounded: never an account id or user id."""

from __future__ import annotations

from decimal import Decimal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

from banking.ledger.movements import MovementObserver

LATENCY_BUCKETS_SECONDS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class Metrics(MovementObserver):
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
            "Sum of completed movement amounts by type and currency, in hundredths (integers, "
            "exact up to 2^53).",
            ["type", "currency"],
            registry=r,
        )
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

    # RelayObserver
    def relay_published(self, count: int) -> None:
        self.outbox_published.inc(count)

    def relay_failed(self) -> None:
        self.relay_errors.inc()

    # DeadLetterObserver
    def dead_lettered(self, topic: str) -> None:
        self.dead_letters.labels(topic).inc()


    # MovementObserver
    def movement(self, kind: str, status: str, currency: str, amount: Decimal) -> None:
        self.movements.labels(kind, status).inc()
        if status == "completed":
            self.movement_amount.labels(kind, currency).inc(int(amount * 100))

    def declined(self, kind: str, reason: str) -> None:
        self.declines.labels(kind, reason).inc()

    def replayed(self, kind: str) -> None:
        self.replays.labels(kind).inc()
