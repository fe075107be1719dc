"""The rules: named, explainable signals on a movement's features, each with a strength in
[0, 1]. The rule score is their noisy-OR, ``1 - prod(1 - strength)``: one strong rule is
enough to alert, weak ones (a new counterparty, the night) only count together.

Strengths are set against the default thresholds (alert 0.70, hold 0.90): a pattern seen
clearly (card testing, structuring, fan-in then fan-out) holds on its own; a large transfer
alone does not alert, but a large transfer to a new counterparty at night after a quiet period
(an account takeover) does.
"""

from __future__ import annotations

import math
from typing import Final

from banking.fraud.features import Features

REASONS: Final = (
    "card_testing",
    "structuring",
    "fan_in",
    "fan_out",
    "velocity_1m",
    "velocity_1h",
    "declines_1h",
    "amount_vs_mean",
    "quiet_period",
    "new_counterparty",
    "night_time",
    "model_anomaly",
)

LARGE_AMOUNT_LOG: Final = math.log10(1 + 250.0)  # "large" for the amount-vs-mean rule
FAN_AMOUNT_LOG: Final = math.log10(1 + 150.0)  # a mule's transfers are not pocket money
QUIET_SECONDS: Final = 2 * 86_400.0

Signal = tuple[str, float]


def signals(features: Features) -> list[Signal]:
    """The rules that fire on ``features``, as (reason, strength), strongest first."""
    found: list[Signal] = []
    f = features
    outflow = f.is_outflow == 1.0
    transfer = f.is_transfer == 1.0
    new_counterparty = f.new_counterparty == 1.0

    if outflow and f.is_tiny == 1.0:
        if f.tiny_outflows_1h >= 2:
            found.append(("card_testing", 0.95))
        elif f.tiny_outflows_1h >= 1 and f.count_1m >= 1:
            found.append(("card_testing", 0.85))

    if f.near_threshold == 1.0:
        if f.near_threshold_7d >= 2:
            found.append(("structuring", 0.95))
        elif f.near_threshold_7d >= 1:
            found.append(("structuring", 0.85))
        else:
            found.append(("structuring", 0.6))

    sizeable = f.amount_log >= FAN_AMOUNT_LOG
    if transfer and not outflow and new_counterparty and sizeable:
        if f.counterparties_in_24h >= 4:
            found.append(("fan_in", 0.9))
        elif f.counterparties_in_24h >= 3:
            found.append(("fan_in", 0.8))
        elif f.counterparties_in_24h >= 2:
            found.append(("fan_in", 0.55))

    if transfer and outflow and new_counterparty and sizeable:
        if f.counterparties_in_24h >= 3:
            found.append(("fan_out", 0.95))
        elif f.counterparties_out_24h >= 3:
            found.append(("fan_out", 0.5))

    if f.count_1m >= 5:
        found.append(("velocity_1m", 0.85))
    elif f.count_1m >= 3:
        found.append(("velocity_1m", 0.5))

    if f.count_1h >= 20:
        found.append(("velocity_1h", 0.7))
    elif f.count_1h >= 10:
        found.append(("velocity_1h", 0.4))

    if f.declines_1h >= 3:
        found.append(("declines_1h", 0.8))
    elif f.declines_1h >= 2:
        found.append(("declines_1h", 0.45))

    large = f.amount_log >= LARGE_AMOUNT_LOG
    if outflow and large and f.history_count >= 1:
        if f.zscore >= 5:
            found.append(("amount_vs_mean", 0.5))
        elif f.zscore >= 3:
            found.append(("amount_vs_mean", 0.35))

    if outflow and large and f.seconds_since_last >= QUIET_SECONDS:
        found.append(("quiet_period", 0.3))

    if transfer and new_counterparty:
        found.append(("new_counterparty", 0.2 if outflow else 0.1))

    if transfer and outflow and f.night == 1.0:
        found.append(("night_time", 0.3))

    found.sort(key=lambda signal: -signal[1])
    return found


def combine(strengths: list[float]) -> float:
    """The noisy-OR of independent signals: ``1 - prod(1 - s)``."""
    remaining = 1.0
    for strength in strengths:
        remaining *= 1.0 - strength
    return 1.0 - remaining


def score(features: Features) -> float:
    """The rules' score of ``features`` in [0, 1]."""
    return combine([strength for _, strength in signals(features)])
