"""The notifications consumer: completed, failed, held and fraud events in; notifications
and webhook deliveries out, exactly once per event id.

Per event, in one database transaction: the event id is recorded in ``consumed_events``
(consumer ``notifications``; a redelivered event finds it there and changes nothing), the
account owner is looked up, and the notifications (outbox rows on ``banking.notifications``)
and the deliveries (``webhook_deliveries``) are written. An unreadable event is given up to
the permanent dead-letter topic when a ``DeadLetterSink`` is given (else ``UnreadableEvent`` is
raised for the caller to do so); a technical failure (the database) is raised, so that the
consumer retries the message and nothing is skipped.

``handle_batch`` routes several messages in one transaction (one insert into
``consumed_events`` and set-based owner, subscriber and role lookups for all of them), with
the same rows, counters and log lines per event as ``handle`` on each. Unreadable ones go to
the dead-letter topic as there; when the transaction fails for a reason that is not an outage,
the readable events are routed again one at a time, so that only the one at fault fails.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Final, Protocol
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from banking.domain.clock import utc_now
from banking.domain.roles import Role
from banking.events import outbox, topics
from banking.events.envelope import read_headers
from banking.events.serialization import JSON_CONTENT_TYPE, UndecodableEvent, decode, payload_text
from banking.events.transport import Message, handle_one_by_one
from banking.notifications import store
from banking.notifications.fanout import Event, Fanout, fan_out
from banking.notifications.model import EventType
from banking.notifications.observer import DeliveryObserver, Unobserved
from banking.observability import context
from banking.observability.logging import get_logger
from banking.storage.database import Database, is_outage
from banking.storage.tables import users

log = get_logger(__name__)

CONSUMER: Final = "notifications"
TOPICS: Final = (
    topics.TRANSACTIONS_COMPLETED,
    topics.TRANSACTIONS_FAILED,
    topics.TRANSACTIONS_HELD,
    topics.FRAUD_ALERTS,
)
# The events of those topics, as the webhook event types they are delivered as (a command
# rejected before it had a leg is a failed transaction to its owner).
WEBHOOK_TYPE_OF: Final = {
    outbox.EVENT_TRANSACTION_COMPLETED: EventType.TRANSACTION_COMPLETED,
    outbox.EVENT_TRANSACTION_FAILED: EventType.TRANSACTION_FAILED,
    outbox.EVENT_TRANSACTION_REJECTED: EventType.TRANSACTION_FAILED,
    outbox.EVENT_TRANSACTION_HELD: EventType.TRANSACTION_HELD,
    outbox.EVENT_FRAUD_ALERT: EventType.FRAUD_ALERT,
}


class UnreadableEvent(ValueError):
    """A message that is not an event this consumer knows: for the permanent DLQ."""


class DeadLetterSink(Protocol):
    """Where unreadable messages go (``workers.dead_letters.DeadLetters`` is one)."""

    async def give_up(self, message: Message, error: BaseException, *, attempts: int) -> None: ...


def read_event(message: Message) -> Event:
    """The event of a message (account owner not yet known); UnreadableEvent if it is none."""
    headers = read_headers(message.headers)
    event_type = headers.event_type
    if event_type not in WEBHOOK_TYPE_OF:
        raise UnreadableEvent(f"unexpected event type {event_type!r} on {message.topic}")
    try:
        event_id = UUID(headers.event_id or "")
    except ValueError as error:
        raise UnreadableEvent(f"event id {headers.event_id!r} is not a UUID") from error
    try:
        fields = decode(
            message.value,
            content_type=headers.content_type or JSON_CONTENT_TYPE,
            event_type=event_type,
            schema_version=headers.schema_version,
        )
    except UndecodableEvent as error:
        raise UnreadableEvent(str(error)) from error
    data = payload_text(fields)
    try:
        account_id = UUID(str(data["account_id"]))
    except (KeyError, ValueError) as error:
        raise UnreadableEvent("the event names no account") from error
    created_at = headers.time or utc_now()
    return Event(
        event_id=event_id,
        event_type=WEBHOOK_TYPE_OF[event_type].value,
        created_at=created_at,
        data=data,
        account_id=account_id,
        account_owner_id=None,
        trace_id=headers.trace_id,
    )


async def _role_of(connection: AsyncConnection, user_id: UUID) -> Role | None:
    role = (
        await connection.execute(select(users.c.role).where(users.c.user_id == user_id))
    ).scalar_one_or_none()
    return Role(role) if role is not None else None


class NotificationRouter:
    """The consumer handler (``handle``) of the ``notifications`` worker."""

    def __init__(
        self,
        database: Database,
        *,
        dead_letters: DeadLetterSink | None = None,
        observer: DeliveryObserver | None = None,
        on_routed: Callable[[], None] | None = None,
    ) -> None:
        self._database = database
        self._dead_letters = dead_letters
        self._observer: DeliveryObserver = observer or Unobserved()
        # Told after a commit that made deliveries (the embedded loop wakes up at once).
        self._on_routed = on_routed

    async def handle(self, message: Message) -> None:
        context.clear()
        headers = read_headers(message.headers)
        context.bind(trace_id=headers.trace_id, event_id=headers.event_id)
        try:
            event = read_event(message)
        except UnreadableEvent as error:
            log.error("notification_event_unreadable", error=str(error)[:300], topic=message.topic)
            if self._dead_letters is None:
                raise
            await self._dead_letters.give_up(message, error, attempts=1)
            return
        await self.route(event)

    async def route_message(self, message: Message) -> bool:
        """``route`` the message's event (UnreadableEvent when it is none)."""
        return await self.route(read_event(message))

    async def route(self, event: Event) -> bool:
        """Notify about one event, once; False when it had been routed before."""

        async def work(connection: AsyncConnection) -> tuple[bool, Any]:
            now = utc_now()
            if not await store.mark_consumed(connection, CONSUMER, event.event_id, now):
                return False, None
            owner_id = (
                await store.account_owner(connection, event.account_id)
                if event.account_id is not None
                else None
            )
            owned = replace(event, account_owner_id=owner_id)
            subscribers = await store.subscribers(connection, account_owner_id=owner_id)
            owner_role = await _role_of(connection, owner_id) if owner_id is not None else None
            fanout = fan_out(owned, subscribers, owner_role=owner_role, now=now)
            await store.add_outbox_rows(connection, fanout.outbox_rows)
            await store.add_deliveries(connection, fanout.delivery_rows)
            return True, fanout

        routed, fanout = await self._database.run_in_transaction(work)
        if not routed:
            log.info("notification_event_already_routed", event_type=event.event_type)
            return False
        self._routed(event, fanout)
        if fanout.delivery_rows and self._on_routed is not None:
            self._on_routed()
        return True

    async def handle_batch(self, messages: Sequence[Message]) -> None:
        """``handle`` each of ``messages`` (in order), the readable ones in one transaction."""
        events: list[tuple[Message, Event]] = []
        unsent: UnreadableEvent | None = None  # no sink: raised once the others are routed
        for message in messages:
            self._bind(message)
            try:
                events.append((message, read_event(message)))
            except UnreadableEvent as error:
                log.error(
                    "notification_event_unreadable", error=str(error)[:300], topic=message.topic
                )
                if self._dead_letters is None:
                    unsent = unsent or error
                    continue
                await self._dead_letters.give_up(message, error, attempts=1)
        context.clear()
        if events:
            await self._route_batch(events)
        if unsent is not None:
            raise unsent

    async def _route_batch(self, events: Sequence[tuple[Message, Event]]) -> None:
        """Route readable events in one transaction; one at a time if it fails."""
        try:
            outcomes = await self._database.run_in_transaction(
                lambda connection: self._route_all(connection, [event for _, event in events])
            )
        except Exception as error:
            if is_outage(error):
                raise
            log.warning(
                "notification_batch_routed_one_by_one",
                events=len(events),
                error_type=type(error).__name__,
                error=str(error)[:300],
            )
            await handle_one_by_one(
                lambda pair: self._route_bound(*pair), events, raise_at_once=is_outage
            )
            return
        delivered = False
        for (message, event), fanout in zip(events, outcomes, strict=True):
            self._bind(message)
            if fanout is None:
                log.info("notification_event_already_routed", event_type=event.event_type)
                continue
            self._routed(event, fanout)
            delivered = delivered or bool(fanout.delivery_rows)
        context.clear()
        if delivered and self._on_routed is not None:
            self._on_routed()

    async def _route_all(
        self, connection: AsyncConnection, events: Sequence[Event]
    ) -> list[Fanout | None]:
        """``route``'s transaction for several events: per event its fanout, None when it
        had been routed before (or earlier in ``events``)."""
        now = utc_now()
        fresh = await store.mark_consumed_many(
            connection, CONSUMER, [event.event_id for event in events], now
        )
        new: list[int] = []  # positions in ``events`` of the events routed now
        for position, event in enumerate(events):
            if event.event_id in fresh:
                fresh.discard(event.event_id)  # a second copy in the batch is a redelivery
                new.append(position)
        account_ids = {account_id for p in new if (account_id := events[p].account_id) is not None}
        owners = await store.account_owners(connection, account_ids)
        owner_ids = set(owners.values())
        everyone = await store.subscribers_of_owners(connection, owner_ids)
        roles = await store.roles_of(connection, owner_ids)
        fanouts: list[Fanout | None] = [None] * len(events)
        outbox_rows: list[dict[str, Any]] = []
        delivery_rows: list[dict[str, Any]] = []
        for position in new:
            event = events[position]
            owner_id = owners.get(event.account_id) if event.account_id is not None else None
            subscribers = [s for s in everyone if store.visible_to(s, owner_id)]
            owner_role = roles.get(owner_id) if owner_id is not None else None
            fanout = fan_out(
                replace(event, account_owner_id=owner_id),
                subscribers,
                owner_role=owner_role,
                now=now,
            )
            fanouts[position] = fanout
            outbox_rows.extend(fanout.outbox_rows)
            delivery_rows.extend(fanout.delivery_rows)
        await store.add_outbox_rows(connection, outbox_rows)
        await store.add_deliveries(connection, delivery_rows)
        return fanouts

    async def _route_bound(self, message: Message, event: Event) -> bool:
        self._bind(message)
        try:
            return await self.route(event)
        finally:
            context.clear()

    @staticmethod
    def _bind(message: Message) -> None:
        context.clear()
        headers = read_headers(message.headers)
        context.bind(trace_id=headers.trace_id, event_id=headers.event_id)

    def _routed(self, event: Event, fanout: Fanout) -> None:
        """Count and log one routed event (after its transaction committed)."""
        for _ in fanout.notifications:
            self._observer.notification_published(event.event_type)
        log.info(
            "notification_event_routed",
            event_type=event.event_type,
            notifications=len(fanout.notifications),
            deliveries=len(fanout.delivery_rows),
        )
