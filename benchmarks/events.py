"""``banking bench --events``: the event backbone's figures (issue: event backbone).

1. Wire formats: bytes per event and encode/decode time per event, Arrow IPC against JSON,
   for the three event shapes (transaction, balance, command), on this machine.
2. Under the REST benchmark's load at full speed (``banking serve`` on PostgreSQL with Kafka
   configured, so the relay is its own ``banking worker relay`` process as in production): the
   relay's publish rate (events/s) and the end-to-end lag from commit (outbox write) to a
   consumer reading the event on Kafka, p50/p99; then how long the backlog takes to drain.

Needs ``BANKING_PG_ADMIN_DSN`` and ``BANKING_KAFKA_BOOTSTRAP`` (scripts/services/*.sh start).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from sqlalchemy.engine import make_url

from banking.events import topics
from banking.events.serialization import EventFormat, decode, encode
from banking.storage.migrate import upgrade
from benchmarks.config import EXIT_UNUSABLE, BenchUnusable, say
from benchmarks.databases import recreate_databases
from benchmarks.load_generator import LoadPlan, run_load_process
from benchmarks.processes import ServerSettings, Service, free_port, start_server, stop_server
from benchmarks.seeding import seed_bank
from benchmarks.stats import percentile

DURATION_SECONDS = 20
CONCURRENCY = 16
SERIALIZATION_EVENTS = 20_000
DRAIN_TIMEOUT_SECONDS = 120
RELAY_STOP_TIMEOUT_SECONDS = 30.0
EVENTS_DATABASE = "bench_events"

_SAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "transaction": (
        "transaction.completed",
        {
            "transaction_id": str(uuid.uuid4()),
            "account_id": str(uuid.uuid4()),
            "transaction_type": "transfer_out",
            "amount": "1234.56",
            "currency": "USD",
            "description": "rent November",
            "reference_id": "rent-2026-11",
            "timestamp": "2026-11-25T12:00:00.123456+00:00",
            "status": "completed",
            "related_transaction_id": str(uuid.uuid4()),
            "failure_code": None,
        },
    ),
    "balance": (
        "balance.updated",
        {
            "account_id": str(uuid.uuid4()),
            "current_balance": "98765.43",
            "available_balance": "98765.43",
            "currency": "USD",
            "version": 42,
            "timestamp": "2026-11-25T12:00:00.123456+00:00",
        },
    ),
    "command": (
        "transaction.submitted",
        {
            "transaction_id": str(uuid.uuid4()),
            "command": "transfer",
            "account_id": str(uuid.uuid4()),
            "destination_account_id": str(uuid.uuid4()),
            "amount": "10.00",
            "currency": "USD",
            "description": None,
            "reference_id": "r-1",
            "requested_by": {"user_id": str(uuid.uuid4()), "username": "alice", "role": "customer"},
            "timestamp": "2026-11-25T12:00:00+00:00",
        },
    ),
}


def serialization_figures(count: int = SERIALIZATION_EVENTS) -> dict[str, Any]:
    """Bytes per event and microseconds per encode and decode, per shape and format."""
    figures: dict[str, Any] = {}
    for shape, (event_type, payload) in _SAMPLES.items():
        for event_format in EventFormat:
            started = time.perf_counter()
            for _ in range(count):
                value, content_type = encode(event_type, 1, payload, event_format)
            encode_us = (time.perf_counter() - started) / count * 1e6
            started = time.perf_counter()
            for _ in range(count):
                decode(value, content_type=content_type, event_type=event_type)
            decode_us = (time.perf_counter() - started) / count * 1e6
            figures[f"{shape}/{event_format.value}"] = {
                "bytes_per_event": len(value),
                "encode_us_per_event": round(encode_us, 1),
                "decode_us_per_event": round(decode_us, 1),
            }
    return figures


async def _watch(
    bootstrap: str, prefix: str, stop: asyncio.Event, seen: list[tuple[float, float]]
) -> None:
    """Read completed-transaction and balance events; record (read time, lag seconds)."""
    consumer = AIOKafkaConsumer(
        prefix + topics.TRANSACTIONS_COMPLETED,
        prefix + topics.ACCOUNT_BALANCES,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="latest",
        metadata_max_age_ms=1000,
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            now = datetime.now(UTC)
            for records in batches.values():
                for record in records:
                    headers = {k: v.decode() for k, v in record.headers or ()}
                    committed = datetime.fromisoformat(headers["created_at"])
                    seen.append((time.monotonic(), (now - committed).total_seconds()))
    finally:
        await consumer.stop()


def run_event_benchmark(output: Path) -> int:
    """Measure, print and write the figures; the exit code of ``banking bench --events``."""
    admin_dsn = os.environ.get("BANKING_PG_ADMIN_DSN")
    bootstrap = os.environ.get("BANKING_KAFKA_BOOTSTRAP")
    if not admin_dsn or not bootstrap:
        sys.stderr.write(
            "needs BANKING_PG_ADMIN_DSN and BANKING_KAFKA_BOOTSTRAP: run "
            "scripts/services/postgres.sh start and scripts/services/kafka.sh start\n"
        )
        return EXIT_UNUSABLE
    result: dict[str, Any] = {"started_at": datetime.now(UTC).isoformat()}
    result["serialization"] = serialization_figures()
    try:
        result["under_load"] = asyncio.run(_under_load(admin_dsn, bootstrap, output.parent))
    except BenchUnusable as error:
        sys.stderr.write(f"bench --events: cannot run: {error}\n")
        return EXIT_UNUSABLE
    output.parent.mkdir(parents=True, exist_ok=True)
    report = json.dumps(result, indent=2)
    output.write_text(report)
    say(report)
    return 0


async def _under_load(admin_dsn: str, bootstrap: str, log_dir: Path) -> dict[str, Any]:
    admin_url = make_url(admin_dsn)
    database_url = admin_url.set(drivername="postgresql+asyncpg", database=EVENTS_DATABASE)
    await recreate_databases(admin_url, [EVENTS_DATABASE])
    url = database_url.render_as_string(hide_password=False)
    await asyncio.to_thread(upgrade, url)
    jwt_secret = secrets.token_urlsafe(36)
    seeded = await seed_bank(url, jwt_secret)
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    os.environ.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_TOPIC_PREFIX": prefix,
            "RATE_LIMIT_ENABLED": "false",
        }
    )
    server = start_server(ServerSettings(url, jwt_secret, 2, CONCURRENCY, free_port()), log_dir)
    relay = Service.start(  # started once, before the measured window
        "the relay",
        [sys.executable, "-m", "banking.cli", "worker", "relay"],
        environment={
            **os.environ,
            "DATABASE_URL": url,
            "JWT_SECRET": jwt_secret,
            "LOG_LEVEL": "WARNING",
        },
        log_path=log_dir / "relay.log",
    )
    seen: list[tuple[float, float]] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch(bootstrap, prefix, stop, seen))
    try:
        await asyncio.sleep(3)
        plan = LoadPlan(
            base_url=server.base_url,
            concurrency=CONCURRENCY,
            warmup_seconds=3.0,
            duration_seconds=DURATION_SECONDS,
            run_id=uuid.uuid4().hex[:8],
            teller_token=seeded.teller_token,
            customers=seeded.customers,
            hot_accounts=seeded.hot_accounts,
            server_pid=server.pid,
            postgres_pid=None,
        )
        load_started = time.monotonic()
        api = await asyncio.to_thread(run_load_process, plan)
        load_ended = time.monotonic()
        drained_after = None
        deadline = load_ended + DRAIN_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            if seen and time.monotonic() - seen[-1][0] > 2.0:
                drained_after = round(seen[-1][0] - load_ended, 2)
                break
    finally:
        stop.set()
        await watcher
        relay.stop(RELAY_STOP_TIMEOUT_SECONDS)
        stop_server(server)
    measured = sorted(lag for at, lag in seen if load_started + 3.0 <= at <= load_ended)
    window = max(load_ended - load_started - 3.0, 1e-9)
    return {
        "api_transfers_per_second": api.transfers_per_second,
        "api_requests_per_second": api.requests_per_second,
        "concurrency": CONCURRENCY,
        "relay_events_per_second": round(len(measured) / window, 1),
        "lag_p50_ms": round((percentile(measured, 0.5) or 0) * 1000, 1),
        "lag_p99_ms": round((percentile(measured, 0.99) or 0) * 1000, 1),
        "lag_max_ms": round(max(measured, default=0) * 1000, 1),
        "events_read": len(seen),
        "backlog_drained_seconds_after_load": drained_after,
    }
