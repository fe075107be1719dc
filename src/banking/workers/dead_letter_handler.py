"""The DLQ handler: retries technical failures with exponential backoff, at most
``retries_max`` times, then parks the command in the permanent DLQ with the last error.

A database outage (``storage.database.is_outage``) is not the command's failure: it is waited
out in place like the processor does, and if the database is still unavailable the command goes
back to the retry DLQ with its attempts unchanged, so an outage never spends a retry and never
parks a command in the permanent DLQ. A retried command is authenticated again
(``CommandProcessor.authenticated``): the retry topic is no way around the signature.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from banking.events.commands import MalformedCommand
from banking.events.envelope import read_headers
from banking.events.transport import Message
from banking.observability import context
from banking.observability.logging import get_logger
from banking.storage.database import is_outage
from banking.workers.dead_letters import (
    DeadLetters,
    as_original,
    attempts_of,
    failed_at_of,
)
from banking.workers.processor import CommandProcessor, read_command

log = get_logger(__name__)

BACKOFF_SECONDS_MAX = 60.0


class DeadLetterHandler:
    def __init__(
        self,
        processor: CommandProcessor,
        dead_letters: DeadLetters,
        *,
        retries_max: int = 3,
        backoff_base_seconds: float = 1.0,
    ) -> None:
        self._processor = processor
        self._dead_letters = dead_letters
        self.retries_max = retries_max
        self._backoff_base_seconds = backoff_base_seconds

    def backoff_seconds(self, attempts: int) -> float:
        return float(min(BACKOFF_SECONDS_MAX, self._backoff_base_seconds * 2 ** (attempts - 1)))

    async def handle(self, message: Message) -> None:
        attempts = attempts_of(message)
        original = as_original(message)
        context.clear()
        headers = read_headers(original.headers)
        context.bind(trace_id=headers.trace_id, event_id=headers.event_id)
        await self._wait_backoff(message, attempts)
        if not await self._processor.authenticated(original, attempts=attempts):
            return
        try:
            command = read_command(original)
        except MalformedCommand as error:
            await self._dead_letters.give_up(original, error, attempts=attempts)
            return
        try:
            await self._processor.apply(command)
        except Exception as error:  # noqa: BLE001 - technical failure again
            if is_outage(error):
                log.warning(
                    "command_retry_deferred",
                    attempts=attempts,
                    reason="database unavailable",
                    error_type=type(error).__name__,
                )
                await self._dead_letters.retry_later(original, error, attempts=attempts)
                return
            attempts += 1
            retries_done = attempts - 1
            log.warning(
                "command_retry_failed",
                attempts=attempts,
                error_type=type(error).__name__,
                error=str(error)[:300],
            )
            if retries_done >= self.retries_max:
                await self._dead_letters.give_up(original, error, attempts=attempts)
            else:
                await self._dead_letters.retry_later(original, error, attempts=attempts)
            return
        log.info("command_retry_succeeded", attempts=attempts + 1)

    async def _wait_backoff(self, message: Message, attempts: int) -> None:
        failed_at = failed_at_of(message) or datetime.now(UTC)
        elapsed = (datetime.now(UTC) - failed_at).total_seconds()
        delay = self.backoff_seconds(attempts) - elapsed
        if delay > 0:
            await asyncio.sleep(min(delay, BACKOFF_SECONDS_MAX))
