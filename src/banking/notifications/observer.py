"""What the notification service tells its metrics (``observability.metrics.Metrics`` has
these methods; tests and tools may pass nothing)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class DeliveryObserver(Protocol):
    def notification_published(self, event_type: str) -> None:
        """A notification for one user was written (published by the relay)."""

    def webhook_delivery(self, result: str, seconds: float | None) -> None:
        """One attempt's result: ``succeeded``, ``retrying``, ``failed`` (given up) or
        ``refused`` (the target is not allowed any more); ``seconds`` from the event's commit
        to the receiver's 2xx, for ``succeeded``."""

    def webhook_backlog(self, pending_retries: int) -> None:
        """Deliveries waiting for a retry."""

    def webhook_disabled(self) -> None:
        """A webhook was disabled after failing too often."""


class Unobserved:
    def notification_published(self, event_type: str) -> None:
        pass

    def webhook_delivery(self, result: str, seconds: float | None) -> None:
        pass

    def webhook_backlog(self, pending_retries: int) -> None:
        pass

    def webhook_disabled(self) -> None:
        pass
