"""The event backbone against the real Apache Kafka broker (KRaft) and real databases."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat
from sqlalchemy import func, select, text

from banking.domain.errors import ValidationFailed
from banking.domain.records import DebitOrCredit, TransferRequest
from banking.domain.roles import Actor, Role
from banking.events import envelope, topics
from banking.events.relay import RELAY_LOCK_KEY, OutboxRelay
from banking.events.serialization import ARROW_BATCH_CONTENT_TYPE, EventFormat, decode, encode
from banking.events.signing import development_keyring
from banking.events.transport import KafkaConsumerLoop, KafkaPublisher, Message
from banking.ledger.reconcile import reconcile
from banking.storage.tables import outbox, transactions
from banking.workers.admin import create_topics
from banking.workers.dead_letter_handler import DeadLetterHandler
from banking.workers.dead_letters import DeadLetters
from banking.workers.processor import CommandProcessor
from tests.conftest import Bank, make_settings, running_bank
from tests.events.kafka_support import (
    consume,
    consume_records,
    kafka_bootstrap,
    kafka_script,
    produce_raw,
    worker_process,
)

SETTLE_TIMEOUT_SECONDS = 120


@pytest.fixture
def prefix() -> str:
    """Topics and groups of their own for every test: no test reads another's messages."""
    return f"t{uuid.uuid4().hex[:10]}."


def kafka_settings(database_url: str, prefix: str, **extra: Any) -> dict[str, Any]:
    return {
        "kafka_bootstrap_servers": kafka_bootstrap(),
        "kafka_topic_prefix": prefix,
        "kafka_topic_partitions": 3,
        "dlq_backoff_seconds": 0.2,
        **extra,
    }


@asynccontextmanager
async def kafka_bank(database_url: str, prefix: str) -> AsyncIterator[Bank]:
    settings = make_settings(database_url, **kafka_settings(database_url, prefix))
    await create_topics(settings)
    async with running_bank(settings) as bank:
        yield bank


@pytest.fixture
async def kbank(database_url: str, prefix: str) -> AsyncIterator[Bank]:
    async with kafka_bank(database_url, prefix) as bank:
        yield bank


@pytest.fixture
async def pg_kbank(postgres_url: str, prefix: str) -> AsyncIterator[Bank]:
    async with kafka_bank(postgres_url, prefix) as bank:
        yield bank


def publisher_for(bank: Bank) -> KafkaPublisher:
    settings = bank.container.settings
    return KafkaPublisher(
        settings.kafka_bootstrap_servers, topic_prefix=settings.kafka_topic_prefix
    )


def worker_env(bank: Bank, database_url: str) -> dict[str, str]:
    settings = bank.container.settings
    return {
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
        "JWT_SECRET": settings.jwt_signing_secret(),
        "DLQ_BACKOFF_SECONDS": "0.2",
        "LOG_LEVEL": "INFO",
    }


async def outbox_counts(bank: Bank) -> tuple[int, int]:
    async with bank.container.database.read() as connection:
        total = (await connection.execute(select(func.count()).select_from(outbox))).scalar_one()
        unpublished = (
            await connection.execute(
                select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
            )
        ).scalar_one()
    return int(total), int(unpublished)


async def outbox_topics(bank: Bank) -> dict[str, int]:
    """How many outbox rows each topic has (staff actions, such as the users a test creates,
    are events too: on banking.audit.actions)."""
    async with bank.container.database.read() as connection:
        rows = await connection.execute(
            select(outbox.c.topic, func.count()).group_by(outbox.c.topic)
        )
        return {topic: int(count) for topic, count in rows}


async def wait_for(condition: Any, *, timeout_seconds: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_seconds
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def test_debit_event_reaches_kafka_and_decodes_exactly(kbank: Bank, prefix: str) -> None:
    _, staff = await kbank.user(Role.TELLER)
    customer_id, customer = await kbank.user(Role.CUSTOMER)
    account_id = await kbank.account(customer_id, staff, funded="1000.00")
    debit = await kbank.client.post(
        "/api/v1/transactions/debit",
        json={
            "account_id": account_id,
            "amount": "100.10",
            "currency": "USD",
            "reference_id": "TEST-DEBIT-1",
        },
        headers={**customer, "traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01"},
    )
    assert debit.status_code == 200
    written = await outbox_topics(kbank)
    # the funding credit and the debit: a leg and a balance each
    assert (written[topics.TRANSACTIONS_COMPLETED], written[topics.ACCOUNT_BALANCES]) == (2, 2)
    publisher = publisher_for(kbank)
    try:
        assert await OutboxRelay(kbank.container.database, publisher).drain() == sum(
            written.values()
        )
    finally:
        await publisher.stop()

    transaction_id = debit.json()["transaction_id"]
    messages = await consume(
        kafka_bootstrap(),
        topics.TRANSACTIONS_COMPLETED,
        prefix=prefix,
        until=lambda ms: len(ms) >= 2,  # the credit's leg, then the debit's
    )
    event = messages[-1]
    assert event.key == account_id
    assert event.headers["content-type"] == ARROW_BATCH_CONTENT_TYPE
    assert event.headers["ce_type"] == "transaction.completed"
    assert event.headers["ce_specversion"] == "1.0"
    assert event.headers["ce_dataschema"] == "urn:banking:schema:transaction.v3"
    assert event.headers["ce_subject"] == account_id
    assert envelope.trace_id_of(event.headers["traceparent"]) == "ab" * 16
    uuid.UUID(event.headers["ce_id"])
    fields = decode(
        event.value,
        content_type=ARROW_BATCH_CONTENT_TYPE,
        event_type="transaction.completed",
        schema_version=3,
    )
    assert fields["transaction_id"] == transaction_id
    assert fields["status"] == "completed"
    assert fields["amount"] == Decimal("100.10")
    assert fields["metadata"] == "{}"  # a debit without labels
    assert fields["reverses_transaction_id"] is None and fields["hold_id"] is None
    balances = await consume(
        kafka_bootstrap(),
        topics.ACCOUNT_BALANCES,
        prefix=prefix,
        until=lambda ms: len([m for m in ms if m.key == account_id]) >= 2,
    )
    last = decode(
        balances[-1].value,
        content_type=balances[-1].headers["content-type"],
        event_type="balance.updated",
    )
    assert last["available_balance"] == Decimal("899.90")


@pytest.mark.parametrize("event_format", list(EventFormat))
async def test_an_event_reads_with_a_plain_cloudevents_reader_and_a_generic_arrow_reader(
    kbank: Bank, prefix: str, event_format: EventFormat
) -> None:
    """What a consumer that knows nothing of this code base gets: the CloudEvents SDK's Kafka
    binding reads the headers, and pyarrow reads the value with the schema published on
    banking.schemas (Arrow), or json does (JSON)."""
    _, staff = await kbank.user(Role.TELLER)
    customer_id, customer = await kbank.user(Role.CUSTOMER)
    account_id = await kbank.account(customer_id, staff, funded="1000.00")
    trace_id = uuid.uuid4().hex
    debit = await kbank.client.post(
        "/api/v1/transactions/debit",
        json={"account_id": account_id, "amount": "100.10", "currency": "USD"},
        headers={**customer, "traceparent": f"00-{trace_id}-{'cd' * 8}-01"},
    )
    assert debit.status_code == 200, debit.text
    written = await outbox_topics(kbank)
    assert (written[topics.TRANSACTIONS_COMPLETED], written[topics.ACCOUNT_BALANCES]) == (2, 2)
    publisher = publisher_for(kbank)
    try:
        relay = OutboxRelay(kbank.container.database, publisher, event_format=event_format)
        assert await relay.drain() == sum(written.values())
    finally:
        await publisher.stop()

    [record] = (
        await consume_records(
            kafka_bootstrap(),
            topics.TRANSACTIONS_COMPLETED,
            prefix=prefix,
            until=lambda records: len(records) >= 2,
        )
    )[1:]
    message = KafkaMessage(
        headers={name: value for name, value in record.headers}, key=record.key, value=record.value
    )
    event = from_binary(message, JSONFormat())  # validates every CloudEvents attribute
    assert event.get_type() == "transaction.completed"
    assert event.get_specversion() == "1.0"
    assert event.get_source() == "/banking/ledger"
    assert event.get_subject() == account_id
    assert event.get_time() is not None and event.get_time().tzinfo is not None
    uuid.UUID(event.get_id())
    traceparent = dict(record.headers)["traceparent"].decode()
    assert traceparent.split("-")[1] == trace_id  # what a tracing library continues

    if event_format is EventFormat.JSON:
        assert event.get_datacontenttype() == "application/json"
        data = event.get_data()
        assert isinstance(data, dict)
        assert data["amount"] == "100.10"
        assert data["transaction_id"] == debit.json()["transaction_id"]
        return
    assert event.get_datacontenttype() == "application/vnd.apache.arrow.recordbatch"
    schema_id = event.get_dataschema().removeprefix("urn:banking:schema:")
    published = await consume_records(
        kafka_bootstrap(),
        topics.SCHEMAS,
        prefix=prefix,
        until=lambda records: any(r.key == schema_id.encode() for r in records),
    )
    ipc = [r.value for r in published if r.key == schema_id.encode()][-1]
    schema = pa.ipc.read_schema(pa.py_buffer(ipc))
    [row] = pa.ipc.read_record_batch(pa.py_buffer(event.get_data()), schema).to_pylist()
    assert row["amount"] == Decimal("100.10") and row["amount"].as_tuple().exponent == -2
    assert row["transaction_id"] == debit.json()["transaction_id"]
    assert row["account_id"] == account_id
    assert schema.metadata[b"banking.schema_id"] == schema_id.encode()


async def test_a_command_published_before_the_upgrade_is_applied(kbank: Bank, prefix: str) -> None:
    """Schema v1 headers and a v1 Arrow stream, as the relay wrote them before the upgrade, on
    the real topic: the processor still applies the command, and its trace id carries on."""
    bank = kbank
    teller_name = f"teller-{uuid.uuid4().hex[:8]}"
    teller_id, staff = await bank.user(Role.TELLER, name=teller_name)
    customer_id, _ = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, staff, funded="50.00")
    teller = Actor(teller_id, teller_name, Role.TELLER)
    transaction_id = uuid.uuid4()
    payload = {
        "transaction_id": str(transaction_id),
        "command": "debit",
        "account_id": account_id,
        "destination_account_id": None,
        "amount": "12.34",
        "currency": "USD",
        "description": "queued before the upgrade",
        "reference_id": "pre-upgrade-1",
        "requested_by": {
            "user_id": str(teller.user_id),
            "username": teller.username,
            "role": teller.role.value,
        },
        "timestamp": "2026-11-25T12:00:00+00:00",
    }
    value, content_type = encode("transaction.submitted", 1, payload, EventFormat.ARROW)
    trace_id = uuid.uuid4().hex
    event_id = str(uuid.uuid4())
    # Signed (events.signing) over the v1 event id and type: unsigned commands are refused.
    signature = development_keyring().signature_headers(
        event_id, "transaction.submitted", account_id, value
    )
    await produce_raw(
        kafka_bootstrap(),
        prefix + topics.TRANSACTIONS_SUBMITTED,
        value,
        key=account_id.encode(),
        headers={
            "event_id": event_id,
            "event_type": "transaction.submitted",
            "schema_version": "1",
            "content_type": content_type,
            "trace_id": trace_id,
            "created_at": "2026-11-25T12:00:00+00:00",
            **signature,
        },
    )
    publisher = publisher_for(bank)
    processor = CommandProcessor(bank.container.movements, DeadLetters(publisher))
    loop = KafkaConsumerLoop(
        bank.container.settings.kafka_bootstrap_servers,
        group_id="processor",
        topics=[topics.TRANSACTIONS_SUBMITTED],
        handler=processor.handle,
        topic_prefix=prefix,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:

        async def applied() -> bool:
            return await bank.balance(account_id, staff) == Decimal("37.66")

        await wait_for(applied, timeout_seconds=60, what="the pre-upgrade command")
        leg = await bank.client.get(f"/api/v1/transactions/{transaction_id}", headers=staff)
        assert leg.json()["status"] == "completed"
        assert await OutboxRelay(bank.container.database, publisher).drain() >= 2
        completed = await consume(
            kafka_bootstrap(),
            topics.TRANSACTIONS_COMPLETED,
            prefix=prefix,
            until=lambda ms: any(str(transaction_id).encode() in m.value for m in ms),
        )
        event = next(m for m in completed if str(transaction_id).encode() in m.value)
        assert envelope.trace_id_of(event.headers["traceparent"]) == trace_id  # carried on
    finally:
        stop.set()
        await task
        await publisher.stop()


@pytest.mark.postgres
async def test_kafka_down_while_1000_movements_commit(pg_kbank: Bank, prefix: str) -> None:
    bank = pg_kbank
    _, staff_headers = await bank.user(Role.TELLER)
    owner_id, _ = await bank.user(Role.CUSTOMER)
    teller = Actor(uuid.uuid4(), "teller", Role.TELLER)
    accounts = [uuid.UUID(await bank.account(owner_id, staff_headers)) for _ in range(10)]
    publisher = publisher_for(bank)
    relay = OutboxRelay(bank.container.database, publisher, batch_size=200)
    stop = asyncio.Event()
    kafka_script("stop")
    try:
        relay_task = asyncio.create_task(relay.run(stop))
        movements = bank.container.movements

        async def move(index: int) -> None:
            account = accounts[index % 10]
            if index % 3 == 0:
                await movements.credit(
                    teller,
                    DebitOrCredit(account, Decimal("5.00"), "USD", reference_id=f"c-{index}"),
                )
            elif index % 3 == 1:
                other = accounts[(index + 3) % 10]
                try:
                    await movements.transfer(
                        teller,
                        TransferRequest(
                            account, other, Decimal("1.00"), "USD", reference_id=f"t-{index}"
                        ),
                    )
                except Exception as error:  # declines are recorded and still produce events
                    assert type(error).__name__ == "InsufficientFundsDeclined"
            else:
                try:
                    await movements.debit(
                        teller,
                        DebitOrCredit(account, Decimal("2.00"), "USD", reference_id=f"d-{index}"),
                    )
                except Exception as error:
                    assert type(error).__name__ == "InsufficientFundsDeclined"

        for start in range(0, 1000, 50):
            await asyncio.gather(*[move(i) for i in range(start, start + 50)])
        # A movement whose database transaction rolls back publishes nothing.
        with pytest.raises(ValidationFailed):
            await movements.credit(
                teller,
                DebitOrCredit(
                    accounts[0], Decimal("9999999999999999.99"), "USD", reference_id="rolled-back"
                ),
            )
        total, unpublished = await outbox_counts(bank)
        assert unpublished == total > 1000  # nothing could be published while Kafka was down
    finally:
        kafka_script("start")
    try:
        await wait_for(
            lambda: _drained(bank),
            timeout_seconds=SETTLE_TIMEOUT_SECONDS,
            what="the relay to publish the backlog",
        )
    finally:
        stop.set()
        await relay_task
        await publisher.stop()

    async with bank.container.database.read() as connection:
        rows = (await connection.execute(select(outbox.c.event_id, outbox.c.topic))).all()
    expected = {str(row.event_id) for row in rows}
    read: dict[str, Message] = {}
    per_topic: dict[str, int] = defaultdict(int)
    for row in rows:
        per_topic[row.topic] += 1
    for topic, count in per_topic.items():
        messages = await consume(
            kafka_bootstrap(),
            topic,
            prefix=prefix,
            until=lambda ms, c=count: len({m.headers["ce_id"] for m in ms}) >= c,
        )
        for message in messages:
            read.setdefault(message.headers["ce_id"], message)
            assert b"rolled-back" not in message.value
        if topic == topics.ACCOUNT_BALANCES:
            versions: dict[str | None, list[int]] = defaultdict(list)
            seen: set[str] = set()
            for message in messages:
                if message.headers["ce_id"] in seen:
                    continue
                seen.add(message.headers["ce_id"])
                fields = decode(
                    message.value,
                    content_type=message.headers["content-type"],
                    event_type="balance.updated",
                )
                versions[message.key].append(fields["version"])
            for key, account_versions in versions.items():
                assert account_versions == sorted(account_versions), f"out of order for {key}"
                assert len(set(account_versions)) == len(account_versions)
    assert set(read) == expected  # every committed event exactly once after dedupe


async def _drained(bank: Bank) -> bool:
    return (await outbox_counts(bank))[1] == 0


@pytest.mark.postgres
async def test_relay_killed_mid_batch_loses_nothing(
    pg_kbank: Bank, postgres_url: str, prefix: str, tmp_path: Path
) -> None:
    bank = pg_kbank
    _, staff = await bank.user(Role.TELLER)
    owner_id, _ = await bank.user(Role.CUSTOMER)
    teller = Actor(uuid.uuid4(), "teller", Role.TELLER)
    account = uuid.UUID(await bank.account(owner_id, staff))
    for start in range(0, 1500, 100):
        await asyncio.gather(
            *[
                bank.container.movements.credit(
                    teller, DebitOrCredit(account, Decimal("1.00"), "USD", reference_id=f"k-{i}")
                )
                for i in range(start, start + 100)
            ]
        )
    total, _ = await outbox_counts(bank)
    env = worker_env(bank, postgres_url)
    relay = worker_process("relay", env, tmp_path / "relay.log")

    async def some_published() -> bool:
        _, unpublished = await outbox_counts(bank)
        return unpublished < total

    try:
        await wait_for(some_published, timeout_seconds=60, what="the relay to start publishing")
    finally:
        relay.send_signal(signal.SIGKILL)
        relay.wait(timeout=10)
    _, unpublished_after_kill = await outbox_counts(bank)
    assert unpublished_after_kill > 0, "the relay finished before it could be killed"
    restarted = worker_process("relay", env, tmp_path / "relay.log")
    try:
        await wait_for(
            lambda: _drained(bank),
            timeout_seconds=SETTLE_TIMEOUT_SECONDS,
            what="the restarted relay to drain",
        )
    finally:
        restarted.terminate()
        restarted.wait(timeout=20)

    async with bank.container.database.read() as connection:
        expected = {
            str(e)
            for e in (
                await connection.execute(
                    select(outbox.c.event_id).where(
                        outbox.c.topic.in_((topics.TRANSACTIONS_COMPLETED, topics.ACCOUNT_BALANCES))
                    )
                )
            ).scalars()
        }
    assert len(expected) == 3000
    raw: list[Message] = []
    for topic in (topics.TRANSACTIONS_COMPLETED, topics.ACCOUNT_BALANCES):
        raw += await consume(
            kafka_bootstrap(),
            topic,
            prefix=prefix,
            until=lambda ms: len({m.headers["ce_id"] for m in ms}) >= 1500,
        )
    by_id: dict[str, set[bytes]] = defaultdict(set)
    for message in raw:
        by_id[message.headers["ce_id"]].add(message.value)
    assert set(by_id) == expected  # none lost
    assert all(len(values) == 1 for values in by_id.values())  # a duplicate is the same event


def _relay_log(path: Path) -> list[dict[str, Any]]:
    """The relay's JSON log lines that say who led and who published, in the file's order."""
    wanted = {"relay_leader", "relay_leadership_lost", "relay_batch_published"}
    lines = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") in wanted:
            lines.append(entry)
    return lines


@pytest.mark.postgres
async def test_one_relay_publishes_when_the_leaders_session_is_terminated(
    pg_kbank: Bank, postgres_url: str, prefix: str, tmp_path: Path
) -> None:
    """Two relays; the lock holder's database session is killed twice while movements commit.
    The leader notices at its next statement and stops; a batch is only ever marked published
    by the relay holding the lock; every event arrives and each account's balance versions
    arrive in order, complete."""
    bank = pg_kbank
    _, staff = await bank.user(Role.TELLER)
    owner_id, _ = await bank.user(Role.CUSTOMER)
    teller = Actor(uuid.uuid4(), "teller", Role.TELLER)
    accounts = [uuid.UUID(await bank.account(owner_id, staff)) for _ in range(6)]
    env = worker_env(bank, postgres_url) | {"LOG_LEVEL": "DEBUG", "LOG_JSON": "true"}
    logs = {name: tmp_path / f"relay-{name}.log" for name in ("a", "b")}
    relays = {"a": worker_process("relay", env, logs["a"])}

    async def lock_holder() -> int | None:
        async with bank.container.database.read() as connection:
            pid = (
                await connection.execute(
                    text(
                        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' "
                        "AND objid = :key AND granted AND database = "
                        "(SELECT oid FROM pg_database WHERE datname = current_database())"
                    ),
                    {"key": RELAY_LOCK_KEY},
                )
            ).scalar_one_or_none()
        return int(pid) if pid is not None else None

    async def a_leader() -> bool:
        return await lock_holder() is not None

    async def terminate_leader() -> None:
        pid = await lock_holder()
        assert pid is not None, "no relay held the lock"
        async with bank.container.database.read() as connection:
            assert (
                await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            ).scalar_one()

    credits = 600
    try:
        await wait_for(a_leader, timeout_seconds=60, what="relay a to take the lock")
        relays["b"] = worker_process("relay", env, logs["b"])
        for start in range(0, credits, 20):
            await asyncio.gather(
                *[
                    bank.container.movements.credit(
                        teller,
                        DebitOrCredit(
                            accounts[i % len(accounts)], Decimal("1.00"), "USD", f"f-{i}"
                        ),
                    )
                    for i in range(start, start + 20)
                ]
            )
            if start in (credits // 3, 2 * credits // 3):
                await terminate_leader()
                await wait_for(a_leader, timeout_seconds=30, what="a relay to take over")
        await wait_for(
            lambda: _drained(bank), timeout_seconds=SETTLE_TIMEOUT_SECONDS, what="the outbox"
        )
    finally:
        for process in relays.values():
            process.terminate()
            process.wait(timeout=20)

    entries = sorted(
        (
            (entry["timestamp"], name, entry["event"])
            for name in relays
            for entry in _relay_log(logs[name])
        ),
    )
    assert sum(event == "relay_leadership_lost" for _, _, event in entries) == 2
    # Single publisher: every batch was marked by the relay that took the lock last (the one
    # that lost it may log so a moment after the next one took it, but marks nothing more).
    holder: str | None = None
    published_by: set[str] = set()
    for _, name, event in entries:
        if event == "relay_leader":
            holder = name
        elif event == "relay_batch_published":
            assert holder == name, f"relay {name} marked a batch while relay {holder} led"
            published_by.add(name)
    assert published_by  # the check above saw batches

    movement_topics = (topics.TRANSACTIONS_COMPLETED, topics.ACCOUNT_BALANCES)
    async with bank.container.database.read() as connection:
        expected = {
            str(e)
            for e in (
                await connection.execute(
                    select(outbox.c.event_id).where(outbox.c.topic.in_(movement_topics))
                )
            ).scalars()
        }
    assert len(expected) == 2 * credits
    raw: list[Message] = []
    for topic in movement_topics:
        raw += await consume(
            kafka_bootstrap(),
            topic,
            prefix=prefix,
            until=lambda ms: len({m.headers["ce_id"] for m in ms}) >= credits,
        )
    assert {m.headers["ce_id"] for m in raw} == expected  # none lost
    versions: dict[str | None, list[int]] = defaultdict(list)
    seen: set[str] = set()
    last_sequence: dict[tuple[str, str | None], int] = {}
    for message in raw:
        # ce_sequence grows per account; a re-sent event repeats its own, not above the last
        sequence = envelope.read_headers(message.headers).sequence
        assert sequence is not None
        at = (message.topic, message.key)
        if message.headers["ce_id"] in seen:
            assert sequence <= last_sequence[at]
            continue
        seen.add(message.headers["ce_id"])
        assert sequence > last_sequence.get(at, 0), f"{at} out of sequence"
        last_sequence[at] = sequence
        if message.topic != topics.ACCOUNT_BALANCES:
            continue
        fields = decode(
            message.value,
            content_type=message.headers["content-type"],
            event_type="balance.updated",
        )
        versions[message.key].append(int(fields["version"]))
    assert len(versions) == len(accounts)
    for key, account_versions in versions.items():
        # in order and complete: the version after the account's first credit onwards
        assert account_versions == list(
            range(account_versions[0], account_versions[0] + credits // len(accounts))
        ), f"balance events of {key} out of order or missing"


@pytest.mark.postgres
async def test_async_transfers_survive_a_killed_processor(
    pg_kbank: Bank, postgres_url: str, tmp_path: Path
) -> None:
    bank = pg_kbank
    _, staff = await bank.user(Role.TELLER)
    owner_id, owner = await bank.user(Role.CUSTOMER)
    accounts = [await bank.account(owner_id, staff, funded="100.00") for _ in range(10)]
    env = worker_env(bank, postgres_url)
    relay = worker_process("relay", env, tmp_path / "relay.log")
    processor = worker_process("processor", env, tmp_path / "processor.log")
    dlq = worker_process("dlq", env, tmp_path / "dlq.log")
    try:
        for start in range(0, 500, 50):
            responses = await asyncio.gather(
                *[
                    bank.client.post(
                        "/api/v1/transactions/transfer",
                        json={
                            "source_account_id": accounts[i % 10],
                            "destination_account_id": accounts[(i * 7 + 1) % 10],
                            "amount": "3.00",
                            "currency": "USD",
                            "reference_id": f"async-{i}",
                        },
                        headers={**owner, "Prefer": "respond-async"},
                    )
                    for i in range(start, start + 50)
                    if i % 10 != (i * 7 + 1) % 10
                ]
            )
            assert {r.status_code for r in responses} == {202}
            if start == 250:
                processor.send_signal(signal.SIGKILL)
                processor.wait(timeout=10)
                processor = worker_process("processor", env, tmp_path / "processor.log")

        async def none_pending() -> bool:
            async with bank.container.database.read() as connection:
                pending = (
                    await connection.execute(
                        select(func.count())
                        .select_from(transactions)
                        .where(transactions.c.status == "pending")
                    )
                ).scalar_one()
            return int(pending) == 0

        await wait_for(
            none_pending,
            timeout_seconds=SETTLE_TIMEOUT_SECONDS,
            what="every async command to settle",
        )
    finally:
        for process in (relay, processor, dlq):
            process.terminate()
            process.wait(timeout=20)

    async with bank.container.database.read() as connection:
        rows = (
            await connection.execute(
                select(
                    transactions.c.transaction_type, transactions.c.status, func.count()
                ).group_by(transactions.c.transaction_type, transactions.c.status)
            )
        ).all()
    counts = {(kind, status): n for kind, status, n in rows}
    submitted = sum(1 for i in range(500) if i % 10 != (i * 7 + 1) % 10)
    outs = counts.get(("transfer_out", "completed"), 0) + counts.get(("transfer_out", "failed"), 0)
    assert outs == submitted  # every command ended exactly once
    assert counts.get(("transfer_in", "completed"), 0) == counts.get(("transfer_out", "completed"))
    report = await reconcile(bank.container.unit_of_work)
    assert report.clean, report.problems
    total = sum([await bank.balance(a, staff) for a in accounts], Decimal(0))
    assert total == Decimal("1000.00")


async def test_poison_message_goes_to_the_permanent_dlq(kbank: Bank, prefix: str) -> None:
    bank = kbank
    _, staff = await bank.user(Role.TELLER)
    customer_id, customer = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, staff, funded="50.00")
    settings = bank.container.settings
    publisher = publisher_for(bank)
    processor = CommandProcessor(bank.container.movements, DeadLetters(publisher))
    loop = KafkaConsumerLoop(
        settings.kafka_bootstrap_servers,
        group_id="processor",
        topics=[topics.TRANSACTIONS_SUBMITTED],
        handler=processor.handle,
        topic_prefix=prefix,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        await produce_raw(
            kafka_bootstrap(),
            prefix + topics.TRANSACTIONS_SUBMITTED,
            b"\x00\xffgarbage\x13",
            key=account_id.encode(),
        )
        accepted = await bank.client.post(
            "/api/v1/transactions/debit",
            json={"account_id": account_id, "amount": "20.00", "currency": "USD"},
            headers={**customer, "Prefer": "respond-async"},
        )
        assert await OutboxRelay(bank.container.database, publisher).drain() >= 1
        dead = await consume(
            kafka_bootstrap(),
            topics.TRANSACTIONS_PERMANENT_DLQ,
            prefix=prefix,
            until=lambda ms: len(ms) >= 1,
        )
        assert dead[0].value == b"\x00\xffgarbage\x13"
        assert dead[0].headers["original_topic"] == topics.TRANSACTIONS_SUBMITTED
        assert dead[0].headers["error"]

        async def applied() -> bool:
            body = (await bank.client.get(accepted.headers["Location"], headers=customer)).json()
            return bool(body["status"] == "completed")

        await wait_for(applied, timeout_seconds=60, what="the command after the poison one")
        assert await bank.balance(account_id, customer) == Decimal("30.00")
    finally:
        stop.set()
        await task
        await publisher.stop()


@pytest.mark.postgres
@pytest.mark.parametrize("database_comes_back", [True, False])
async def test_database_outage_is_retried_then_dead_lettered(
    pg_kbank: Bank, postgres_url: str, prefix: str, database_comes_back: bool
) -> None:
    bank = pg_kbank
    _, staff = await bank.user(Role.TELLER)
    customer_id, customer = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, staff, funded="50.00")
    accepted = await bank.client.post(
        "/api/v1/transactions/debit",
        json={"account_id": account_id, "amount": "20.00", "currency": "USD"},
        headers={**customer, "Prefer": "respond-async"},
    )
    publisher = publisher_for(bank)
    assert await OutboxRelay(bank.container.database, publisher).drain() >= 1
    database = postgres_url.rsplit("/", 1)[1]
    await _allow_connections(database, allowed=False)

    settings = bank.container.settings
    dead_letters = DeadLetters(publisher)
    processor = CommandProcessor(bank.container.movements, dead_letters)
    # Slow retries when the database will come back (time to bring it back), fast otherwise.
    backoff_seconds = 3.0 if database_comes_back else 0.3
    handler = DeadLetterHandler(
        processor, dead_letters, retries_max=3, backoff_base_seconds=backoff_seconds
    )
    loops = [
        KafkaConsumerLoop(
            settings.kafka_bootstrap_servers,
            group_id=group,
            topics=[topic],
            handler=handle,
            topic_prefix=prefix,
        )
        for group, topic, handle in (
            ("processor", topics.TRANSACTIONS_SUBMITTED, processor.handle),
            ("dlq", topics.TRANSACTIONS_DLQ, handler.handle),
        )
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(loop.run(stop)) for loop in loops]
    try:
        first = await consume(
            kafka_bootstrap(), topics.TRANSACTIONS_DLQ, prefix=prefix, until=lambda ms: len(ms) >= 1
        )
        assert first[0].headers["attempts"] == "1"
        if database_comes_back:
            await _allow_connections(database, allowed=True)

            async def completed() -> bool:
                body = (
                    await bank.client.get(accepted.headers["Location"], headers=customer)
                ).json()
                return bool(body["status"] == "completed")

            await wait_for(completed, timeout_seconds=60, what="the retried command")
            assert await bank.balance(account_id, customer) == Decimal("30.00")
        else:
            dead = await consume(
                kafka_bootstrap(),
                topics.TRANSACTIONS_PERMANENT_DLQ,
                prefix=prefix,
                until=lambda ms: len(ms) >= 1,
            )
            assert dead[0].headers["attempts"] == "4"  # the first try and 3 retries
            assert dead[0].headers["original_topic"] == topics.TRANSACTIONS_SUBMITTED
            assert "connect" in dead[0].headers["error"].lower() or dead[0].headers["error"]
            retries = await consume(
                kafka_bootstrap(),
                topics.TRANSACTIONS_DLQ,
                prefix=prefix,
                until=lambda ms: len(ms) >= 3,
            )
            assert [m.headers["attempts"] for m in retries] == ["1", "2", "3"]
            await _allow_connections(database, allowed=True)
            body = (await bank.client.get(accepted.headers["Location"], headers=customer)).json()
            assert body["status"] == "pending"  # parked, not lost: `banking dlq replay` resumes it
    finally:
        await _allow_connections(database, allowed=True)
        stop.set()
        await asyncio.gather(*tasks)
        await publisher.stop()


async def _allow_connections(database: str, *, allowed: bool) -> None:
    import asyncpg

    admin = await asyncpg.connect(os.environ["BANKING_PG_ADMIN_DSN"])
    try:
        await admin.execute(
            f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {"true" if allowed else "false"}'
        )
        if not allowed:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                database,
            )
    finally:
        await admin.close()
