"""A real ``banking worker relay`` process on PostgreSQL (verify-full) and Kafka (SASL_SSL as
``relay``): it reads the outbox the API wrote and publishes it; ``consumer`` reads it back."""

from __future__ import annotations

import asyncio
import signal
import uuid
from decimal import Decimal
from pathlib import Path

from sqlalchemy import func, select

from banking.events import topics
from banking.events.security import kafka_security
from banking.events.serialization import decode
from banking.events.transport import KafkaConsumerLoop, Message
from banking.storage.tables import outbox
from banking.workers.admin import create_topics
from tests.conftest import Bank, make_settings, running_bank
from tests.events.kafka_support import worker_process
from tests.transport_security.support import credit_and_debit, kafka_settings

PUBLISH_TIMEOUT_SECONDS = 60


async def unpublished(bank: Bank) -> int:
    async with bank.container.database.read() as connection:
        count = (
            await connection.execute(
                select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
            )
        ).scalar_one()
    return int(count)


async def test_the_relay_process_publishes_over_sasl_ssl(
    kafka_secure: dict[str, str], tls_database: str, prefix: str, tmp_path: Path
) -> None:
    await create_topics(
        make_settings(tls_database, **kafka_settings(kafka_secure, "admin", prefix))
    )
    relay = kafka_settings(kafka_secure, "relay", prefix)
    api = make_settings(tls_database, **kafka_settings(kafka_secure, "api", prefix))
    log_path = tmp_path / "relay.log"
    async with running_bank(api) as bank:
        account_id = await credit_and_debit(bank)
        assert await unpublished(bank) > 0
        process = worker_process(
            "relay",
            {
                "DATABASE_URL": tls_database,
                "JWT_SECRET": api.jwt_signing_secret(),
                **{name.upper(): str(value) for name, value in relay.items()},
            },
            log_path,
        )
        try:
            deadline = asyncio.get_running_loop().time() + PUBLISH_TIMEOUT_SECONDS
            while await unpublished(bank) > 0:
                assert process.poll() is None, log_path.read_text()[-3000:]
                assert asyncio.get_running_loop().time() < deadline, "the relay published nothing"
                await asyncio.sleep(0.2)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    assert relay["kafka_sasl_password"] not in log_path.read_text()

    received: list[Message] = []
    stop = asyncio.Event()

    async def handle(message: Message) -> None:
        received.append(message)
        if sum(m.key == account_id for m in received) >= 2:
            stop.set()

    consumer = make_settings(tls_database, **kafka_settings(kafka_secure, "consumer", prefix))
    await asyncio.wait_for(
        KafkaConsumerLoop(
            consumer.kafka_bootstrap_servers,
            group_id=f"tls-relay-check-{uuid.uuid4().hex[:6]}",
            topics=[topics.TRANSACTIONS_COMPLETED],
            handler=handle,
            topic_prefix=prefix,
            security=kafka_security(consumer),
        ).run(stop),
        PUBLISH_TIMEOUT_SECONDS,
    )
    amounts = [
        decode(m.value, content_type=m.headers["content-type"], event_type="transaction.completed")[
            "amount"
        ]
        for m in received
        if m.key == account_id
    ]
    assert amounts == [Decimal("250.00"), Decimal("40.10")]
