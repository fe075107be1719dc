"""The hold expiry worker: releases open holds whose ``expires_at`` has passed.

``banking worker holds`` runs it as its own process; in the embedded shape ``banking serve``
runs the same loop in-process (``workers.runtime.EmbeddedEvents``). Several of them at once
are safe: each hold is released in its own unit of work, from open to expired exactly once
(``banking.ledger.holds.HoldService.expire_due``).
"""

from __future__ import annotations

import asyncio
import contextlib

from banking.ledger.holds import EXPIRY_BATCH_MAX
from banking.ledger.ports import Holds
from banking.observability.logging import get_logger

log = get_logger(__name__)


class HoldExpiry:
    """A pass over the due holds every ``interval_seconds`` until stopped."""

    def __init__(
        self, holds: Holds, *, interval_seconds: float, batch_size: int = EXPIRY_BATCH_MAX
    ) -> None:
        self._holds = holds
        self._interval_seconds = interval_seconds
        self._batch_size = batch_size

    async def run_once(self) -> int:
        """One pass: the number of holds it expired (each pass releases at most a batch)."""
        expired = await self._holds.expire_due(limit=self._batch_size)
        if expired:
            log.info("holds_expired", count=expired)
        return expired

    async def run(self, stop: asyncio.Event) -> None:
        """Pass after pass until ``stop``; a failed pass (the database is down) is logged and
        the next one tries again. A full batch is followed at once by the next pass."""
        log.info(
            "hold_expiry_started",
            interval_seconds=self._interval_seconds,
            batch_size=self._batch_size,
        )
        while not stop.is_set():
            expired = 0
            try:
                expired = await self.run_once()
            except Exception as error:  # noqa: BLE001 - the database is down: next interval
                log.warning(
                    "hold_expiry_failed", error_type=type(error).__name__, error=str(error)[:300]
                )
            if expired >= self._batch_size:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._interval_seconds)
