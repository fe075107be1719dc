"""The fraud detector's and the notification service's metrics, read as Prometheus reads them
(the exposition text): what each call the workers make shows on ``/metrics``, with bounded
labels only."""

from __future__ import annotations

from decimal import Decimal

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from banking.observability.metrics import (
    FRAUD_PATTERNS,
    NOTIFICATION_EVENT_TYPES,
    WEBHOOK_DELIVERY_RESULTS,
    Metrics,
)
from tests.conftest import Bank

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def _samples(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[key] = sample.value
    return samples


def _scrape(metrics: Metrics) -> Samples:
    return _samples(generate_latest(metrics.registry).decode())


def _by(label: str, series: dict[tuple[tuple[str, str], ...], float]) -> dict[str, float]:
    return {dict(key)[label]: value for key, value in series.items()}


def test_scores_fill_the_tenth_buckets_and_latency_its_own_histogram() -> None:
    metrics = Metrics()
    for score, seconds in (
        (Decimal("0.0500"), 0.0002),
        (Decimal("0.1000"), 0.0004),  # on a bound: counted in le="0.1"
        (Decimal("0.4321"), 0.0030),
        (Decimal("0.9999"), 0.0200),
    ):
        metrics.fraud_scored(score, seconds)

    samples = _scrape(metrics)
    buckets = _by("le", samples["banking_fraud_scores_bucket"])
    assert list(buckets) == [
        "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1.0", "+Inf",
    ]  # fmt: skip
    assert buckets["0.1"] == 2
    assert buckets["0.4"] == 2
    assert buckets["0.5"] == 3
    assert buckets["0.9"] == 3
    assert buckets["1.0"] == 4
    assert samples["banking_fraud_scores_count"][()] == 4
    assert samples["banking_fraud_scores_sum"][()] == 0.05 + 0.1 + 0.4321 + 0.9999

    latency = _by("le", samples["banking_fraud_scoring_seconds_bucket"])
    assert float(min(latency, key=float)) == 0.0001
    assert max((bound for bound in latency if bound != "+Inf"), key=float) == "0.05"
    assert latency["0.0001"] == 0
    assert latency["0.0005"] == 2
    assert latency["0.005"] == 3
    assert latency["0.025"] == 4


def test_alerts_and_holds_count_by_pattern_and_unknown_patterns_as_other() -> None:
    metrics = Metrics()
    metrics.fraud_alerted("velocity_1m")
    metrics.fraud_alerted("velocity_1m")
    metrics.fraud_alerted("structuring")
    metrics.fraud_alerted("account 4f1c0d2e-...")  # never a label: an id would be unbounded
    metrics.fraud_held("card_testing")
    metrics.fraud_held("brand_new_reason")

    samples = _scrape(metrics)
    alerts = _by("pattern", samples["banking_fraud_alerts_total"])
    holds = _by("pattern", samples["banking_fraud_holds_total"])
    assert set(alerts) == set(holds) == {*FRAUD_PATTERNS, "other"}
    assert alerts["velocity_1m"] == 2
    assert alerts["structuring"] == 1
    assert alerts["other"] == 1
    assert sum(alerts.values()) == 4
    assert holds["card_testing"] == 1
    assert holds["other"] == 1
    assert sum(holds.values()) == 2


def test_review_decisions_and_the_queue() -> None:
    metrics = Metrics()
    metrics.fraud_reviewed("released")
    metrics.fraud_reviewed("rejected")
    metrics.fraud_reviewed("rejected")
    metrics.fraud_review_queue(7)
    metrics.fraud_review_queue(5)  # a gauge: the last count, not a sum

    samples = _scrape(metrics)
    assert _by("decision", samples["banking_fraud_reviews_total"]) == {
        "released": 1,
        "rejected": 2,
    }
    assert samples["banking_fraud_review_queue"] == {(): 5}


def test_model_info_shows_only_the_version_now_scoring() -> None:
    metrics = Metrics()
    assert _scrape(metrics).get("banking_fraud_model_info", {}) == {}  # no model, no series

    metrics.fraud_model_loaded("20240101T000000Z-1")
    metrics.fraud_model_loaded("20240101T000000Z-1")  # the same file seen again
    assert _scrape(metrics)["banking_fraud_model_info"] == {(("version", "20240101T000000Z-1"),): 1}

    metrics.fraud_model_loaded("20240202T000000Z-2")  # re-trained and picked up
    assert _scrape(metrics)["banking_fraud_model_info"] == {(("version", "20240202T000000Z-2"),): 1}


def test_notifications_and_webhook_deliveries() -> None:
    metrics = Metrics()
    metrics.notification_published("transaction.completed")
    metrics.notification_published("fraud.alert")
    metrics.notification_published("something.new")
    metrics.webhook_delivery("retrying", None)
    metrics.webhook_delivery("retrying", None)
    metrics.webhook_delivery("succeeded", 0.3)
    metrics.webhook_delivery("succeeded", 42.0)
    metrics.webhook_delivery("refused", None)
    metrics.webhook_delivery("failed", None)
    metrics.webhook_backlog(3)
    metrics.webhook_disabled()

    samples = _scrape(metrics)
    notifications = _by("event_type", samples["banking_notifications_total"])
    assert notifications["transaction.completed"] == 1
    assert notifications["fraud.alert"] == 1
    assert notifications["other"] == 1
    assert notifications["transaction.failed"] == 0
    assert _by("result", samples["banking_webhook_deliveries_total"]) == {
        "succeeded": 2,
        "retrying": 2,
        "failed": 1,
        "refused": 1,
    }
    latency = _by("le", samples["banking_webhook_delivery_seconds_bucket"])
    assert max((bound for bound in latency if bound != "+Inf"), key=float) == "300.0"
    assert latency["0.25"] == 0
    assert latency["0.5"] == 1
    assert latency["30.0"] == 1
    assert latency["60.0"] == 2
    assert samples["banking_webhook_delivery_seconds_count"] == {(): 2}  # only timed ones
    assert samples["banking_webhook_retry_backlog"] == {(): 3}
    assert samples["banking_webhooks_disabled_total"] == {(): 1}


async def test_the_service_exports_every_series_at_zero_before_anything_happens(
    bank: Bank,
) -> None:
    """Dashboards show 0 (and alert rates evaluate) from the start, not "no data"."""
    response = await bank.client.get("/metrics")
    assert response.status_code == 200
    samples = _samples(response.text)

    for name in ("banking_fraud_alerts_total", "banking_fraud_holds_total"):
        assert _by("pattern", samples[name]) == dict.fromkeys((*FRAUD_PATTERNS, "other"), 0)
    assert _by("decision", samples["banking_fraud_reviews_total"]) == {
        "released": 0,
        "rejected": 0,
    }
    assert _by("event_type", samples["banking_notifications_total"]) == dict.fromkeys(
        NOTIFICATION_EVENT_TYPES, 0
    )
    assert _by("result", samples["banking_webhook_deliveries_total"]) == dict.fromkeys(
        WEBHOOK_DELIVERY_RESULTS, 0
    )
    for name in (
        "banking_fraud_scores_count",
        "banking_fraud_scoring_seconds_count",
        "banking_webhook_delivery_seconds_count",
        "banking_fraud_review_queue",
        "banking_webhook_retry_backlog",
        "banking_webhooks_disabled_total",
    ):
        assert samples[name] == {(): 0}, name
    # The embedded fraud worker scores with the rules alone until a model file exists.
    assert samples["banking_fraud_model_info"] == {(("version", "rules-only"),): 1}
