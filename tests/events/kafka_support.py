"""Helpers for tests against the real Kafka broker started by scripts/services/kafka.sh."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from banking.events.transport import Message, message_of

REPO_ROOT = Path(__file__).resolve().parents[2]


def kafka_bootstrap() -> str:
    bootstrap = os.environ.get("BANKING_KAFKA_BOOTSTRAP")
    if not bootstrap:
        pytest.fail(
            "Kafka tests need BANKING_KAFKA_BOOTSTRAP: run `make test`, or "
            '`eval "$(bash scripts/services/kafka.sh start)"` first.',
            pytrace=False,
        )
    return bootstrap


def kafka_script(action: str) -> None:
    """Stop or start the broker the tests use (the project's own script)."""
    subprocess.run(
        ["bash", str(REPO_ROOT / "scripts/services/kafka.sh"), action],
        check=True,
        capture_output=True,
        timeout=180,
    )


async def consume_records(
    bootstrap: str,
    topic: str,
    *,
    prefix: str,
    until: Callable[[list[ConsumerRecord[bytes, bytes]]], bool],
    timeout_seconds: float = 60,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read a topic from the beginning, as Kafka gives it (bytes, header bytes), until
    ``until(records)`` holds (or fail on timeout)."""
    consumer = AIOKafkaConsumer(
        prefix + topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
        metadata_max_age_ms=1000,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout_seconds
        while not until(records):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out on {topic}: {len(records)} messages read")
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def consume(
    bootstrap: str,
    topic: str,
    *,
    prefix: str,
    until: Callable[[list[Message]], bool],
    timeout_seconds: float = 60,
) -> list[Message]:
    """Read a topic from the beginning until ``until(messages)`` holds (or fail on timeout)."""
    messages: list[Message] = []

    def enough(records: list[ConsumerRecord[bytes, bytes]]) -> bool:
        # map only what arrived since the last poll: topics of thousands are read this way
        messages.extend(
            message_of(record, topic_prefix=prefix) for record in records[len(messages) :]
        )
        return until(messages)

    await consume_records(
        bootstrap, topic, prefix=prefix, until=enough, timeout_seconds=timeout_seconds
    )
    return messages


async def produce_raw(
    bootstrap: str,
    topic: str,
    value: bytes,
    *,
    key: bytes,
    headers: dict[str, str] | None = None,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            topic,
            value=value,
            key=key,
            headers=[(name, text.encode()) for name, text in (headers or {}).items()],
        )
    finally:
        await producer.stop()


def worker_process(name: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "banking.cli", "worker", name],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
