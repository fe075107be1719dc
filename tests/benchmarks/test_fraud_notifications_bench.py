"""``python -m benchmarks.fraud_notifications`` at a tiny size against the real PostgreSQL and
Kafka: the run stops by itself and its report has the issue's figures (a benchmark, not a
timed test: nothing here checks a rate or a latency against a target)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_SECONDS = 480  # about 2 min on a quiet machine, 3.5 min on a busy one
WEBHOOK_RATE = 10
WEBHOOK_SECONDS = 2

pytestmark = pytest.mark.postgres


def _services_environment() -> dict[str, str]:
    needed = ("BANKING_PG_ADMIN_DSN", "BANKING_KAFKA_BOOTSTRAP")
    missing = [name for name in needed if not os.environ.get(name)]
    if missing:
        pytest.fail(
            f"this benchmark test needs {', '.join(missing)}: run `make test`, or "
            '`eval "$(bash scripts/services/all.sh env postgres kafka)"` after starting them.',
            pytrace=False,
        )
    return dict(os.environ)


def test_a_tiny_run_reports_scoring_cost_and_webhook_latency(tmp_path: Path) -> None:
    output = tmp_path / "fraud.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.fraud_notifications",
            "--concurrency=2",
            "--seconds=2",
            "--warmup-seconds=1",
            f"--webhook-rate={WEBHOOK_RATE}",
            f"--webhook-seconds={WEBHOOK_SECONDS}",
            f"--output={output}",
        ],
        cwd=REPO_ROOT,
        env=_services_environment(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["reconcile_clean"] is True

    cost = report["fraud_cost"]
    rounds = cost["rounds"]
    assert [rounds[name]["fraud_worker"] for name in ("without_1", "with", "without_2")] == [
        False,
        True,
        False,
    ]
    assert all(round_["transfers_per_second"] > 0 for round_ in rounds.values())
    assert all(round_["errors"] == 0 for round_ in rounds.values())
    with_fraud, without = cost["transfers_per_second_with"], cost["transfers_per_second_without"]
    assert cost["ratio_with_to_without"] == pytest.approx(with_fraud / without, abs=0.001)
    # Nothing scores while the fraud worker is not running; when it runs, every leg is scored.
    assert cost["scored_without_the_worker"] == 0
    assert cost["catch_up"]["legs"] == cost["backlog_legs"] > 0
    during = cost["during_load"]
    assert during["legs_scored"] > 0
    lag = during["commit_to_score_ms"]
    assert 0 < lag["p50"] <= lag["p99"] <= lag["max"]
    assert cost["all_scored_seconds_after_load"] >= 0

    hooks = report["webhook_latency"]
    sent = WEBHOOK_RATE * WEBHOOK_SECONDS
    assert hooks["debits_sent"] == hooks["debits_completed"] == sent
    assert hooks["delivered"] == sent
    assert hooks["bad_signatures"] == 0
    assert hooks["created_at_differs_from_data_timestamp"] == 0
    latency = hooks["latency_ms"]
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
    assert hooks["from_api_response_latency_ms"]["max"] <= latency["max"]
