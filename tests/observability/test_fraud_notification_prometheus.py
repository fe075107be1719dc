"""The Fraud and Notifications rows of the dashboard and their alert rules, proven against a
real Prometheus (scripts/services/prometheus.sh, the committed alerts.yml).

What Prometheus scrapes is the service's own exposition: a ``Metrics`` served by the server
``--metrics-port`` starts (``prometheus_client.start_http_server``), driven with steady traffic
through the calls the fraud and notification workers make. Every panel query of the two rows
must return the values that traffic gives; the new rules must load, and those whose threshold
the traffic crosses go pending (their ``for:`` has not elapsed) while the one it stays under
does not.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import start_http_server

from banking.observability.metrics import Metrics
from tests.support.processes import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
ALERTS = REPO_ROOT / "infrastructure/prometheus/alerts.yml"
DASHBOARD = REPO_ROOT / "infrastructure/grafana/dashboards/banking-overview.json"
SCRIPT = REPO_ROOT / "scripts/services/prometheus.sh"
JOB = "banking-fraud"
ROWS = ("Fraud", "Notifications")
NEW_RULES = {
    "FraudAlertRateHigh",
    "FraudReviewQueueGrowing",
    "WebhookDeliveriesFailing",
    "WebhookRetryBacklogHigh",
}
MODEL_VERSION = "20240202T000000Z-2"
REVIEW_QUEUE = 120  # above FraudReviewQueueGrowing's 50
RETRY_BACKLOG = 500  # above WebhookRetryBacklogHigh's 100
TICK_SECONDS = 0.1
DATA_TIMEOUT_SECONDS = 60


@dataclass
class Exporter:
    prometheus: str
    stop: threading.Event


def _traffic(metrics: Metrics, stop: threading.Event) -> None:
    """Per tick: 4 scored movements, 3 failed or refused deliveries and 1 delivered (a ratio of
    about 0.73: above WebhookDeliveriesFailing's 0.5); an alert and a hold every 20 ticks
    (0.5/s: under FraudAlertRateHigh's 1/s); a review, a retry and a disabled webhook every 10."""
    tick = 0
    while not stop.wait(TICK_SECONDS):
        for score in ("0.0300", "0.1500", "0.4200", "0.9700"):
            metrics.fraud_scored(Decimal(score), 0.0008)
        metrics.webhook_delivery("failed", None)
        metrics.webhook_delivery("failed", None)
        metrics.webhook_delivery("refused", None)
        metrics.webhook_delivery("succeeded", 0.4)
        metrics.notification_published("transaction.completed")
        if tick % 20 == 0:
            metrics.fraud_alerted("card_testing")
            metrics.fraud_held("card_testing")
        if tick % 10 == 0:
            metrics.fraud_reviewed("released" if tick % 20 else "rejected")
            metrics.webhook_delivery("retrying", None)
            metrics.webhook_disabled()
        tick += 1


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    tmp = tmp_path_factory.mktemp("fraud-prometheus")
    metrics = Metrics()
    metrics.fraud_model_loaded("20240101T000000Z-1")
    metrics.fraud_model_loaded(MODEL_VERSION)  # re-trained: only this version is 1
    metrics.fraud_review_queue(REVIEW_QUEUE)
    metrics.webhook_backlog(RETRY_BACKLOG)
    metrics_port = free_port()
    server, server_thread = start_http_server(
        metrics_port, addr="127.0.0.1", registry=metrics.registry
    )
    stop = threading.Event()
    traffic = threading.Thread(target=_traffic, args=(metrics, stop), daemon=True)
    traffic.start()

    config = tmp / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(ALERTS)],
                "scrape_configs": [
                    {
                        "job_name": JOB,
                        "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                    }
                ],
            }
        )
    )
    port = free_port()
    env = {
        **os.environ,
        "PROMETHEUS_CONFIG": str(config),
        "BANKING_SERVICES_DIR": str(tmp / "services"),
        "BANKING_PROMETHEUS_PORT": str(port),
    }
    try:
        subprocess.run(
            ["bash", str(SCRIPT), "start"], env=env, check=True, capture_output=True, timeout=120
        )
        yield Exporter(prometheus=f"http://127.0.0.1:{port}", stop=stop)
    finally:
        subprocess.run(
            ["bash", str(SCRIPT), "stop"], env=env, check=False, capture_output=True, timeout=60
        )
        stop.set()
        traffic.join()
        server.shutdown()
        server.server_close()
        server_thread.join()


def _api(prometheus: str, path: str, **params: str) -> Any:
    response = httpx.get(f"{prometheus}/api/v1/{path}", params=params, timeout=10)
    body = response.json()
    assert body["status"] == "success", (path, params, body)
    return body["data"]


def _query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = _api(prometheus, "query", query=expr)["result"]
    return result


def _row_panels(row: str) -> list[dict[str, Any]]:
    panels, current = [], None
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        if panel["type"] == "row":
            current = panel["title"]
        elif current == row:
            panels.append(panel)
    return panels


def _eventually(check: Any, what: str) -> Any:
    """``check()``'s first truthy answer; fails with ``what`` and the last answer after
    DATA_TIMEOUT_SECONDS."""
    deadline = time.monotonic() + DATA_TIMEOUT_SECONDS
    while True:
        answer = check()
        if answer:
            return answer
        assert time.monotonic() < deadline, f"{what} (last answer: {answer!r})"
        time.sleep(1)


def _values(prometheus: str, expr: str) -> dict[str, float]:
    """A query's series as {"label=value,...": number}, without the instance label."""
    return {
        ",".join(
            f"{key}={value}"
            for key, value in sorted(series["metric"].items())
            if key not in ("instance",)
        ): float(series["value"][1])
        for series in _query(prometheus, expr)
    }


def test_both_rows_exist_with_their_panels() -> None:
    titles = {row: [panel["title"] for panel in _row_panels(row)] for row in ROWS}
    assert len(titles["Fraud"]) >= 6
    assert len(titles["Notifications"]) >= 5


def test_every_fraud_and_notification_panel_returns_real_numbers(exporter: Exporter) -> None:
    def numbers(expr: str) -> list[float]:
        return [
            float(series["value"][1])
            for series in _query(exporter.prometheus, expr)
            if series["value"][1] not in ("NaN", "+Inf", "-Inf")
        ]

    for row in ROWS:
        for panel in _row_panels(row):
            for target in panel["targets"]:
                _eventually(
                    lambda expr=target["expr"]: any(numbers(expr)),
                    f"{row} / {panel['title']}: no non-zero value for {target['expr']}",
                )


def _panel_expr(row: str, title_start: str, target: int = 0) -> str:
    (panel,) = [panel for panel in _row_panels(row) if panel["title"].startswith(title_start)]
    expr: str = panel["targets"][target]["expr"]
    return expr


def test_panels_show_what_the_workers_reported(exporter: Exporter) -> None:
    def shown(row: str, title_start: str, target: int = 0, series: int = 1) -> dict[str, float]:
        """The panel's non-zero, non-NaN values, once it shows ``series`` of them (rates need
        a few scrapes, and events that happen every second need one in the window)."""
        expr = _panel_expr(row, title_start, target)

        def values() -> dict[str, float]:
            return {
                name: value
                for name, value in _values(exporter.prometheus, expr).items()
                if value == value and value != 0  # NaN: no traffic yet; 0: a zero series
            }

        answer = _eventually(lambda: len(values()) >= series and values(), f"no value for {expr}")
        assert isinstance(answer, dict)
        return answer

    # the re-trained model only: the old version's series is gone
    assert shown("Fraud", "Fraud model version") == {f"job={JOB},version={MODEL_VERSION}": 1}
    assert shown("Fraud", "Review queue") == {"": REVIEW_QUEUE}
    assert shown("Notifications", "Webhook retry backlog") == {"": RETRY_BACKLOG}
    assert set(shown("Fraud", "Fraud alerts and holds", 0)) == {"pattern=card_testing"}
    assert set(shown("Fraud", "Fraud alerts and holds", 1)) == {"pattern=card_testing"}
    assert set(shown("Fraud", "Review decisions", series=2)) == {
        "decision=released",
        "decision=rejected",
    }
    assert set(shown("Notifications", "Webhook deliveries/s", series=4)) == {
        f"result={result}" for result in ("succeeded", "retrying", "failed", "refused")
    }
    # Scores 0.03, 0.15, 0.42 and 0.97 in equal numbers: the median lies in the 0.1-0.5 range.
    (median,) = shown("Fraud", "Fraud score p50").values()
    assert 0.1 <= median <= 0.5
    (p99,) = shown("Fraud", "Fraud score p50", 2).values()
    assert 0.9 <= p99 <= 1.0
    (delivery_p50,) = shown("Notifications", "Webhook delivery latency", 0).values()
    assert 0.25 <= delivery_p50 <= 0.5  # every delivery took 0.4 s
    (scoring_p99,) = shown("Fraud", "Fraud scoring latency", 1).values()
    assert 0.0005 <= scoring_p99 <= 0.001  # every scoring took 0.8 ms


def test_the_new_rules_load_and_fire_on_the_exported_values(exporter: Exporter) -> None:
    def active() -> dict[str, str]:
        alerts = _api(exporter.prometheus, "alerts")["alerts"]
        return {alert["labels"]["alertname"]: alert["state"] for alert in alerts}

    expected = {  # the traffic crosses these thresholds; their for: has not elapsed
        "FraudReviewQueueGrowing": "pending",  # 120 held > 50 (for: 30m)
        "WebhookRetryBacklogHigh": "pending",  # 500 waiting > 100 (for: 15m)
        "WebhookDeliveriesFailing": "pending",  # ~0.73 failed or refused > 0.5 (for: 5m)
    }
    deadline = time.monotonic() + DATA_TIMEOUT_SECONDS
    states = active()
    while any(states.get(name) != state for name, state in expected.items()):
        assert time.monotonic() < deadline, f"the rules never went pending: {states}"
        time.sleep(1)
        states = active()
    assert "FraudAlertRateHigh" not in states  # 0.5 alerts/s stays under 1/s

    groups = _api(exporter.prometheus, "rules", type="alert")["groups"]
    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(rules) >= NEW_RULES
    for name in NEW_RULES:  # evaluated (the alerts above went pending) without an error
        assert rules[name]["health"] == "ok", rules[name]
        assert rules[name]["labels"]["severity"] in ("page", "ticket")
        assert rules[name]["annotations"]["summary"] and rules[name]["annotations"]["description"]
