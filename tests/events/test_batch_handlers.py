"""The consumers' batch path (``handle_batch``): the in-process bus gives the audit recorder,
the notification router and the fraud worker each relay batch at once, and each records it in
one transaction with the same outcome per event as its per-message path: recorded once,
redeliveries counted as duplicates, a poison message sent where it is sent today while the
others are recorded. Real SQLite and PostgreSQL; commits are counted on the engine."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import DBAPIError

from banking.audit import store as audit_store
from banking.audit.consumer import AuditRecorder
from banking.audit.records import SYSTEM, read_message, with_actor
from banking.domain.clock import utc_now
from banking.domain.roles import Role
from banking.events import topics
from banking.events.relay import message_of
from banking.events.serialization import EventFormat
from banking.events.transport import InProcessBus, Message
from banking.notifications.routing import TOPICS as NOTIFICATION_TOPICS
from banking.notifications.routing import NotificationRouter, UnreadableEvent
from banking.storage import repositories as repo
from banking.storage.database import Database
from banking.storage.tables import (
    audit_records,
    consumed_events,
    fraud_scores,
    outbox,
    transactions,
    webhook_deliveries,
)
from banking.workers.dead_letters import DeadLetters
from banking.workers.fraud import FraudWorker, build_detector
from banking.workers.runtime import CONSUMER_GROUPS, EmbeddedEvents
from tests.conftest import Bank, make_settings, running_bank

WEBHOOK_SETTINGS: dict[str, Any] = {"webhook_allowed_networks": ["127.0.0.1/32"]}
FRAUD_TOPICS = CONSUMER_GROUPS["fraud"][1]
AUDIT_TOPICS = CONSUMER_GROUPS["audit"][1]
SETTLE_SECONDS_MAX = 60.0


@pytest.fixture
async def bank(database_url: str) -> AsyncIterator[Bank]:
    """A bank whose webhooks may point at 127.0.0.1 (no event side running)."""
    async with running_bank(make_settings(database_url, **WEBHOOK_SETTINGS)) as running:
        yield running


@contextmanager
def counting_commits(database: Database) -> Iterator[list[int]]:
    """A one-item list holding the number of commits on the engine while the block runs."""
    commits = [0]

    def on_commit(_connection: Any) -> None:
        commits[0] += 1

    engine = database.engine.sync_engine
    event.listen(engine, "commit", on_commit)
    try:
        yield commits
    finally:
        event.remove(engine, "commit", on_commit)


@dataclass
class Counted:
    """Every observer call of the three consumers, by name and first argument."""

    calls: Counter[tuple[str, str]] = field(default_factory=Counter)

    def audit_recorded(self, topic: str) -> None:
        self.calls["audit_recorded", topic] += 1

    def audit_duplicate(self, topic: str) -> None:
        self.calls["audit_duplicate", topic] += 1

    def notification_published(self, event_type: str) -> None:
        self.calls["notification_published", event_type] += 1

    def fraud_scored(self, score: Decimal, seconds: float) -> None:
        self.calls["fraud_scored", ""] += 1

    def fraud_alerted(self, pattern: str) -> None:
        self.calls["fraud_alerted", ""] += 1

    def fraud_held(self, pattern: str) -> None:
        self.calls["fraud_held", ""] += 1

    def fraud_model_loaded(self, version: str) -> None:
        pass

    def fraud_review_queue(self, held: int) -> None:
        pass

    def total(self, name: str) -> int:
        return sum(count for (called, _), count in self.calls.items() if called == name)


@dataclass
class DeadLetterBox:
    """A bus whose permanent dead-letter topic is kept in a list."""

    bus: InProcessBus = field(default_factory=InProcessBus)
    dead: list[Message] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.bus.subscribe(topics.TRANSACTIONS_PERMANENT_DLQ, self._keep)

    async def _keep(self, message: Message) -> None:
        self.dead.append(message)

    def letters(self) -> DeadLetters:
        return DeadLetters(self.bus)


async def make_activity(bank: Bank) -> dict[str, Any]:
    """Users, webhooks and movements of every kind: completed, declined (failed), a transfer.
    Nothing is published (no relay runs): the events wait in the outbox."""
    teller_id, teller = await bank.user(Role.TELLER)
    alice_id, alice = await bank.user(Role.CUSTOMER)
    bob_id, bob = await bank.user(Role.CUSTOMER)
    _, auditor = await bank.user(Role.AUDITOR)
    for headers, types in (
        (alice, ["transaction.completed", "transaction.failed"]),
        (auditor, ["transaction.completed"]),
    ):
        response = await bank.client.post(
            "/api/v1/webhooks",
            json={"url": "http://127.0.0.1:9/hook", "event_types": types},
            headers=headers,
        )
        assert response.status_code == 201, response.text
    alice_account = await bank.account(alice_id, teller, funded="100.00")
    bob_account = await bank.account(bob_id, teller, funded="50.00")
    for account, headers, amount in (
        (alice_account, alice, "10.00"),
        (alice_account, alice, "5000.00"),  # declined: a failed leg, a transaction.failed
        (bob_account, bob, "7.50"),
    ):
        response = await bank.client.post(
            "/api/v1/transactions/debit",
            json={"account_id": account, "amount": amount, "currency": "USD"},
            headers=headers,
        )
        assert response.status_code in (200, 422), response.text
    response = await bank.client.post(
        "/api/v1/transactions/transfer",
        json={
            "source_account_id": alice_account,
            "destination_account_id": bob_account,
            "amount": "20.00",
            "currency": "USD",
        },
        headers=alice,
    )
    assert response.status_code == 200, response.text
    return {"teller_id": teller_id, "alice_id": alice_id, "bob_id": bob_id}


async def outbox_messages(bank: Bank) -> list[Message]:
    """The unpublished outbox rows as the embedded relay passes them (JSON), in order."""
    async with bank.container.database.read() as connection:
        rows = await repo.fetch_unpublished(connection, 500)
    return [message_of(row, EventFormat.JSON) for row in rows]


async def count_rows(bank: Bank) -> dict[str, int]:
    found = {}
    async with bank.container.database.read() as connection:
        for table in (audit_records, consumed_events, webhook_deliveries, fraud_scores, outbox):
            count = select(func.count()).select_from(table)
            found[table.name] = int((await connection.execute(count)).scalar_one())
    return found


def _audit_view(row: Any) -> tuple[Any, ...]:
    """An audit row without what differs between two recordings (its id, when recorded)."""
    values = dict(row)
    values.pop("audit_id", None)
    del values["recorded_at"]
    return tuple(sorted((name, str(value)) for name, value in values.items()))


async def _audit_rows(bank: Bank) -> list[Any]:
    async with bank.container.database.read() as connection:
        query = select(audit_records).order_by(audit_records.c.audit_id)
        return list((await connection.execute(query)).all())


async def refuse_inserts(bank: Bank, table: str, column: str, value: UUID) -> None:
    """Make the database refuse (a trigger raising an error that is no outage) every insert
    into ``table`` whose ``column`` is ``value``: a message that is poison to the database."""
    database = bank.container.database
    async with database.unit_of_work() as connection:
        if database.dialect_name == "sqlite":
            await connection.execute(
                text(
                    f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
                    f"WHEN NEW.{column} = '{value.hex}' "
                    "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                )
            )
            return
        await connection.execute(
            text(
                f"CREATE FUNCTION refuse_{table}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN IF NEW.{column} = '{value}'::uuid THEN "
                "RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$"
            )
        )
        await connection.execute(
            text(
                f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION refuse_{table}()"
            )
        )


def _event_id(message: Message) -> UUID:
    return UUID(message.headers["ce_id"])


# --- the bus ------------------------------------------------------------------------------


async def test_the_bus_gives_a_batch_handler_each_publish_at_once_after_the_others() -> None:
    bus = InProcessBus()
    seen: list[tuple[str, Any]] = []

    async def one(message: Message) -> None:
        seen.append(("one", message.value))

    async def many(messages: Any) -> None:
        seen.append(("many", [message.value for message in messages]))

    bus.subscribe("a", one)
    bus.subscribe_batch(["a", "b"], many)
    batch = [Message("a", None, b"1"), Message("c", None, b"2"), Message("b", None, b"3")]

    await bus.publish(batch)
    await bus.publish([Message("c", None, b"4")])  # none of its topics: not called

    assert seen == [("one", b"1"), ("many", [b"1", b"3"])]


async def test_a_failing_batch_handler_fails_the_publish() -> None:
    bus = InProcessBus()

    async def refuse(messages: Any) -> None:
        raise RuntimeError("down")

    bus.subscribe_batch(["a"], refuse)
    with pytest.raises(RuntimeError, match="down"):
        await bus.publish([Message("a", None, b"1")])  # the relay marks nothing published


# --- the audit recorder ---------------------------------------------------------------------


async def test_audit_records_a_mixed_batch_once_in_one_transaction_as_one_by_one(
    bank: Bank,
) -> None:
    people = await make_activity(bank)
    messages = await outbox_messages(bank)
    assert {message.topic for message in messages} >= {
        topics.TRANSACTIONS_COMPLETED,
        topics.TRANSACTIONS_FAILED,
        topics.ACCOUNT_BALANCES,
    }
    counted = Counted()
    recorder = AuditRecorder(bank.container.database, observer=counted)

    with counting_commits(bank.container.database) as commits:
        await recorder.handle_batch(messages)
    assert commits[0] == 1

    rows = await _audit_rows(bank)
    assert [(row.event_id, row.topic) for row in rows] == [
        (_event_id(message), message.topic) for message in messages
    ]
    assert counted.total("audit_recorded") == len(messages)
    assert counted.total("audit_duplicate") == 0
    # The actor of each movement is the user who made it, found in the ledger.
    by_type = {row.event_type: row for row in rows}
    assert by_type["transaction.failed"].actor_id == str(people["alice_id"])
    assert by_type["transaction.completed"].actor_name != "system"
    # Exactly the rows of the per-message path: its reading and its actor lookup.
    expected = []
    async with bank.container.database.read() as connection:
        for message in messages:
            read = read_message(message, recorded_at=utc_now())
            actor = read.actor or await audit_store.actor_of_movement(connection, read.payload)
            expected.append(with_actor(read, actor or SYSTEM))
    assert [_audit_view(row._mapping) for row in rows] == [_audit_view(row) for row in expected]


async def test_audit_a_redelivered_batch_adds_nothing_and_counts_duplicates(bank: Bank) -> None:
    await make_activity(bank)
    messages = await outbox_messages(bank)
    recorder = AuditRecorder(bank.container.database)
    await recorder.handle_batch(messages)
    before = await count_rows(bank)
    counted = Counted()
    again = AuditRecorder(bank.container.database, observer=counted)

    # The same batch again, and a batch holding one message twice (first copy is new).
    await again.handle_batch(messages)
    assert await count_rows(bank) == before
    assert counted.total("audit_duplicate") == len(messages)
    assert counted.total("audit_recorded") == 0


async def test_audit_a_message_twice_in_one_batch_is_recorded_once(bank: Bank) -> None:
    await make_activity(bank)
    first, second, *_ = await outbox_messages(bank)
    counted = Counted()
    recorder = AuditRecorder(bank.container.database, observer=counted)

    await recorder.handle_batch([first, second, first])

    assert [(row.event_id, row.topic) for row in await _audit_rows(bank)] == [
        (_event_id(first), first.topic),
        (_event_id(second), second.topic),
    ]
    assert counted.total("audit_recorded") == 2 and counted.total("audit_duplicate") == 1


async def test_audit_a_poison_message_fails_alone_and_the_others_are_recorded(
    bank: Bank,
) -> None:
    await make_activity(bank)
    messages = await outbox_messages(bank)
    poison = messages[2]
    await refuse_inserts(bank, "audit_records", "event_id", _event_id(poison))
    counted = Counted()
    recorder = AuditRecorder(bank.container.database, observer=counted)

    # As the per-message path does, the database's refusal is raised (the relay or the Kafka
    # loop retries the message): but only after every other message was recorded.
    with pytest.raises(DBAPIError, match="refused by the test"):
        await recorder.handle_batch(messages)
    recorded = {(row.event_id, row.topic) for row in await _audit_rows(bank)}
    assert recorded == {
        (_event_id(message), message.topic) for message in messages if message is not poison
    }
    assert counted.total("audit_recorded") == len(messages) - 1
    with pytest.raises(DBAPIError, match="refused by the test"):
        await recorder.handle(poison)  # where the per-message path sends it: raised
    assert len(await _audit_rows(bank)) == len(messages) - 1


# --- the notification router ----------------------------------------------------------------


async def _notification_state(bank: Bank) -> dict[str, Any]:
    """What routing wrote, without its random ids and times: per source event, the delivery
    bodies and the notification payloads."""
    async with bank.container.database.read() as connection:
        deliveries = (
            await connection.execute(
                select(
                    webhook_deliveries.c.event_id,
                    webhook_deliveries.c.webhook_id,
                    webhook_deliveries.c.payload,
                )
            )
        ).all()
        notes = (
            await connection.execute(
                select(outbox.c.event_key, outbox.c.payload).where(
                    outbox.c.topic == topics.NOTIFICATIONS
                )
            )
        ).all()
        consumed = (
            await connection.execute(
                select(consumed_events.c.event_id).where(
                    consumed_events.c.consumer == "notifications"
                )
            )
        ).scalars()
        consumed_ids = sorted(map(str, consumed))
    return {
        "deliveries": sorted(
            (str(row.event_id), str(row.webhook_id), row.payload) for row in deliveries
        ),
        "notifications": sorted((row.event_key, _without_ids(row.payload)) for row in notes),
        "consumed": consumed_ids,
    }


def _without_ids(payload: str) -> str:
    values = json.loads(payload)
    for name in ("notification_id", "timestamp"):  # made anew by each routing
        values.pop(name, None)
    return json.dumps(values, sort_keys=True)


async def test_notifications_route_a_mixed_batch_once_in_one_transaction_as_one_by_one(
    bank: Bank,
) -> None:
    people = await make_activity(bank)
    messages = [m for m in await outbox_messages(bank) if m.topic in NOTIFICATION_TOPICS]
    assert {m.topic for m in messages} == {
        topics.TRANSACTIONS_COMPLETED,
        topics.TRANSACTIONS_FAILED,
    }
    counted = Counted()
    router = NotificationRouter(bank.container.database, observer=counted)  # type: ignore[arg-type]

    with counting_commits(bank.container.database) as commits:
        await router.handle_batch(messages)
    assert commits[0] == 1

    state = await _notification_state(bank)
    assert state["consumed"] == sorted(str(_event_id(m)) for m in messages)
    alice_notes = [note for key, note in state["notifications"] if key == str(people["alice_id"])]
    assert alice_notes and all("account_id" in note for note in alice_notes)
    assert counted.total("notification_published") == len(state["notifications"])
    # Exactly what the per-message path writes (ids and times aside).
    async with bank.container.database.unit_of_work() as connection:
        await connection.execute(webhook_deliveries.delete())
        await connection.execute(consumed_events.delete())
        await connection.execute(outbox.delete().where(outbox.c.topic == topics.NOTIFICATIONS))
    for message in messages:
        await router.handle(message)
    assert await _notification_state(bank) == state
    assert counted.total("notification_published") == 2 * len(state["notifications"])


async def test_notifications_a_redelivered_batch_adds_nothing(bank: Bank) -> None:
    await make_activity(bank)
    messages = [m for m in await outbox_messages(bank) if m.topic in NOTIFICATION_TOPICS]
    router = NotificationRouter(bank.container.database)
    await router.handle_batch(messages)
    before = await count_rows(bank)
    counted = Counted()
    again = NotificationRouter(bank.container.database, observer=counted)  # type: ignore[arg-type]

    await again.handle_batch(messages)
    await again.handle_batch([messages[0], messages[0]])

    assert await count_rows(bank) == before
    assert counted.total("notification_published") == 0


async def test_notifications_an_unreadable_message_goes_to_the_dlq_and_the_others_are_routed(
    bank: Bank,
) -> None:
    await make_activity(bank)
    messages = [m for m in await outbox_messages(bank) if m.topic in NOTIFICATION_TOPICS]
    poison = Message(
        topics.TRANSACTIONS_COMPLETED,
        "key",
        b"\x00not an event",
        {
            "ce_specversion": "1.0",
            "ce_id": str(uuid4()),
            "ce_type": "transaction.completed",
            "content-type": "application/json",
        },
    )
    box = DeadLetterBox()
    router = NotificationRouter(bank.container.database, dead_letters=box.letters())

    await router.handle_batch([messages[0], poison, *messages[1:]])  # returns: it goes on

    assert [message.value for message in box.dead] == [poison.value]
    assert box.dead[0].headers["original_topic"] == topics.TRANSACTIONS_COMPLETED
    state = await _notification_state(bank)
    assert state["consumed"] == sorted(str(_event_id(m)) for m in messages)


async def test_notifications_without_a_sink_an_unreadable_message_is_raised_after_the_others(
    bank: Bank,
) -> None:
    await make_activity(bank)
    messages = [m for m in await outbox_messages(bank) if m.topic in NOTIFICATION_TOPICS]
    poison = Message(topics.TRANSACTIONS_COMPLETED, "key", b"{}", {"ce_type": "nonsense"})
    router = NotificationRouter(bank.container.database)  # the caller dead-letters

    with pytest.raises(UnreadableEvent, match="unexpected event type"):
        await router.handle_batch([poison, *messages])

    state = await _notification_state(bank)
    assert state["consumed"] == sorted(str(_event_id(m)) for m in messages)


async def test_notifications_a_poison_event_fails_alone_and_the_others_are_routed(
    bank: Bank,
) -> None:
    await make_activity(bank)
    messages = [m for m in await outbox_messages(bank) if m.topic in NOTIFICATION_TOPICS]
    poison = messages[1]
    await refuse_inserts(bank, "consumed_events", "event_id", _event_id(poison))
    router = NotificationRouter(bank.container.database)

    with pytest.raises(DBAPIError, match="refused by the test"):
        await router.handle_batch(messages)  # raised as the per-message path raises it

    state = await _notification_state(bank)
    assert state["consumed"] == sorted(str(_event_id(m)) for m in messages if m is not poison)
    assert str(_event_id(poison)) not in {event_id for event_id, _, _ in state["deliveries"]}


# --- the fraud worker -----------------------------------------------------------------------


def _fraud_worker(bank: Bank, box: DeadLetterBox, counted: Counted) -> FraudWorker:
    detector = build_detector(bank.container.settings)
    return FraudWorker(bank.container.unit_of_work, detector, box.letters(), observer=counted)


async def _scores(bank: Bank) -> dict[UUID, tuple[Any, ...]]:
    async with bank.container.database.read() as connection:
        rows = (await connection.execute(select(fraud_scores))).all()
    return {
        row.transaction_id: (row.account_id, row.event_id, row.score_bp, tuple(row.reasons))
        for row in rows
    }


async def _legs(bank: Bank) -> set[UUID]:
    async with bank.container.database.read() as connection:
        query = select(transactions.c.transaction_id).where(
            transactions.c.status.in_(["completed", "failed"])
        )
        return set((await connection.execute(query)).scalars())


async def test_fraud_scores_a_mixed_batch_once_in_one_transaction_as_one_by_one(
    bank: Bank,
) -> None:
    await make_activity(bank)
    messages = [m for m in await outbox_messages(bank) if m.topic in FRAUD_TOPICS]
    counted = Counted()
    box = DeadLetterBox()

    with counting_commits(bank.container.database) as commits:
        await _fraud_worker(bank, box, counted).handle_batch(messages)
    assert commits[0] == 1

    scores = await _scores(bank)
    assert set(scores) == await _legs(bank)
    assert counted.total("fraud_scored") == len(scores) and box.dead == []
    # The same scores as a fresh worker scoring one message at a time.
    async with bank.container.database.unit_of_work() as connection:
        await connection.execute(fraud_scores.delete())
    one_by_one = _fraud_worker(bank, box, Counted())
    for message in messages:
        await one_by_one.handle(message)
    assert await _scores(bank) == scores


async def test_fraud_a_redelivered_batch_adds_nothing(bank: Bank) -> None:
    await make_activity(bank)
    messages = [m for m in await outbox_messages(bank) if m.topic in FRAUD_TOPICS]
    box = DeadLetterBox()
    worker = _fraud_worker(bank, box, Counted())
    await worker.handle_batch(messages)
    before = await count_rows(bank)
    counted = Counted()

    await _fraud_worker(bank, box, counted).handle_batch(messages)  # a restarted worker
    await worker.handle_batch(messages)  # the same worker

    assert await count_rows(bank) == before
    assert counted.total("fraud_scored") == 0 and box.dead == []


async def test_fraud_an_event_without_its_leg_goes_to_the_dlq_and_the_others_are_scored(
    bank: Bank,
) -> None:
    await make_activity(bank)
    messages = [m for m in await outbox_messages(bank) if m.topic in FRAUD_TOPICS]
    good = messages[0]
    payload = json.loads(good.value)
    payload["transaction_id"] = str(uuid4())  # a leg the ledger does not have
    headers = {**good.headers, "ce_id": str(uuid4())}
    poison = Message(good.topic, good.key, json.dumps(payload).encode(), headers)
    box = DeadLetterBox()

    await _fraud_worker(bank, box, Counted()).handle_batch([poison, *messages])

    assert [message.value for message in box.dead] == [poison.value]
    assert set(await _scores(bank)) == await _legs(bank)


async def test_fraud_a_poison_score_fails_alone_and_the_others_are_scored(bank: Bank) -> None:
    await make_activity(bank)
    messages = [m for m in await outbox_messages(bank) if m.topic in FRAUD_TOPICS]
    refused = UUID(json.loads(messages[1].value)["transaction_id"])
    await refuse_inserts(bank, "fraud_scores", "transaction_id", refused)
    box = DeadLetterBox()

    with pytest.raises(DBAPIError, match="refused by the test"):
        await _fraud_worker(bank, box, Counted()).handle_batch(messages)

    assert set(await _scores(bank)) == await _legs(bank) - {refused}
    assert box.dead == []  # a database error is retried, not dead-lettered


# --- the embedded app -----------------------------------------------------------------------


async def test_the_embedded_app_records_every_event_through_the_batch_path(bank: Bank) -> None:
    embedded = EmbeddedEvents(bank.container)
    await embedded.start()
    try:
        await make_activity(bank)
        await asyncio.gather(*(make_activity(bank) for _ in range(3)))
        deadline = asyncio.get_running_loop().time() + SETTLE_SECONDS_MAX

        async def settled() -> bool:
            async with bank.container.database.read() as connection:
                rows = (await connection.execute(select(outbox))).all()
                audited = {
                    (row.event_id, row.topic)
                    for row in (await connection.execute(select(audit_records))).all()
                }
            return all(row.published_at is not None for row in rows) and all(
                (row.event_id, row.topic) in audited for row in rows
            )

        while not await settled():
            assert asyncio.get_running_loop().time() < deadline, "timed out"
            await asyncio.sleep(0.1)
    finally:
        await embedded.stop()
    async with bank.container.database.read() as connection:
        rows = (await connection.execute(select(outbox))).all()
        consumed = set(
            (
                await connection.execute(
                    select(consumed_events.c.event_id).where(
                        consumed_events.c.consumer == "notifications"
                    )
                )
            ).scalars()
        )
    audit = await _audit_rows(bank)
    assert len(audit) == len(rows)  # each event once, the notifications' own events too
    assert consumed == {row.event_id for row in rows if row.topic in NOTIFICATION_TOPICS}
    assert set(await _scores(bank)) == await _legs(bank)
