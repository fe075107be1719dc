"""The detector: a movement's features in, one ``Assessment`` out.

``combined`` (the default): ``1 - (1 - rules) * (1 - weight * model)``, where ``rules`` is the
noisy-OR of the rules that fired (``rules.py``) and ``model`` the calibrated anomaly score of
the current ``IsolationForest`` (``model.py``); with no model file the score is the rules'
alone and ``model_version`` is ``"rules-only"``. ``rules`` and ``model`` score with one part
alone (for ``banking fraud evaluate``). Reasons come from ``REASONS``, strongest first; the
model's own contribution is the reason ``model_anomaly`` once it weighs ``MODEL_REASON_MIN``.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Final

from banking.fraud import rules
from banking.fraud.assessment import SCORE_PLACES, Assessment, Thresholds
from banking.fraud.features import Features
from banking.fraud.model import Models, TrainedModel
from banking.fraud.rules import REASONS

__all__ = ["REASONS", "RULES_ONLY", "Detector", "DetectorKind"]

RULES_ONLY: Final = "rules-only"
MODEL_REASON_MIN: Final = 0.3
REASON_MIN: Final = 0.1


class DetectorKind(StrEnum):
    COMBINED = "combined"
    RULES = "rules"
    MODEL = "model"


class Detector:
    """Scores movements with the rules and the current model of ``models``."""

    def __init__(
        self,
        models: Models | None,
        thresholds: Thresholds,
        kind: DetectorKind = DetectorKind.COMBINED,
    ) -> None:
        self._models = models
        self._thresholds = thresholds
        self._kind = DetectorKind(kind)

    @property
    def kind(self) -> DetectorKind:
        return self._kind

    @property
    def thresholds(self) -> Thresholds:
        return self._thresholds

    def variant(self, kind: DetectorKind | str) -> Detector:
        """The same models and thresholds, scoring with the rules alone, the model alone, or
        both."""
        return Detector(self._models, self._thresholds, DetectorKind(kind))

    def model(self) -> TrainedModel | None:
        return None if self._models is None else self._models.current()

    def assess(self, features: Features) -> Assessment:
        """The score, reasons, model version and decision for one movement's features."""
        model = self.model()
        value, reasons = self.raw(features, model)
        score = _quantized(value)
        return Assessment(
            score=score,
            reasons=reasons,
            model_version=RULES_ONLY if model is None else model.version,
            decision=self._thresholds.decide(score),
            features=features.as_dict(),
        )

    def raw(
        self, features: Features, model: TrainedModel | None = None
    ) -> tuple[float, tuple[str, ...]]:
        """The unquantized score and the reasons (``assess`` without the record)."""
        signals = [] if self._kind is DetectorKind.MODEL else rules.signals(features)
        strengths = [strength for _, strength in signals]
        if model is not None and self._kind is not DetectorKind.RULES:
            model_score = model.model_score(features)
            if self._kind is DetectorKind.MODEL:
                contribution = model_score
            else:
                contribution = model.calibration.weight * model_score
            strengths.append(contribution)
            if contribution >= MODEL_REASON_MIN:
                signals.append(("model_anomaly", contribution))
                signals.sort(key=lambda signal: -signal[1])
        value = rules.combine(strengths)
        reasons = tuple(reason for reason, strength in signals if strength >= REASON_MIN)
        return value, reasons


def _quantized(value: float) -> Decimal:
    """A float score as a ``Decimal`` in [0, 1] with four places."""
    clipped = min(1.0, max(0.0, value))
    return Decimal(clipped).quantize(SCORE_PLACES, rounding=ROUND_HALF_UP)
