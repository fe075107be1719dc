"""Training: replay movements into feature rows, fit the forest on normal behaviour, and
calibrate it.

What labels change. The forest itself learns only what normal looks like: it is fitted on every
row *not* confirmed as fraud (released and unlabelled rows are normal behaviour). Labels choose
the calibration: with at least ``MIN_FRAUD_LABELS`` rows confirmed as fraud, ``train`` tries
each anchor quantile of ``ANCHOR_QUANTILES`` (how far out among normal rows a score reaches the
alert threshold) and each model weight of ``MODEL_WEIGHTS`` (how much of the combined score the
model may take), and keeps the pair whose combined score has the best F1 at the alert threshold,
counting confirmed fraud as positive and every other row as negative. Without enough labels the
defaults (``DEFAULT_ANCHOR_QUANTILE``, ``DEFAULT_MODEL_WEIGHT``) stand. Unlabelled fraud in
the history is learnt as normal: train on a history believed clean, or label what reviewers
confirmed (the rules do not depend on training).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from uuid import UUID

import numpy as np
from sklearn.ensemble import IsolationForest

from banking.domain.clock import utc_now
from banking.fraud import rules
from banking.fraud.assessment import Movement
from banking.fraud.features import FeatureBook, Features
from banking.fraud.model import (
    ANCHOR_SCORE,
    MODEL_FEATURES,
    Calibration,
    FloatArray,
    TrainedModel,
)
from banking.fraud.simulate import simulate

N_ESTIMATORS: Final = 100
MAX_SAMPLES: Final = 256
MIN_NORMAL_ROWS: Final = 50
MIN_FRAUD_LABELS: Final = 20
ANCHOR_QUANTILES: Final = (0.99, 0.995, 0.998, 0.999, 0.9995)
MODEL_WEIGHTS: Final = (0.25, 0.5, 0.75, 1.0)
DEFAULT_ANCHOR_QUANTILE: Final = 0.998  # what labelled simulations pick
DEFAULT_MODEL_WEIGHT: Final = 0.5
ALERT_THRESHOLD: Final = 0.70


@dataclass(frozen=True, slots=True)
class TrainingRow:
    """One movement's features and its label: True confirmed fraud, False released by a
    reviewer, None unlabelled."""

    transaction_id: UUID
    features: Features
    label: bool | None


def training_rows(
    movements: Iterable[Movement], labels: Mapping[UUID, bool] | None = None
) -> Iterator[TrainingRow]:
    """Replay ``movements`` (oldest first) through a fresh ``FeatureBook``: each row has the
    features its movement had when it happened."""
    known = labels or {}
    book = FeatureBook()
    for movement in movements:
        features = book.features(movement)
        book.observe(movement)
        yield TrainingRow(movement.transaction_id, features, known.get(movement.transaction_id))


def train(
    rows: Iterable[TrainingRow],
    *,
    seed: int,
    n_estimators: int = N_ESTIMATORS,
    max_samples: int = MAX_SAMPLES,
    alert_threshold: float = ALERT_THRESHOLD,
    trained_at: datetime | None = None,
) -> TrainedModel:
    """Fit the forest on the rows not confirmed as fraud and calibrate it (module docstring)."""
    all_rows = list(rows)
    normal = [row for row in all_rows if row.label is not True]
    if len(normal) < MIN_NORMAL_ROWS:
        raise ValueError(f"training needs at least {MIN_NORMAL_ROWS} normal rows")
    forest = IsolationForest(
        n_estimators=n_estimators,
        max_samples=min(max_samples, len(normal)),
        contamination="auto",
        random_state=seed,
    )
    forest.fit(_matrix([row.features for row in normal]))
    raw = np.asarray(-forest.score_samples(_matrix([row.features for row in all_rows])))
    fraud = np.array([row.label is True for row in all_rows])
    raw_normal = raw[~fraud]
    center = float(np.median(raw_normal))
    rule_scores = np.array([rules.score(row.features) for row in all_rows])
    labelled = int(fraud.sum()) >= MIN_FRAUD_LABELS
    quantile, weight = DEFAULT_ANCHOR_QUANTILE, DEFAULT_MODEL_WEIGHT
    if labelled:
        quantile, weight = _best_calibration(
            raw, raw_normal, center, rule_scores, fraud, alert_threshold
        )
    calibration = Calibration(
        center=center,
        anchor=float(np.quantile(raw_normal, quantile)),
        anchor_quantile=quantile,
        weight=weight,
        labelled=labelled,
    )
    return TrainedModel(
        forest=forest,
        feature_names=MODEL_FEATURES,
        calibration=calibration,
        trained_at=(trained_at or utc_now()).replace(microsecond=0),
        training={
            "rows": len(all_rows),
            "normal_rows": len(normal),
            "fraud_labels": int(fraud.sum()),
            "released_labels": sum(1 for row in all_rows if row.label is False),
            "seed": seed,
        },
    )


def train_on_simulation(
    seed: int,
    *,
    customers: int = 200,
    days: int = 30,
    n_estimators: int = N_ESTIMATORS,
    trained_at: datetime | None = None,
) -> TrainedModel:
    """A model for a fresh install with no history: trained on a seeded simulation, its fraud
    patterns serving as the labels."""
    simulated = simulate(seed, customers, days)
    labels = {item.movement.transaction_id: item.is_fraud for item in simulated}
    rows = training_rows((item.movement for item in simulated), labels)
    return train(rows, seed=seed, n_estimators=n_estimators, trained_at=trained_at)


def _matrix(rows: Sequence[Features]) -> FloatArray:
    return np.array([features.vector(MODEL_FEATURES) for features in rows], dtype=np.float64)


def _best_calibration(
    raw: FloatArray,
    raw_normal: FloatArray,
    center: float,
    rule_scores: FloatArray,
    fraud: np.ndarray,
    alert_threshold: float,
) -> tuple[float, float]:
    best: tuple[float, float, float] | None = None  # (f1, quantile, weight)
    for quantile in ANCHOR_QUANTILES:
        anchor = float(np.quantile(raw_normal, quantile))
        span = anchor - center
        if span <= 0:
            continue
        model_scores = np.clip(ANCHOR_SCORE * (raw - center) / span, 0.0, 1.0)
        for weight in MODEL_WEIGHTS:
            combined = 1.0 - (1.0 - rule_scores) * (1.0 - weight * model_scores)
            f1 = _f1(fraud, combined >= alert_threshold)
            if best is None or f1 > best[0]:
                best = (f1, quantile, weight)
    if best is None:
        return DEFAULT_ANCHOR_QUANTILE, DEFAULT_MODEL_WEIGHT
    return best[1], best[2]


def _f1(truth: np.ndarray, flagged: np.ndarray) -> float:
    true_positives = float(np.sum(truth & flagged))
    if true_positives == 0:
        return 0.0
    precision = true_positives / float(np.sum(flagged))
    recall = true_positives / float(np.sum(truth))
    return 2 * precision * recall / (precision + recall)
