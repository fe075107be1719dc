"""The detector: thresholds, scores in [0, 1] with four places, the rules-only fallback, and
reasons that name each fraud pattern."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from banking.fraud.assessment import Assessment, FraudDecision, Thresholds
from banking.fraud.detector import REASONS, RULES_ONLY, Detector, DetectorKind
from banking.fraud.model import FixedModel, ModelSource, TrainedModel
from banking.fraud.simulate import PATTERNS, simulate
from banking.fraud.training import training_rows

THRESHOLDS = Thresholds(alert=Decimal("0.70"), hold=Decimal("0.90"))


@pytest.mark.parametrize(
    ("score", "decision"),
    [
        ("0", FraudDecision.ALLOW),
        ("0.6999", FraudDecision.ALLOW),
        ("0.7000", FraudDecision.ALERT),
        ("0.8999", FraudDecision.ALERT),
        ("0.9000", FraudDecision.HOLD),
        ("1", FraudDecision.HOLD),
    ],
)
def test_thresholds_alert_and_hold_at_or_above(score: str, decision: FraudDecision) -> None:
    assert THRESHOLDS.decide(Decimal(score)) is decision


def test_equal_thresholds_hold_without_alerting_first() -> None:
    both = Thresholds(alert=Decimal("0.8"), hold=Decimal("0.8"))
    assert both.decide(Decimal("0.8")) is FraudDecision.HOLD
    assert both.decide(Decimal("0.7999")) is FraudDecision.ALLOW


@pytest.mark.parametrize(("alert", "hold"), [("0.9", "0.7"), ("-0.1", "0.5"), ("0.5", "1.1")])
def test_thresholds_out_of_order_or_range_are_refused(alert: str, hold: str) -> None:
    with pytest.raises(ValueError):
        Thresholds(alert=Decimal(alert), hold=Decimal(hold))


def _assessments(detector: Detector, seed: int) -> list[tuple[str | None, Assessment]]:
    simulated = simulate(seed, 80, 21)
    rows = training_rows(item.movement for item in simulated)
    return [
        (item.pattern, detector.assess(row.features))
        for item, row in zip(simulated, rows, strict=True)
    ]


def test_without_a_model_file_the_rules_score_alone(tmp_path: Path) -> None:
    detector = Detector(ModelSource(tmp_path, 1.0), THRESHOLDS)
    scored = _assessments(detector, 31)
    assert {assessment.model_version for _, assessment in scored} == {RULES_ONLY}
    assert all("model_anomaly" not in assessment.reasons for _, assessment in scored)
    flagged = Counter(p for p, a in scored if a.decision is not FraudDecision.ALLOW)
    assert flagged[None] < sum(flagged[pattern] for pattern in PATTERNS)


def test_scores_are_in_range_with_four_places_and_reasons_from_the_vocabulary(
    small_model: TrainedModel,
) -> None:
    detector = Detector(FixedModel(small_model), THRESHOLDS)
    for _, assessment in _assessments(detector, 32):
        assert Decimal(0) <= assessment.score <= Decimal(1)
        assert assessment.score == assessment.score.quantize(Decimal("0.0001"))
        assert set(assessment.reasons) <= set(REASONS)
        assert assessment.model_version == small_model.version
        assert assessment.decision is THRESHOLDS.decide(assessment.score)
        assert assessment.features["amount_log"] >= 0


EXPECTED_REASONS = {
    "card_testing": {"card_testing", "velocity_1m", "declines_1h"},
    "account_takeover": {"amount_vs_mean", "new_counterparty", "night_time", "quiet_period"},
    "structuring": {"structuring"},
    "mule": {"fan_in", "fan_out"},
}


def test_each_pattern_is_flagged_with_the_reasons_that_name_it(small_model: TrainedModel) -> None:
    detector = Detector(FixedModel(small_model), THRESHOLDS)
    scored = _assessments(detector, 33)
    for pattern, expected in EXPECTED_REASONS.items():
        flagged = [a for p, a in scored if p == pattern and a.decision is not FraudDecision.ALLOW]
        assert flagged, pattern
        named = [a for a in flagged if expected & set(a.reasons[:2])]
        assert len(named) >= 0.8 * len(flagged), (pattern, [a.reasons for a in flagged])
    normal_alerts = [a for p, a in scored if p is None and a.decision is not FraudDecision.ALLOW]
    normal = sum(1 for p, _ in scored if p is None)
    assert len(normal_alerts) < 0.005 * normal


def test_the_variants_score_with_one_part_alone(small_model: TrainedModel) -> None:
    detector = Detector(FixedModel(small_model), THRESHOLDS)
    rules_only = detector.variant(DetectorKind.RULES)
    model_only = detector.variant("model")
    rows = list(training_rows(item.movement for item in simulate(34, 40, 14)))
    rules_reasons = {r for row in rows for r in rules_only.assess(row.features).reasons}
    model_reasons = {r for row in rows for r in model_only.assess(row.features).reasons}
    assert "model_anomaly" not in rules_reasons and rules_reasons
    assert model_reasons == {"model_anomaly"}
    for row in rows[:500]:
        combined = detector.assess(row.features).score
        assert combined >= rules_only.assess(row.features).score
        assert combined >= min(
            model_only.assess(row.features).score * Decimal(str(small_model.calibration.weight)),
            Decimal(1),
        ) - Decimal("0.0001")
