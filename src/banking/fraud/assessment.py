"""What the fraud detector reads and what it answers: the records every part of
``banking.fraud`` and its callers share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Final
from uuid import UUID

from banking.domain.records import Transaction, TransactionStatus, TransactionType

SCORE_PLACES: Final = Decimal("0.0001")


class FraudDecision(StrEnum):
    ALLOW = "allow"  # below the alert threshold
    ALERT = "alert"  # an alert on banking.fraud.alerts; the movement stands
    HOLD = "hold"  # an asynchronous command waits for a reviewer (sync movements: alert)


@dataclass(frozen=True, slots=True)
class Movement:
    """One leg as the detector sees it. Amounts stay ``Decimal``; the model's inputs are
    derived from them (logs and ratios) and never stored or returned as amounts."""

    transaction_id: UUID
    account_id: UUID
    kind: TransactionType
    amount: Decimal
    currency: str
    counterparty_account_id: UUID | None
    created_at: datetime
    status: TransactionStatus

    @classmethod
    def of_leg(cls, leg: Transaction) -> Movement:
        return cls(
            transaction_id=leg.transaction_id,
            account_id=leg.account_id,
            kind=leg.transaction_type,
            amount=leg.amount,
            currency=leg.currency,
            counterparty_account_id=leg.counterparty_account_id,
            created_at=leg.created_at,
            status=leg.status,
        )

    @property
    def is_outflow(self) -> bool:
        return self.kind in (TransactionType.DEBIT, TransactionType.TRANSFER_OUT)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """FRAUD_ALERT_THRESHOLD and FRAUD_HOLD_THRESHOLD: scores at or above them alert / hold."""

    alert: Decimal
    hold: Decimal

    def __post_init__(self) -> None:
        if not Decimal(0) <= self.alert <= self.hold <= Decimal(1):
            raise ValueError("thresholds must satisfy 0 <= alert <= hold <= 1")

    def decide(self, score: Decimal) -> FraudDecision:
        if score >= self.hold:
            return FraudDecision.HOLD
        if score >= self.alert:
            return FraudDecision.ALERT
        return FraudDecision.ALLOW


@dataclass(frozen=True, slots=True)
class Assessment:
    """A movement's fraud score in [0, 1] (four decimal places), the reasons that drove it
    (most important first, from ``REASONS``), the model version that scored it, the decision
    the thresholds give, and the feature values it was computed from (for reviewers)."""

    score: Decimal
    reasons: tuple[str, ...]
    model_version: str
    decision: FraudDecision
    features: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not Decimal(0) <= self.score <= Decimal(1):
            raise ValueError(f"a fraud score is in [0, 1], not {self.score}")
        if self.score != self.score.quantize(SCORE_PLACES):
            raise ValueError("a fraud score has at most four decimal places")

    @property
    def score_bp(self) -> int:
        """The score in ten-thousandths (how it is stored)."""
        return int(self.score * 10_000)

    @property
    def pattern(self) -> str:
        """The main reason (what alerts and holds are counted by)."""
        return self.reasons[0] if self.reasons else "model"
