"""The balance-cache invalidator: drops a cached balance when its balance event arrives."""

from __future__ import annotations

from typing import Protocol
from uuid import UUID

from banking.events.envelope import read_headers
from banking.events.outbox import EVENT_BALANCE_UPDATED
from banking.events.serialization import JSON_CONTENT_TYPE, UndecodableEvent, decode
from banking.events.transport import Message
from banking.observability.logging import get_logger

log = get_logger(__name__)


class BalanceInvalidator(Protocol):
    async def invalidate(self, account_id: UUID) -> None: ...


class BalanceCacheInvalidator:
    def __init__(self, cache: BalanceInvalidator) -> None:
        self._cache = cache

    async def handle(self, message: Message) -> None:
        headers = read_headers(message.headers)
        if (headers.event_type or EVENT_BALANCE_UPDATED) != EVENT_BALANCE_UPDATED:
            return
        try:
            fields = decode(
                message.value,
                content_type=headers.content_type or JSON_CONTENT_TYPE,
                event_type=EVENT_BALANCE_UPDATED,
                schema_version=headers.schema_version,
            )
            account_id = UUID(str(fields["account_id"]))
        except (UndecodableEvent, KeyError, ValueError) as error:
            log.warning("balance_event_unreadable", error=str(error)[:300])
            return
        await self._cache.invalidate(account_id)
