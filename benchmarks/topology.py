"""The audit trail's and the analytics sink's figures (issue 16): how far behind the commit
they are under a steady load, and what an event costs in Parquet.

One run, on PostgreSQL with Kafka, as in production: ``banking serve`` (two workers) with
``KAFKA_BOOTSTRAP_SERVERS``, ``banking worker relay``, ``banking worker audit`` and
``banking worker analytics`` (its dataset in a temporary directory, the default flush interval
and row groups), on a fresh database ``bench_topology`` seeded like ``banking bench`` and fresh
topics (a random ``KAFKA_TOPIC_PREFIX``):

1. The workers catch up with the seeding's events.
2. Debits are sent at a steady pace (open loop, ``--rate`` per second for ``--seconds``).
3. The run waits (bounded) until the audit trail holds every event committed since the load
   began and the dataset holds every leg finished since then.
4. Audit lag per event: ``recorded_at - event_time`` of its ``audit_records`` row (the row's
   commit is the audit's durability; ``event_time`` is ``ce_time``, the commit of the money
   movement). Analytics lag per row: its file's modification time (files are written under a
   temporary name and renamed: the rename is when the row became durable and visible) minus
   the row's ``event_time``. Both as p50 / p99 / max over the events committed during the load.
5. Parquet bytes per event: the dataset's file bytes over its rows, in total and per event
   type; and the workers' CPU per 1,000 events (utime + stime from /proc, during the load).
6. The books are reconciled, the database is dropped; the figures go to a JSON file.

Needs ``BANKING_PG_ADMIN_DSN`` and ``BANKING_KAFKA_BOOTSTRAP``. Every wait is bounded; all
processes listen on 127.0.0.1 only.

    .venv/bin/python -m benchmarks.topology [--rate 50] [--seconds 30] [--output FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pyarrow.parquet as pq
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from banking.events import topics
from banking.storage.migrate import upgrade
from banking.storage.tables import audit_records, outbox, transactions
from benchmarks.accounting import cpu_snapshot, machine_busy_cores
from benchmarks.config import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNUSABLE,
    BenchFailed,
    BenchUnusable,
    say,
)
from benchmarks.databases import drop_databases, recreate_databases
from benchmarks.fraud_notifications import (
    FINISHED_STATUSES,
    FraudBenchConfig,
    Stack,
    _create_topics,
    _environment,
    _kafka_environment,
    _paced_debits,
    read_config,
)
from benchmarks.processes import ServerSettings, free_port, start_server
from benchmarks.seeding import JWT_SECRET_LENGTH, SeededBank, check_books, seed_bank
from benchmarks.stats import percentile

DEFAULT_OUTPUT = Path("bench-results/topology.json")
DATABASE = "bench_topology"
RATE_DEFAULT = 50
SECONDS_DEFAULT = 30
CATCH_UP_TIMEOUT_SECONDS = 300.0
POLL_SECONDS = 0.5
QUIET_MACHINE_CORES = 0.25
REQUEST_TIMEOUT_SECONDS = 30.0
# Outbox topics the audit worker records (all but the schemas, which are not outbox rows).
AUDITED_TOPICS = tuple(topic for topic in topics.ALL_TOPICS if topic != topics.SCHEMAS)


def run_topology_benchmark(output: Path, **options: Any) -> int:
    """Measure, print and write the figures to ``output`` (``options``: ``rate``, ``seconds``);
    the exit code (0 ok, 1 failed, 2 could not start, 130 interrupted)."""
    rate = options.pop("rate", RATE_DEFAULT)
    seconds = options.pop("seconds", SECONDS_DEFAULT)
    try:
        config = read_config(output, webhook_rate=rate, webhook_seconds=seconds)
        config = replace(config, output=output)
        busy_before_cores = machine_busy_cores(2.0)
        if busy_before_cores is not None and busy_before_cores > QUIET_MACHINE_CORES:
            say(
                f"bench --topology: warning: the machine is not idle ({busy_before_cores:.2f} "
                "cores busy before the run); the lags will be longer and noisier"
            )
        report = asyncio.run(_run(config))
    except BenchUnusable as error:
        say(f"bench --topology: cannot run: {error}")
        return EXIT_UNUSABLE
    except BenchFailed as error:
        say(f"bench --topology: FAILED: {error}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        say("bench --topology: interrupted; processes stopped and the database dropped")
        return EXIT_INTERRUPTED
    report["machine"] = {
        "nproc": len(os.sched_getaffinity(0)),
        "busy_cores_before_run": busy_before_cores,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    _print_summary(report)
    if not report["reconcile_clean"] or report["load"]["failures"]:
        say(f"bench --topology: FAILED (books or requests); figures in {output}")
        return EXIT_FAILED
    say(f"bench --topology: figures in {output}")
    return EXIT_OK


def _database_url(config: FraudBenchConfig) -> str:
    url = config.admin_url.set(drivername="postgresql+asyncpg", database=DATABASE)
    return url.render_as_string(hide_password=False)


async def _run(config: FraudBenchConfig) -> dict[str, Any]:
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    url = _database_url(config)
    await recreate_databases(config.admin_url, [DATABASE])
    try:
        with (
            tempfile.TemporaryDirectory(prefix="banking-bench-topology-") as work,
            _environment(
                _kafka_environment(config, Path(work) / "models")
                | {"ANALYTICS_LOCATION": str(Path(work) / "analytics"), "FRAUD_ENABLED": "false"}
            ),
        ):
            say(f"bench --topology: migrating and seeding {DATABASE}")
            await asyncio.to_thread(upgrade, url)
            jwt_secret = secrets.token_urlsafe(JWT_SECRET_LENGTH)[:JWT_SECRET_LENGTH]
            bank = await seed_bank(url, jwt_secret)
            stack = Stack(config, url, jwt_secret, Path(work), config.output.parent, None)
            engine = create_async_engine(url, poolclass=NullPool)
            try:
                report = await _measure(stack, bank, engine, Path(work) / "analytics")
            finally:
                stack.stop_all()
                await engine.dispose()
        books = await check_books(url)
    finally:
        await drop_databases(config.admin_url, [DATABASE])
    return {
        "schema_version": 1,
        "started_at": started_at,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {
            "rate_per_second": config.webhook_rate,
            "seconds": config.webhook_seconds,
            "server_workers": 2,
            "analytics_flush_seconds": 10.0,
            "event_format": os.environ.get("EVENT_FORMAT", "arrow"),
        },
        **report,
        "reconcile_clean": books.clean,
        "reconcile_problems": books.problems[:20],
    }


async def _measure(
    stack: Stack, bank: SeededBank, engine: AsyncEngine, dataset: Path
) -> dict[str, Any]:
    config = stack.config
    await asyncio.to_thread(_create_topics, stack)
    settings = ServerSettings(stack.database_url, stack.jwt_secret, 2, 16, free_port())
    stack.server = await asyncio.to_thread(start_server, settings, stack.log_dir)
    for worker in ("relay", "audit", "analytics"):
        stack.start_worker(worker)
    say("bench --topology: waiting for the audit trail and the dataset to catch up")
    await _wait_until_caught_up(engine, dataset, since=None)
    pids = {name: stack.services[name].pid for name in ("audit", "analytics")}
    cpu_before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
    load_started = datetime.now(UTC)
    say(
        f"bench --topology: {config.webhook_rate} debits/s for {config.webhook_seconds} s "
        f"at {stack.server.base_url}"
    )
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(stack.server.base_url, timeout=timeout) as session:
        sent, failures = await _paced_debits(session, bank, config)
    waited = await _wait_until_caught_up(engine, dataset, since=load_started)
    cpu_after = {name: _cpu_seconds(pid) for name, pid in pids.items()}
    audited = await _audited_events(engine, load_started)
    audit_lags = await _audit_lags(engine, load_started)
    rows, lags, by_type = await asyncio.to_thread(_dataset_figures, dataset, load_started)
    events = {"audit": audited, "analytics": len(lags)}
    cpu = {
        name: {
            "cpu_seconds": round(cpu_after[name] - cpu_before[name], 3),
            "cpu_ms_per_1000_events": round(
                1000 * 1000 * (cpu_after[name] - cpu_before[name]) / max(1, events[name]), 1
            ),
        }
        for name in pids
    }
    return {
        "load": {"debits_answered": len(sent), "failures": failures},
        "caught_up_after_load_seconds": round(waited, 2),
        "audit": {"events": audited, "lag_ms": _summary(audit_lags)},
        "analytics": {
            "rows_since_load": len(lags),
            "lag_ms": _summary(lags),
            "dataset": rows,
            "by_event_type": by_type,
        },
        "worker_cpu": cpu,
    }


async def _wait_until_caught_up(
    engine: AsyncEngine, dataset: Path, *, since: datetime | None
) -> float:
    """Seconds until the audit trail has every outbox event and the dataset every finished leg
    (since ``since``, else all); BenchFailed after the bound."""
    started = time.monotonic()
    while True:
        outbox_events, audited = await _audit_progress(engine, since)
        legs = await _finished_legs(engine, since)
        rows = await asyncio.to_thread(_leg_rows, dataset, since)
        if audited >= outbox_events and rows >= legs:
            return time.monotonic() - started
        if time.monotonic() - started > CATCH_UP_TIMEOUT_SECONDS:
            raise BenchFailed(
                f"not caught up after {CATCH_UP_TIMEOUT_SECONDS:.0f} s: audit {audited} of "
                f"{outbox_events} events, analytics {rows} of {legs} legs"
            )
        await asyncio.sleep(POLL_SECONDS)


async def _audit_progress(engine: AsyncEngine, since: datetime | None) -> tuple[int, int]:
    events = select(func.count()).select_from(outbox).where(outbox.c.topic.in_(AUDITED_TOPICS))
    audited = select(func.count(func.distinct(audit_records.c.event_id))).where(
        audit_records.c.delivery == 0, audit_records.c.topic.in_(AUDITED_TOPICS)
    )
    if since is not None:
        events = events.where(outbox.c.created_at >= since)
        audited = audited.where(audit_records.c.event_time >= since)
    async with engine.connect() as connection:
        return (
            int((await connection.execute(events)).scalar_one()),
            int((await connection.execute(audited)).scalar_one()),
        )


async def _audited_events(engine: AsyncEngine, since: datetime) -> int:
    return (await _audit_progress(engine, since))[1]


async def _audit_lags(engine: AsyncEngine, since: datetime) -> list[float]:
    statement = select(audit_records.c.recorded_at, audit_records.c.event_time).where(
        audit_records.c.delivery == 0, audit_records.c.event_time >= since
    )
    async with engine.connect() as connection:
        rows = (await connection.execute(statement)).all()
    return [(recorded - event).total_seconds() for recorded, event in rows]


async def _finished_legs(engine: AsyncEngine, since: datetime | None) -> int:
    statement = select(func.count()).where(transactions.c.status.in_(FINISHED_STATUSES))
    if since is not None:
        statement = statement.where(transactions.c.created_at >= since)
    async with engine.connect() as connection:
        return int((await connection.execute(statement)).scalar_one())


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a worker process (and its children) so far."""
    seconds = cpu_snapshot(pid, None).server_seconds
    if seconds is None:
        raise BenchFailed(f"process {pid} is gone")
    return seconds


def _files(dataset: Path) -> list[Path]:
    return sorted(dataset.glob("event_type=*/date=*/*.parquet")) if dataset.exists() else []


def _leg_rows(dataset: Path, since: datetime | None) -> int:
    """Rows of finished legs (completed and failed events) in the dataset, since ``since``."""
    count = 0
    for path in _files(dataset):
        if not path.parent.parent.name.startswith("event_type=transaction."):
            continue
        if path.parent.parent.name == "event_type=transaction.rejected":
            continue
        times = pq.read_table(path, columns=["event_time"]).column("event_time").to_pylist()
        count += sum(1 for moment in times if since is None or moment >= since)
    return count


def _dataset_figures(
    dataset: Path, since: datetime
) -> tuple[dict[str, Any], list[float], dict[str, Any]]:
    """The dataset's bytes per row (in total and per event type), and each row's lag from its
    event's commit to its file's rename, for the rows of events committed since ``since``."""
    lags: list[float] = []
    totals: dict[str, list[int]] = {}
    for path in _files(dataset):
        event_type = path.parent.parent.name.removeprefix("event_type=")
        durable = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        times = pq.read_table(path, columns=["event_time"]).column("event_time").to_pylist()
        bytes_and_rows = totals.setdefault(event_type, [0, 0, 0])
        bytes_and_rows[0] += path.stat().st_size
        bytes_and_rows[1] += len(times)
        bytes_and_rows[2] += 1
        lags.extend((durable - moment).total_seconds() for moment in times if moment >= since)
    size = sum(value[0] for value in totals.values())
    rows = sum(value[1] for value in totals.values())
    files = sum(value[2] for value in totals.values())
    by_type = {
        name: {
            "files": value[2],
            "rows": value[1],
            "bytes_per_event": round(value[0] / value[1], 1) if value[1] else None,
        }
        for name, value in sorted(totals.items())
    }
    summary = {
        "files": files,
        "rows": rows,
        "bytes": size,
        "bytes_per_event": round(size / rows, 1) if rows else None,
    }
    return summary, lags, by_type


def _summary(seconds: list[float]) -> dict[str, float | int | None]:
    if not seconds:
        return {"count": 0, "p50": None, "p99": None, "max": None}
    ordered = sorted(seconds)
    return {
        "count": len(ordered),
        "p50": round(1000 * (percentile(ordered, 0.50) or 0.0), 1),
        "p99": round(1000 * (percentile(ordered, 0.99) or 0.0), 1),
        "max": round(1000 * ordered[-1], 1),
    }


def _print_summary(report: dict[str, Any]) -> None:
    audit, analytics = report["audit"], report["analytics"]
    say(
        f"  load: {report['load']['debits_answered']} debits answered "
        f"({report['settings']['rate_per_second']}/s), failures {report['load']['failures']}"
    )
    say(
        f"  audit lag (commit to audit row) ms: p50 {audit['lag_ms']['p50']}, "
        f"p99 {audit['lag_ms']['p99']}, max {audit['lag_ms']['max']} over {audit['events']} events"
    )
    say(
        f"  analytics lag (commit to durable Parquet row) ms: p50 {analytics['lag_ms']['p50']}, "
        f"p99 {analytics['lag_ms']['p99']}, max {analytics['lag_ms']['max']} "
        f"(flush every {report['settings']['analytics_flush_seconds']} s)"
    )
    dataset = analytics["dataset"]
    say(
        f"  Parquet: {dataset['bytes_per_event']} bytes per event "
        f"({dataset['rows']} rows in {dataset['files']} files)"
    )
    for name, figures in report["worker_cpu"].items():
        say(f"  {name} worker CPU: {figures['cpu_ms_per_1000_events']} ms per 1,000 events")


def main(arguments: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.topology",
        description="Audit and analytics lag behind the commit under a steady load; Parquet "
        "bytes per event (docs/benchmarks.md).",
    )
    parser.add_argument("--rate", type=int, default=RATE_DEFAULT, help="debits per second")
    parser.add_argument("--seconds", type=int, default=SECONDS_DEFAULT, help="load duration")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    options = parser.parse_args(arguments)
    return run_topology_benchmark(options.output, rate=options.rate, seconds=options.seconds)


if __name__ == "__main__":
    raise SystemExit(main())
