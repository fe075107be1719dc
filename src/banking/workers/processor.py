"""The transaction processor: applies commands from ``banking.transactions.submitted``.

Every command goes through the same core as a synchronous request (``apply_command``), which
is idempotent by transaction id and reference. Business failures are final and recorded by the
core; anything raised here is technical and goes to the retry DLQ; an unreadable message goes
straight to the permanent DLQ and never stops the consumer. A database outage
(``storage.database.is_outage``: restarting, refusing connections) is first waited out in place,
with backoff, for up to ``OUTAGE_WAIT_SECONDS_MAX`` (the consumer pauses, so the account's
commands keep their order), and only then handed to the retry DLQ; it is never a business
failure. A command without a valid signature (``events.signing``: missing, unknown key, bad
signature) is refused before anything else: straight to the permanent DLQ, counted
(``banking_commands_refused_total``), nothing applied.
"""

from __future__ import annotations

import asyncio
import random
from typing import Final, Protocol

from banking.domain.records import Command, CommandOutcome, FraudScore
from banking.events.commands import MalformedCommand, command_from_payload
from banking.events.envelope import read_headers
from banking.events.outbox import EVENT_TRANSACTION_SUBMITTED
from banking.events.serialization import JSON_CONTENT_TYPE, UndecodableEvent, decode, payload_text
from banking.events.signing import (
    CommandKeyring,
    RefusalReason,
    UnauthenticatedCommand,
    development_keyring,
)
from banking.events.transport import Message
from banking.ledger.ports import Movements
from banking.observability import context
from banking.observability.logging import get_logger
from banking.storage.database import is_outage
from banking.workers.dead_letters import DeadLetters

log = get_logger(__name__)

# Waiting out a database outage in place: well below Kafka's max.poll.interval (5 minutes),
# long enough for a restart. Backoff with full jitter between attempts.
OUTAGE_WAIT_SECONDS_MAX: Final = 10.0
OUTAGE_BACKOFF_SECONDS: Final = 0.2
OUTAGE_BACKOFF_SECONDS_MAX: Final = 2.0


def read_command(message: Message) -> Command:
    """Decode a command message (Arrow or JSON, CloudEvents or schema v1 headers; a message
    with no headers at all is taken as a JSON command); MalformedCommand when it is not one."""
    headers = read_headers(message.headers)
    event_type = headers.event_type or EVENT_TRANSACTION_SUBMITTED
    if event_type != EVENT_TRANSACTION_SUBMITTED:
        raise MalformedCommand(f"unexpected event type {event_type!r}")
    try:
        fields = decode(
            message.value,
            content_type=headers.content_type or JSON_CONTENT_TYPE,
            event_type=event_type,
            schema_version=headers.schema_version,
        )
    except UndecodableEvent as error:
        raise MalformedCommand(str(error)) from error
    return command_from_payload(payload_text(fields), trace_id=headers.trace_id)


async def apply_waiting_out_outages(
    movements: Movements, command: Command, *, wait_seconds_max: float
) -> CommandOutcome:
    """``apply_command``, again with backoff while the database is unavailable, for at most
    ``wait_seconds_max``; then the outage is raised. Safe to repeat: a command is applied once
    by its transaction id and reference."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds_max
    attempt = 0
    while True:
        try:
            return await movements.apply_command(command)
        except Exception as error:
            remaining_seconds = deadline - loop.time()
            if not is_outage(error) or remaining_seconds <= 0:
                raise
            attempt += 1
            ceiling = min(OUTAGE_BACKOFF_SECONDS_MAX, OUTAGE_BACKOFF_SECONDS * 2**attempt)
            delay = min(remaining_seconds, random.uniform(0, ceiling))  # noqa: S311 - jitter
            log.warning(
                "command_waiting_for_database",
                attempt=attempt,
                error_type=type(error).__name__,
                retry_in_seconds=round(delay, 3),
            )
            await asyncio.sleep(delay)


class Screening(Protocol):
    async def hold_for(self, command: Command) -> FraudScore | None: ...
    async def queue_changed(self) -> None: ...


class RefusalObserver(Protocol):
    def command_refused(self, reason: RefusalReason) -> None: ...


class _Unobserved:
    def command_refused(self, reason: RefusalReason) -> None:
        pass


class CommandProcessor:
    def __init__(
        self,
        movements: Movements,
        dead_letters: DeadLetters,
        *,
        outage_wait_seconds_max: float = OUTAGE_WAIT_SECONDS_MAX,
        keyring: CommandKeyring | None = None,
        observer: RefusalObserver | None = None,
        screening: Screening | None = None,
    ) -> None:
        self.movements = movements
        # The fraud detector's say before a command is applied (``workers.fraud``).
        self.screening = screening
        self._dead_letters = dead_letters
        self.outage_wait_seconds_max = outage_wait_seconds_max
        # Without a keyring only commands signed with the development key are applied.
        self.keyring = keyring or development_keyring()
        self._observer: RefusalObserver = observer or _Unobserved()

    async def authenticated(self, message: Message, *, attempts: int) -> bool:
        """Whether the command is signed by a known key; if not it is refused: sent to the
        permanent DLQ with the reason, counted, and not applied."""
        try:
            self.keyring.verify(message)
        except UnauthenticatedCommand as error:
            log.error(
                "command_refused",
                reason=error.reason,
                kid=message.headers.get("ce_signaturekid", "")[:64],
                offset=message.offset,
            )
            self._observer.command_refused(error.reason)
            await self._dead_letters.give_up(message, error, attempts=attempts)
            return False
        return True

    async def apply(self, command: Command) -> CommandOutcome:
        """Apply one command, waiting out a database outage (bounded), unless the fraud
        detector holds it for review. A screening that fails for another reason than an
        outage is logged and the command applied (the movement is still scored, and alerted
        on, after commit)."""
        if self.screening is not None:
            held = await self._screen(command)
            if held is not None:
                return held
        return await apply_waiting_out_outages(
            self.movements, command, wait_seconds_max=self.outage_wait_seconds_max
        )

    async def _screen(self, command: Command) -> CommandOutcome | None:
        if self.screening is None:
            return None
        try:
            score = await self.screening.hold_for(command)
        except Exception as error:
            if is_outage(error):
                raise
            log.error("fraud_screening_failed", error_type=type(error).__name__)
            return None
        if score is None:
            return None
        outcome = await self.movements.hold_command(command, score)
        if outcome.held:
            await self.screening.queue_changed()
        return outcome

    async def handle(self, message: Message) -> None:
        context.clear()
        headers = read_headers(message.headers)
        context.bind(trace_id=headers.trace_id, event_id=headers.event_id)
        if not await self.authenticated(message, attempts=1):
            return
        try:
            command = read_command(message)
        except MalformedCommand as error:
            log.error("command_unreadable", error=str(error)[:300], offset=message.offset)
            await self._dead_letters.give_up(message, error, attempts=1)
            return
        context.bind(transaction_id=str(command.transaction_id))
        try:
            outcome = await self.apply(command)
        except Exception as error:  # noqa: BLE001 - technical: retried from the DLQ
            log.warning(
                "command_failed_technically",
                error_type=type(error).__name__,
                error=str(error)[:300],
                database_unavailable=is_outage(error),
            )
            await self._dead_letters.retry_later(message, error, attempts=1)
            return
        log.info(
            "command_held" if outcome.held else "command_applied",
            status=outcome.leg.status.value if outcome.leg else "rejected",
            already_done=outcome.already_done,
        )
