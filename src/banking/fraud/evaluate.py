"""``banking fraud evaluate``: train on one simulated history, score a held-out one simulated
with another seed, and report precision, recall, F1 (a movement is flagged when its score
reaches the alert threshold) and ROC-AUC (of the scores), overall and per fraud pattern (that
pattern's fraud rows against every normal row), for:

* ``rules``, ``model``, ``combined``: this detector, each part alone and both together;
* ``sketch-untrained``: the sketch's ``IsolationForest(random_state=42, contamination=0.01)``,
  never fitted, as the sketch leaves it: its ``decision_function`` raises ``NotFittedError``,
  so it scores nothing (recall 0);
* ``sketch-fitted``: the sketch's three features (amount, seconds since the last movement,
  deviation from the mean of the last 100 amounts, computed as its ``_enrich_transaction``
  does but on the simulation's clock) and the same forest, fitted on the normal training
  history, flagging ``1 - (decision_function + 1) / 2 > 0.9`` as the sketch does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.exceptions import NotFittedError
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from banking.fraud.assessment import FraudDecision, Thresholds
from banking.fraud.detector import Detector, DetectorKind
from banking.fraud.model import FixedModel, FloatArray, TrainedModel
from banking.fraud.simulate import PATTERNS, SimulatedMovement, simulate
from banking.fraud.training import N_ESTIMATORS, train, training_rows

ALL: Final = "all"
DETECTORS: Final = ("rules", "model", "combined", "sketch-untrained", "sketch-fitted")
SKETCH_THRESHOLD: Final = 0.9
SKETCH_HISTORY: Final = 100
OPERATING_THRESHOLDS: Final = (0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_THRESHOLDS: Final = Thresholds(alert=Decimal("0.70"), hold=Decimal("0.90"))


@dataclass(frozen=True, slots=True)
class Figures:
    """One detector on one slice of the held-out rows."""

    detector: str
    pattern: str
    positives: int
    negatives: int
    flagged: int
    precision: float
    recall: float
    f1: float
    roc_auc: float | None  # None: the detector gave no scores


@dataclass(frozen=True, slots=True)
class Report:
    train_seed: int
    test_seed: int
    customers: int
    days: int
    labelled: bool
    thresholds: Thresholds
    model_version: str
    train_rows: int
    test_rows: int
    figures: tuple[Figures, ...]
    operating_points: tuple[tuple[float, float, float], ...]  # combined: (threshold, P, R)
    notes: tuple[str, ...]

    def of(self, detector: str, pattern: str = ALL) -> Figures:
        for figures in self.figures:
            if figures.detector == detector and figures.pattern == pattern:
                return figures
        raise KeyError((detector, pattern))

    def format(self) -> str:
        """A readable text table."""
        lines = [
            f"fraud evaluation: trained on seed {self.train_seed} "
            f"({'with' if self.labelled else 'without'} labels, {self.train_rows} rows), "
            f"held-out seed {self.test_seed} ({self.test_rows} rows); "
            f"{self.customers} customers x {self.days} days",
            f"model {self.model_version}; flagged = score >= alert threshold "
            f"{self.thresholds.alert} (sketch baselines: their own 0.9)",
            "",
            f"{'detector':<17} {'pattern':<17} {'fraud':>6} {'flagged':>8} "
            f"{'precision':>9} {'recall':>7} {'F1':>6} {'ROC-AUC':>8}",
        ]
        for figures in self.figures:
            auc = "n/a" if figures.roc_auc is None else f"{figures.roc_auc:.4f}"
            lines.append(
                f"{figures.detector:<17} {figures.pattern:<17} {figures.positives:>6} "
                f"{figures.flagged:>8} {figures.precision:>9.4f} {figures.recall:>7.4f} "
                f"{figures.f1:>6.4f} {auc:>8}"
            )
        lines.append("")
        lines.append("combined, overall, at other alert thresholds:")
        for threshold, precision, recall in self.operating_points:
            lines.append(f"  {threshold:.2f}: precision {precision:.4f}  recall {recall:.4f}")
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)


def evaluate(
    train_seed: int = 1,
    test_seed: int = 2,
    *,
    customers: int = 200,
    days: int = 30,
    labelled: bool = True,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    n_estimators: int = N_ESTIMATORS,
) -> Report:
    """Train on simulation ``train_seed`` (with its fraud labels for the calibration when
    ``labelled``, else on its normal movements alone), score simulation ``test_seed`` and
    report (module docstring)."""
    if train_seed == test_seed:
        raise ValueError("the held-out simulation needs a seed of its own")
    history = simulate(train_seed, customers, days)
    if labelled:
        labels = {item.movement.transaction_id: item.is_fraud for item in history}
        movements = [item.movement for item in history]
    else:  # the normal history alone, no labels: the defaults of the calibration stand
        labels = {}
        movements = [item.movement for item in history if item.pattern is None]
    model = train(
        training_rows(movements, labels),
        seed=train_seed,
        n_estimators=n_estimators,
        alert_threshold=float(thresholds.alert),
    )
    held_out = simulate(test_seed, customers, days)
    patterns = [item.pattern for item in held_out]
    scores, flags = _score_detector(model, thresholds, held_out)
    notes: list[str] = []
    sketch_scores, sketch_flags, note = _sketch_untrained(held_out)
    notes.append(note)
    scores["sketch-untrained"], flags["sketch-untrained"] = sketch_scores, sketch_flags
    fitted_scores, fitted_flags = _sketch_fitted(history, held_out)
    scores["sketch-fitted"], flags["sketch-fitted"] = fitted_scores, fitted_flags
    notes.append(
        f"sketch-fitted: its highest fraud_score is {float(fitted_scores.max()):.4f} "
        f"(flags above {SKETCH_THRESHOLD}); ROC-AUC shows how it ranks"
    )
    figures = [
        _figures(name, pattern, patterns, scores[name], flags[name])
        for name in DETECTORS
        for pattern in (ALL, *PATTERNS)
    ]
    combined = scores["combined"]
    if combined is None:
        raise RuntimeError("the combined detector gave no scores")
    truth = np.array([pattern is not None for pattern in patterns])
    points = []
    for threshold in OPERATING_THRESHOLDS:
        flagged = combined >= threshold
        points.append(
            (
                threshold,
                float(precision_score(truth, flagged, zero_division=0)),
                float(recall_score(truth, flagged, zero_division=0)),
            )
        )
    return Report(
        train_seed=train_seed,
        test_seed=test_seed,
        customers=customers,
        days=days,
        labelled=labelled,
        thresholds=thresholds,
        model_version=model.version,
        train_rows=len(history),
        test_rows=len(held_out),
        figures=tuple(figures),
        operating_points=tuple(points),
        notes=tuple(notes),
    )


def _score_detector(
    model: TrainedModel, thresholds: Thresholds, held_out: Sequence[SimulatedMovement]
) -> tuple[dict[str, FloatArray | None], dict[str, np.ndarray]]:
    """Each variant's scores and flags, through ``Detector.assess`` as the worker scores."""
    detector = Detector(FixedModel(model), thresholds)
    variants = {
        "rules": detector.variant(DetectorKind.RULES),
        "model": detector.variant(DetectorKind.MODEL),
        "combined": detector,
    }
    values: dict[str, list[float]] = defaultdict(list)
    flags: dict[str, list[bool]] = defaultdict(list)
    for row in training_rows(item.movement for item in held_out):
        for name, variant in variants.items():
            assessment = variant.assess(row.features)
            values[name].append(float(assessment.score))
            flags[name].append(assessment.decision is not FraudDecision.ALLOW)
    return (
        {name: np.array(values[name]) for name in variants},
        {name: np.array(flags[name]) for name in variants},
    )


def _sketch_untrained(
    held_out: Sequence[SimulatedMovement],
) -> tuple[FloatArray | None, np.ndarray, str]:
    forest = IsolationForest(random_state=42, contamination=0.01)
    first = _sketch_rows(held_out)[:1]
    try:
        forest.decision_function(first)
    except NotFittedError as error:
        note = f"sketch-untrained: decision_function raises NotFittedError ({error})"
        return None, np.zeros(len(held_out), dtype=bool), note
    raise RuntimeError("the sketch's unfitted forest unexpectedly scored a row")


def _sketch_fitted(
    history: Sequence[SimulatedMovement], held_out: Sequence[SimulatedMovement]
) -> tuple[FloatArray, np.ndarray]:
    normal = np.array([item.pattern is None for item in history])
    forest = IsolationForest(random_state=42, contamination=0.01)
    forest.fit(_sketch_rows(history)[normal])
    fraud_scores = 1.0 - (forest.decision_function(_sketch_rows(held_out)) + 1.0) / 2.0
    return np.asarray(fraud_scores, dtype=np.float64), fraud_scores > SKETCH_THRESHOLD


def _sketch_rows(movements: Sequence[SimulatedMovement]) -> FloatArray:
    """The sketch's ``_extract_features`` after ``_enrich_transaction``, per account."""
    history: dict[object, list[tuple[float, float]]] = defaultdict(list)
    rows = []
    for item in movements:
        movement = item.movement
        amount = float(movement.amount)  # the sketch's own float(...) conversion
        now = movement.created_at.timestamp()
        past = history[movement.account_id]
        since_last = now - past[-1][1] if past else 0.0
        deviation = amount - sum(value for value, _ in past) / len(past) if past else 0.0
        rows.append((amount, since_last, deviation))
        if len(past) > SKETCH_HISTORY:
            past.pop(0)
        past.append((amount, now))
    return np.array(rows, dtype=np.float64)


def _figures(
    detector: str,
    pattern: str,
    patterns: Sequence[str | None],
    scores: FloatArray | None,
    flags: np.ndarray,
) -> Figures:
    if pattern == ALL:
        keep = np.ones(len(patterns), dtype=bool)
        truth = np.array([value is not None for value in patterns])
    else:
        keep = np.array([value is None or value == pattern for value in patterns])
        truth = np.array([value == pattern for value in patterns])[keep]
    flagged = flags[keep]
    auc = None
    if scores is not None and 0 < truth.sum() < len(truth):
        auc = float(roc_auc_score(truth, scores[keep]))
    return Figures(
        detector=detector,
        pattern=pattern,
        positives=int(truth.sum()),
        negatives=int((~truth).sum()),
        flagged=int(flagged.sum()),
        precision=float(precision_score(truth, flagged, zero_division=0)),
        recall=float(recall_score(truth, flagged, zero_division=0)),
        f1=float(f1_score(truth, flagged, zero_division=0)),
        roc_auc=auc,
    )
