"""The transaction processor: applies commands from ``banking.transactions.submitted``.

Every command goes through the same core as a synchronous request (``apply_command``), which
is idempotent by transaction id and reference. Business failures are final and recorded by the
core; anything raised here is technical (database down...) and goes to the retry DLQ; an
unreadable message goes straight to the permanent DLQ and never stops the consumer.
"""

from __future__ import annotations

from banking.domain.records import Command
from banking.events.commands import MalformedCommand, command_from_payload
from banking.events.outbox import EVENT_TRANSACTION_SUBMITTED
from banking.events.serialization import JSON_CONTENT_TYPE, UndecodableEvent, decode, payload_text
from banking.events.transport import Message
from banking.ledger.ports import Movements
from banking.observability import context
from banking.observability.logging import get_logger
from banking.workers.dead_letters import DeadLetters

log = get_logger(__name__)


def read_command(message: Message) -> Command:
    """Decode a command message (Arrow or JSON); MalformedCommand when it is not one."""
    event_type = message.headers.get("event_type", EVENT_TRANSACTION_SUBMITTED)
    if event_type != EVENT_TRANSACTION_SUBMITTED:
        raise MalformedCommand(f"unexpected event type {event_type!r}")
    try:
        fields = decode(
            message.value,
            content_type=message.headers.get("content_type", JSON_CONTENT_TYPE),
            event_type=event_type,
        )
    except UndecodableEvent as error:
        raise MalformedCommand(str(error)) from error
    return command_from_payload(payload_text(fields), trace_id=message.headers.get("trace_id"))


class CommandProcessor:
    def __init__(self, movements: Movements, dead_letters: DeadLetters) -> None:
        self.movements = movements
        self._dead_letters = dead_letters

    async def handle(self, message: Message) -> None:
        context.clear()
        context.bind(
            trace_id=message.headers.get("trace_id"), event_id=message.headers.get("event_id")
        )
        try:
            command = read_command(message)
        except MalformedCommand as error:
            log.error("command_unreadable", error=str(error)[:300], offset=message.offset)
            await self._dead_letters.give_up(message, error, attempts=1)
            return
        context.bind(transaction_id=str(command.transaction_id))
        try:
            outcome = await self.movements.apply_command(command)
        except Exception as error:  # noqa: BLE001 - technical: retried from the DLQ
            log.warning(
                "command_failed_technically",
                error_type=type(error).__name__,
                error=str(error)[:300],
            )
            await self._dead_letters.retry_later(message, error, attempts=1)
            return
        log.info(
            "command_applied",
            status=outcome.leg.status.value if outcome.leg else "rejected",
            already_done=outcome.already_done,
        )
