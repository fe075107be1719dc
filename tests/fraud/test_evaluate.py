"""The issue's targets on a seeded held-out simulation, the sketch's baselines, and what
labels change in training."""

from __future__ import annotations

from banking.fraud.evaluate import DETECTORS, Report
from banking.fraud.simulate import PATTERNS, simulate
from banking.fraud.training import (
    DEFAULT_ANCHOR_QUANTILE,
    DEFAULT_MODEL_WEIGHT,
    train,
    training_rows,
)


def test_the_detector_catches_the_fraud_of_a_held_out_history(report: Report) -> None:
    _assert_targets(report)


def test_trained_on_normal_history_alone_it_still_catches_the_fraud(
    report_normal_only: Report,
) -> None:
    assert not report_normal_only.labelled
    _assert_targets(report_normal_only)


def _assert_targets(report: Report) -> None:
    combined = report.of("combined")
    assert combined.recall >= 0.90, report.format()
    assert combined.precision >= 0.80, report.format()
    for pattern in PATTERNS:
        assert report.of("combined", pattern).recall >= 0.75, report.format()


def test_both_parts_together_beat_each_alone_and_the_sketch(report: Report) -> None:
    combined = report.of("combined")
    assert combined.f1 > report.of("rules").f1
    assert combined.f1 > report.of("model").f1
    fitted_sketch = report.of("sketch-fitted")
    assert combined.f1 > fitted_sketch.f1
    assert combined.roc_auc is not None and fitted_sketch.roc_auc is not None
    assert combined.roc_auc > fitted_sketch.roc_auc


def test_the_sketchs_untrained_forest_scores_nothing(report: Report) -> None:
    untrained = report.of("sketch-untrained")
    assert untrained.recall == 0 and untrained.flagged == 0 and untrained.roc_auc is None
    assert any("NotFittedError" in note for note in report.notes)


def test_the_report_reads_as_a_table(report: Report) -> None:
    text = report.format()
    for name in DETECTORS:
        assert name in text
    for pattern in PATTERNS:
        assert pattern in text
    assert "precision" in text and "ROC-AUC" in text


def test_labels_choose_the_calibration_and_fraud_is_not_learnt_as_normal() -> None:
    simulated = simulate(51, 80, 21)
    movements = [item.movement for item in simulated]
    labels = {item.movement.transaction_id: item.is_fraud for item in simulated}
    fraud = sum(labels.values())

    unlabelled = train(training_rows(movements), seed=1, n_estimators=20)
    assert not unlabelled.calibration.labelled
    assert unlabelled.calibration.anchor_quantile == DEFAULT_ANCHOR_QUANTILE
    assert unlabelled.calibration.weight == DEFAULT_MODEL_WEIGHT
    assert unlabelled.training["normal_rows"] == len(movements)

    labelled = train(training_rows(movements, labels), seed=1, n_estimators=20)
    assert labelled.calibration.labelled
    assert labelled.training["fraud_labels"] == fraud
    assert labelled.training["normal_rows"] == len(movements) - fraud
