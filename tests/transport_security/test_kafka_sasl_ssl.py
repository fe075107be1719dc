"""Kafka over SASL_SSL (SCRAM-SHA-512) with ACLs, on the broker of scripts/services/kafka-secure.sh:
the service moves money on PostgreSQL (verify-full) with Redis over TLS, the relay publishes
as ``relay`` and a consumer reads as ``consumer``; ``api`` may produce nothing, ``relay`` only
its own topics; a wrong password or an untrusted broker certificate is refused."""

from __future__ import annotations

import asyncio
import logging
import uuid
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError

from banking.events import topics
from banking.events.relay import OutboxRelay, relay_transactional_id
from banking.events.security import KafkaSecurity, KafkaSecurityError, kafka_security
from banking.events.serialization import decode
from banking.events.transport import KafkaConsumerLoop, KafkaPublisher, Message
from banking.workers.admin import create_topics
from tests.conftest import make_settings, running_bank
from tests.transport_security.support import credit_and_debit, kafka_settings

SETTLE_TIMEOUT_SECONDS = 60


def security_of(kafka_secure: dict[str, str], user: str, **changes: str) -> dict[str, Any]:
    values: dict[str, Any] = {
        "protocol": "SASL_SSL",
        "sasl_username": user,
        "sasl_password": kafka_secure[f"BANKING_KAFKA_SECURE_{user.upper()}_PASSWORD"],
        "ssl_cafile": kafka_secure["BANKING_KAFKA_SECURE_CA"],
        **changes,
    }
    return KafkaSecurity(**values).client_kwargs()


async def test_money_moves_and_its_events_travel_over_sasl_ssl(
    kafka_secure: dict[str, str],
    redis_tls: dict[str, str],
    certs: dict[str, str],
    tls_database: str,
    prefix: str,
) -> None:
    await create_topics(
        make_settings(tls_database, **kafka_settings(kafka_secure, "admin", prefix))
    )
    redis_url = f"{redis_tls['BANKING_REDIS_TLS_URL']}?ssl_ca_certs={certs['ca']}"
    redis = aioredis.Redis.from_url(redis_url)
    await redis.flushdb()
    api = make_settings(
        tls_database, redis_url=redis_url, **kafka_settings(kafka_secure, "api", prefix)
    )
    async with running_bank(api) as bank:
        account_id = await credit_and_debit(bank)
        relay_settings = make_settings(
            tls_database, **kafka_settings(kafka_secure, "relay", prefix)
        )
        publisher = KafkaPublisher(
            relay_settings.kafka_bootstrap_servers,
            topic_prefix=prefix,
            transactional_id=relay_transactional_id(prefix),
            security=kafka_security(relay_settings),
        )
        try:
            assert await OutboxRelay(bank.container.database, publisher).drain() > 0
        finally:
            await publisher.stop()
    # The service kept its cache and rate limits in the TLS Redis.
    assert await redis.dbsize() > 0
    await redis.aclose()

    received: list[Message] = []
    stop = asyncio.Event()

    async def handle(message: Message) -> None:
        received.append(message)
        if len([m for m in received if m.key == account_id]) >= 2:
            stop.set()

    consumer_settings = make_settings(
        tls_database, **kafka_settings(kafka_secure, "consumer", prefix)
    )
    loop = KafkaConsumerLoop(
        consumer_settings.kafka_bootstrap_servers,
        group_id="tls-check",
        topics=[topics.TRANSACTIONS_COMPLETED],
        handler=handle,
        topic_prefix=prefix,
        security=kafka_security(consumer_settings),
    )
    await asyncio.wait_for(loop.run(stop), SETTLE_TIMEOUT_SECONDS)
    amounts = [
        decode(m.value, content_type=m.headers["content-type"], event_type="transaction.completed")[
            "amount"
        ]
        for m in received
        if m.key == account_id
    ]
    assert amounts == [Decimal("250.00"), Decimal("40.10")]


async def _produce(security: dict[str, Any], bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=10000, **security)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"not allowed")
    finally:
        await producer.stop()


async def test_the_api_principal_cannot_produce(kafka_secure: dict[str, str], prefix: str) -> None:
    admin = make_settings(
        "sqlite+aiosqlite:///:memory:", **kafka_settings(kafka_secure, "admin", prefix)
    )
    await create_topics(admin)
    with pytest.raises(TopicAuthorizationFailedError):
        await _produce(
            security_of(kafka_secure, "api"),
            kafka_secure["BANKING_KAFKA_SECURE_BOOTSTRAP"],
            prefix + topics.TRANSACTIONS_SUBMITTED,
        )


async def test_the_relay_cannot_write_a_topic_that_is_not_its_own(
    kafka_secure: dict[str, str],
) -> None:
    # Created by the admin, outside the relay's prefix.
    foreign = f"foreign.{uuid.uuid4().hex[:10]}."
    admin = make_settings(
        "sqlite+aiosqlite:///:memory:", **kafka_settings(kafka_secure, "admin", foreign)
    )
    await create_topics(admin)
    with pytest.raises(TopicAuthorizationFailedError):
        await _produce(
            security_of(kafka_secure, "relay"),
            kafka_secure["BANKING_KAFKA_SECURE_BOOTSTRAP"],
            foreign + topics.TRANSACTIONS_COMPLETED,
        )


async def test_a_wrong_password_is_refused_with_a_clear_error(
    kafka_secure: dict[str, str], prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="aiokafka")
    with pytest.raises(KafkaConnectionError):
        await _produce(
            security_of(kafka_secure, "relay", sasl_password="not-the-password"),
            kafka_secure["BANKING_KAFKA_SECURE_BOOTSTRAP"],
            prefix + topics.TRANSACTIONS_COMPLETED,
        )
    assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in caplog.text
    assert "not-the-password" not in caplog.text


async def test_a_broker_the_ca_did_not_sign_is_refused(
    kafka_secure: dict[str, str],
    certs: dict[str, str],
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="aiokafka")
    with pytest.raises(KafkaConnectionError):
        await _produce(
            security_of(kafka_secure, "relay", ssl_cafile=certs["other_ca"]),
            kafka_secure["BANKING_KAFKA_SECURE_BOOTSTRAP"],
            prefix + topics.TRANSACTIONS_COMPLETED,
        )
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sasl_password": ""}, "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
        ({"protocol": "SSL"}, "not SASL_SSL"),
        ({"sasl_mechanism": "PLAIN"}, "KAFKA_SASL_MECHANISM must be one of"),
        ({"ssl_cafile": "/nonexistent/ca.crt"}, "cannot load the Kafka TLS files"),
    ],
)
def test_unusable_kafka_security_settings_are_refused(
    changes: dict[str, str], message: str
) -> None:
    values: dict[str, Any] = {
        "protocol": "SASL_SSL",
        "sasl_username": "relay",
        "sasl_password": "s3cret-value",
        **changes,
    }
    with pytest.raises(KafkaSecurityError, match=message) as raised:
        KafkaSecurity(**values).client_kwargs()
    assert "s3cret-value" not in str(raised.value)
    assert "s3cret-value" not in repr(KafkaSecurity(**values))


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "needs KAFKA_SASL_USERNAME"),
        (
            {"kafka_sasl_username": "relay", "kafka_sasl_password": "s3cret-value"},
            "not SASL_SSL",
        ),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_certfile": "/c.pem"}, "go together"),
        ({"kafka_security_protocol": "SASL-PLAIN"}, "kafka_security_protocol"),
    ],
)
def test_the_service_refuses_inconsistent_kafka_security_settings_at_start(
    environment: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        make_settings("sqlite+aiosqlite:///:memory:", **environment)
    assert "s3cret-value" not in str(raised.value)
