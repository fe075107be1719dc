"""``banking kafka create-topics`` publishes the event schemas on a compacted
``banking.schemas``, and ``banking schemas list|show`` prints them, from this release or from
the real cluster: run as an operator runs them (real processes, real Kafka)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid

import pyarrow as pa
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from banking.events import registry
from tests.events.kafka_support import kafka_bootstrap, produce_raw

BANKING = [sys.executable, "-m", "banking.cli"]


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[bytes]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    return subprocess.run(
        [*BANKING, *args],
        env={**environment, **env},
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_list_and_show_print_the_schemas_of_this_release() -> None:
    listed = _run(["schemas", "list"])
    assert listed.returncode == 0, listed.stderr
    ids = [entry["schema_id"] for entry in json.loads(listed.stdout)]
    assert ids == list(registry.SCHEMAS)
    assert "transaction.v2" in ids and "transaction.v1" in ids

    shown = _run(["schemas", "show", "urn:banking:schema:transaction.v2"])
    assert shown.returncode == 0, shown.stderr
    described = json.loads(shown.stdout)
    assert described["schema_id"] == "transaction.v2"
    assert described["content_types"][0] == "application/vnd.apache.arrow.recordbatch"
    amount = next(field for field in described["fields"] if field["name"] == "amount")
    assert amount["type"] == "decimal128(18, 2)"

    arrow = _run(["schemas", "show", "balance.v2", "--arrow"])
    assert arrow.returncode == 0, arrow.stderr
    schema = pa.ipc.read_schema(pa.py_buffer(arrow.stdout))
    assert schema.equals(registry.SCHEMAS["balance.v2"].schema)


def test_an_unknown_schema_is_an_error_that_names_the_known_ones() -> None:
    shown = _run(["schemas", "show", "transaction.v9"])
    assert shown.returncode == 2
    assert shown.stdout == b""
    assert b"no schema 'transaction.v9'" in shown.stderr and b"transaction.v2" in shown.stderr
    without_kafka = _run(["schemas", "list", "--kafka"])
    assert without_kafka.returncode == 2
    assert b"KAFKA_BOOTSTRAP_SERVERS is not set" in without_kafka.stderr


def test_create_topics_publishes_the_schemas_on_a_compacted_topic() -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap(),
        "KAFKA_TOPIC_PREFIX": prefix,
        "KAFKA_TOPIC_PARTITIONS": "2",
    }
    created = _run(["kafka", "create-topics"], **env)
    assert created.returncode == 0, created.stderr
    assert f"{prefix}banking.schemas" in json.loads(created.stdout)["created"]

    cluster = _run(["schemas", "list", "--kafka"], **env)
    assert cluster.returncode == 0, cluster.stderr
    published = {entry["schema_id"]: entry["fingerprint"] for entry in json.loads(cluster.stdout)}
    assert published == {key: entry.fingerprint for key, entry in registry.SCHEMAS.items()}
    again = _run(["kafka", "create-topics"], **env)  # idempotent: nothing new, same schemas
    assert json.loads(again.stdout) == {"created": []}
    shown = _run(["schemas", "show", "command.v2", "--kafka"], **env)
    assert json.loads(shown.stdout)["event_types"] == ["transaction.submitted"]

    async def topic_layout() -> tuple[int, str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap())
        await admin.start()
        try:
            topic = f"{prefix}banking.schemas"
            [description] = await admin.describe_topics([topic])
            [resource] = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic)]
            )
        finally:
            await admin.close()
        entries = {name: value for name, value, *_ in resource.resources[0][4]}
        return len(description["partitions"]), entries["cleanup.policy"]

    assert asyncio.run(topic_layout()) == (1, "compact")

    # A record that is not a schema (written by hand) is reported, not a crash.
    asyncio.run(
        produce_raw(kafka_bootstrap(), f"{prefix}banking.schemas", b"not arrow", key=b"broken.v1")
    )
    broken = _run(["schemas", "show", "broken.v1", "--kafka"], **env)
    assert broken.returncode == 1
    assert b"not an Arrow IPC schema" in broken.stderr and broken.stdout == b""
    listed = json.loads(_run(["schemas", "list", "--kafka"], **env).stdout)
    assert {"schema_id": "broken.v1"}.items() <= listed[-1].items() and "error" in listed[-1]
