"""Dead-letter topics: technical failures are retried from ``banking.transactions.dlq``;
unreadable messages and exhausted retries land in ``banking.transactions.permanent.dlq``.

A dead letter is the original message (value, key and CloudEvents headers, so it stays the
same event) plus plain headers saying why: ``original_topic``, ``attempts``, ``error_type``,
``error`` and ``failed_at``."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from banking.domain.clock import utc_now
from banking.events import registry, topics
from banking.events.envelope import read_headers, upgraded
from banking.events.transport import Message, Publisher

ERROR_TEXT_LENGTH_MAX = 500
ORIGINAL_TOPIC = "original_topic"
ATTEMPTS = "attempts"
ERROR = "error"
ERROR_TYPE = "error_type"
FAILED_AT = "failed_at"
_DLQ_HEADERS = frozenset({ORIGINAL_TOPIC, ATTEMPTS, ERROR, ERROR_TYPE, FAILED_AT})


class DeadLetterObserver(Protocol):
    def dead_lettered(self, topic: str) -> None: ...


class _Unobserved:
    def dead_lettered(self, topic: str) -> None:
        pass


class DeadLetters:
    def __init__(self, publisher: Publisher, observer: DeadLetterObserver | None = None) -> None:
        self._publisher = publisher
        self._observer: DeadLetterObserver = observer or _Unobserved()

    async def retry_later(self, message: Message, error: BaseException, *, attempts: int) -> None:
        await self._send(topics.TRANSACTIONS_DLQ, message, error, attempts)

    async def give_up(self, message: Message, error: BaseException, *, attempts: int) -> None:
        await self._send(topics.TRANSACTIONS_PERMANENT_DLQ, message, error, attempts)

    async def _send(
        self, topic: str, message: Message, error: BaseException, attempts: int
    ) -> None:
        headers = cloudevent_headers(message)
        headers.update(
            {
                ORIGINAL_TOPIC: original_topic(message),
                ATTEMPTS: str(attempts),
                ERROR_TYPE: type(error).__name__,
                ERROR: str(error)[:ERROR_TEXT_LENGTH_MAX] or type(error).__name__,
                FAILED_AT: utc_now().isoformat(),
            }
        )
        await self._publisher.publish([Message(topic, message.key, message.value, headers)])
        self._observer.dead_lettered(topic)


def original_topic(message: Message) -> str:
    return message.headers.get(ORIGINAL_TOPIC, message.topic)


def original_headers(message: Message) -> dict[str, str]:
    return {name: value for name, value in message.headers.items() if name not in _DLQ_HEADERS}


def cloudevent_headers(message: Message) -> dict[str, str]:
    """The original headers, with those of schema v1 (a message published before the upgrade)
    replaced by the CloudEvents ones: what the service publishes always carries them. A
    message from elsewhere with neither keeps what it came with."""
    headers = original_headers(message)
    read = read_headers(headers)
    if not read.legacy or read.event_type is None:
        return headers
    schema = registry.lookup(read.event_type, read.schema_version)
    return upgraded(
        headers, subject=message.key, schema=schema.schema_id if schema is not None else None
    )


def attempts_of(message: Message) -> int:
    try:
        return max(1, int(message.headers.get(ATTEMPTS, "1")))
    except ValueError:
        return 1


def failed_at_of(message: Message) -> datetime | None:
    try:
        return datetime.fromisoformat(message.headers[FAILED_AT])
    except (KeyError, ValueError):
        return None


def as_original(message: Message) -> Message:
    """The dead letter as it was first consumed (topic and headers of the original, the
    CloudEvents ones if it came with schema v1's)."""
    return Message(original_topic(message), message.key, message.value, cloudevent_headers(message))
