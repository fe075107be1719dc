"""The downstream services' figures (issue 12): what fraud scoring costs the REST path, and how
long a webhook delivery takes from commit to the receiver.

One run, on PostgreSQL with Kafka (``banking serve`` with ``KAFKA_BOOTSTRAP_SERVERS``, its relay
as ``banking worker relay``, as in production), on a fresh database ``bench_fraud`` seeded like
``banking bench`` and fresh topics (a random ``KAFKA_TOPIC_PREFIX``):

1. Webhooks: ``banking worker notifications`` is started and left to catch up with the seeding's
   events; a real HTTP receiver listens on 127.0.0.1 and the teller (staff: a staff webhook
   receives every account's events) registers it for ``transaction.completed``; then debits are
   sent at a steady pace (open loop, ``--webhook-rate`` per second for ``--webhook-seconds``).
   Latency is the receiver's arrival time minus the delivery body's ``created_at``, which is the
   leg's ``created_at`` (the same instant as ``data.timestamp``, set in the transaction that
   commits the leg); also from the API's response to the receiver (the response comes after the
   commit). Deliveries are counted against the debits the API completed, by transaction id, and
   their signatures are checked. The notifications worker is stopped afterwards.
2. Scoring cost: ``banking bench``'s mixed load (``benchmarks.load_generator``) at one
   concurrency, three times: without the fraud worker, with ``banking worker fraud`` running
   (a model trained on a simulation, as ``banking fraud train --simulated`` makes it), and
   without it again. Before the "with" round the fraud worker is started and left to score the
   backlog (a catch-up rate), after it the run waits until every leg is scored (the worker's
   lag after the load, and per leg from commit to score). The ratio is the "with" round's
   transfers per second over the mean of the two "without" rounds, which bracket it.
3. The books are reconciled, the database is dropped; the figures go to a JSON file.

Needs ``BANKING_PG_ADMIN_DSN`` and ``BANKING_KAFKA_BOOTSTRAP`` (``scripts/services/all.sh env
postgres kafka``). Every wait is bounded; everything listens on 127.0.0.1 only.

    .venv/bin/python -m benchmarks.fraud_notifications [--concurrency 8] [--seconds 15]
        [--webhook-rate 50] [--webhook-seconds 30] [--output FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from banking.fraud.model import save
from banking.fraud.training import train_on_simulation
from banking.storage.migrate import upgrade
from banking.storage.tables import consumed_events, fraud_scores, transactions, webhook_deliveries
from benchmarks.accounting import CpuSnapshot, cpu_figures, cpu_snapshot, machine_busy_cores
from benchmarks.config import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNUSABLE,
    LOCAL_HOSTS,
    WARMUP_SECONDS,
    BenchFailed,
    BenchUnusable,
    say,
)
from benchmarks.databases import drop_databases, recreate_databases
from benchmarks.load_generator import LoadPlan, run_load_process
from benchmarks.processes import (
    SERVER_STOP_TIMEOUT_SECONDS,
    Server,
    ServerSettings,
    Service,
    free_port,
    start_server,
    stop_server,
)
from benchmarks.seeding import CURRENCY, JWT_SECRET_LENGTH, SeededBank, check_books, seed_bank
from benchmarks.stats import ApiFigures, percentile

DEFAULT_OUTPUT = Path("bench-results/fraud-notifications.json")
DATABASE = "bench_fraud"
CONCURRENCY_DEFAULT = 8
SECONDS_DEFAULT = 15
WEBHOOK_RATE_DEFAULT = 50
WEBHOOK_SECONDS_DEFAULT = 30
CONCURRENCY_MAX = 256
SECONDS_MAX = 600
WEBHOOK_RATE_MAX = 1000
TRAIN_SEED = 1  # the seed `banking fraud train --simulated` uses by default

FINISHED_STATUSES = ("completed", "failed")
WEBHOOK_EVENT_TYPE = "transaction.completed"
WEBHOOK_PATH = "/hooks/banking"
DEBIT_AMOUNT = "1.00"
IN_FLIGHT_MAX = 256  # open-loop debits waiting for an answer at once
REQUEST_TIMEOUT_SECONDS = 30.0
CATCH_UP_TIMEOUT_SECONDS = 300.0
REASONS_REPORTED_MAX = 10
DELIVERY_TIMEOUT_SECONDS = 90.0
POLL_SECONDS = 0.25
QUIET_MACHINE_CORES = 0.25
WORKER_START_TIMEOUT_SECONDS = 30.0
TOPICS_TIMEOUT_SECONDS = 60.0
WORKER_LOG_LEVEL = "WARNING"
TCP_LISTEN = "0A"  # the state column of /proc/net/tcp
# An operator's setting, here to let the receiver on 127.0.0.1 through the SSRF check.
ALLOWED_NETWORKS = '["127.0.0.1/32"]'


@dataclass(frozen=True)
class FraudBenchConfig:
    """The settings of one run."""

    admin_url: URL
    bootstrap: str
    output: Path
    concurrency: int = CONCURRENCY_DEFAULT
    seconds: int = SECONDS_DEFAULT
    warmup_seconds: float = WARMUP_SECONDS
    webhook_rate: int = WEBHOOK_RATE_DEFAULT
    webhook_seconds: int = WEBHOOK_SECONDS_DEFAULT

    def database_url(self) -> str:
        """The asyncpg URL of the run's database."""
        url = self.admin_url.set(drivername="postgresql+asyncpg", database=DATABASE)
        return url.render_as_string(hide_password=False)


def read_config(output: Path, **options: Any) -> FraudBenchConfig:
    """The run's settings: the servers from the environment, the sizes from ``options``;
    ``BenchUnusable`` when something is missing or out of range."""
    dsn = os.environ.get("BANKING_PG_ADMIN_DSN", "").strip()
    bootstrap = os.environ.get("BANKING_KAFKA_BOOTSTRAP", "").strip()
    if not dsn or not bootstrap:
        raise BenchUnusable(
            "needs BANKING_PG_ADMIN_DSN and BANKING_KAFKA_BOOTSTRAP: "
            'eval "$(bash scripts/services/all.sh env postgres kafka)" after starting them'
        )
    try:
        admin_url = make_url(dsn)
    except (ArgumentError, ValueError) as error:
        raise BenchUnusable(f"BANKING_PG_ADMIN_DSN is not a valid URL: {error}") from error
    kafka_host = bootstrap.rsplit(":", 1)[0]
    if admin_url.host not in LOCAL_HOSTS or kafka_host not in LOCAL_HOSTS:
        raise BenchUnusable("benchmarks only target 127.0.0.1")
    config = FraudBenchConfig(admin_url, bootstrap, output, **options)
    limits = {
        "concurrency": (config.concurrency, CONCURRENCY_MAX),
        "seconds": (config.seconds, SECONDS_MAX),
        "webhook_rate": (config.webhook_rate, WEBHOOK_RATE_MAX),
        "webhook_seconds": (config.webhook_seconds, SECONDS_MAX),
    }
    for name, (value, maximum) in limits.items():
        if not 1 <= value <= maximum:
            raise BenchUnusable(f"{name} must be from 1 to {maximum}, not {value}")
    return config


def run_fraud_benchmark(output: Path, **options: Any) -> int:
    """Measure, print and write the figures to ``output`` (``options``: the sizes of
    ``FraudBenchConfig``, else its defaults); the exit code (0 ok, 1 failed, 2 could not
    start, 130 interrupted)."""
    try:
        config = read_config(output, **options)
        busy_before_cores = machine_busy_cores(2.0)
        if busy_before_cores is not None and busy_before_cores > QUIET_MACHINE_CORES:
            say(
                f"bench --fraud: warning: the machine is not idle ({busy_before_cores:.2f} "
                "cores busy before the run); the rates will be lower and noisier"
            )
        report = asyncio.run(_run(config))
    except BenchUnusable as error:
        say(f"bench --fraud: cannot run: {error}")
        return EXIT_UNUSABLE
    except BenchFailed as error:
        say(f"bench --fraud: FAILED: {error}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        say("bench --fraud: interrupted; processes stopped and the database dropped")
        return EXIT_INTERRUPTED
    report["machine"] = {
        "nproc": len(os.sched_getaffinity(0)),
        "busy_cores_before_run": busy_before_cores,
    }
    config.output.parent.mkdir(parents=True, exist_ok=True)
    config.output.write_text(json.dumps(report, indent=2) + "\n")
    _print_summary(report)
    return _verdict(report, config.output)


# --- the run ------------------------------------------------------------------------------


@dataclass
class Stack:
    """The processes of the run and the settings they share."""

    config: FraudBenchConfig
    database_url: str
    jwt_secret: str
    model_dir: Path
    log_dir: Path
    postgres_pid: int | None
    kafka_pid: int | None = None
    server: Server | None = None
    services: dict[str, Service] = field(default_factory=dict)

    def worker_environment(self) -> dict[str, str]:
        """What ``banking worker NAME`` starts with (the Kafka settings are in os.environ)."""
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "JWT_SECRET": self.jwt_secret,
            "LOG_LEVEL": WORKER_LOG_LEVEL,
        }

    def start_worker(self, name: str) -> Service:
        """``banking worker NAME`` in its own session, output in ``<name>.log``."""
        service = Service.start(
            f"the {name} worker",
            [sys.executable, "-m", "banking.cli", "worker", name],
            environment=self.worker_environment(),
            log_path=self.log_dir / f"{name}.log",
            timeout_seconds=WORKER_START_TIMEOUT_SECONDS,
        )
        self.services[name] = service
        return service

    def stop_worker(self, name: str) -> None:
        """SIGTERM and wait (the worker commits its offsets and leaves its group)."""
        service = self.services.pop(name, None)
        if service is not None:
            service.stop(SERVER_STOP_TIMEOUT_SECONDS)

    def stop_all(self) -> None:
        """Every process still running, the server last."""
        for name in list(self.services):
            self.stop_worker(name)
        if self.server is not None:
            stop_server(self.server)
            self.server = None


async def _run(config: FraudBenchConfig) -> dict[str, Any]:
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    url = config.database_url()
    postgres = await recreate_databases(config.admin_url, [DATABASE])
    try:
        with (
            tempfile.TemporaryDirectory(prefix="banking-bench-fraud-") as model_dir,
            _environment(_kafka_environment(config, Path(model_dir))),
        ):
            say(f"bench --fraud: migrating and seeding {DATABASE}; training the fraud model")
            await asyncio.to_thread(upgrade, url)
            jwt_secret = secrets.token_urlsafe(JWT_SECRET_LENGTH)[:JWT_SECRET_LENGTH]
            bank = await seed_bank(url, jwt_secret)
            model = await asyncio.to_thread(train_on_simulation, TRAIN_SEED)
            await asyncio.to_thread(save, model, Path(model_dir))
            stack = Stack(
                config,
                url,
                jwt_secret,
                Path(model_dir),
                config.output.parent,
                postgres.postmaster_pid,
            )
            engine = create_async_engine(url, poolclass=NullPool)
            try:
                report = await _measure(stack, bank, engine)
            finally:
                stack.stop_all()
                await engine.dispose()
            report["fraud_cost"]["model_version"] = model.version
        books = await check_books(url)
    finally:
        await drop_databases(config.admin_url, [DATABASE])
    return {
        "schema_version": 1,
        "started_at": started_at,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {
            "concurrency": config.concurrency,
            "seconds": config.seconds,
            "warmup_seconds": config.warmup_seconds,
            "webhook_rate_per_second": config.webhook_rate,
            "webhook_seconds": config.webhook_seconds,
            "server_workers": 2,
            "event_format": os.environ.get("EVENT_FORMAT", "arrow"),
        },
        **report,
        "reconcile_clean": books.clean,
        "reconcile_problems": books.problems[:20],
    }


def _kafka_environment(config: FraudBenchConfig, model_dir: Path) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": config.bootstrap,
        "KAFKA_TOPIC_PREFIX": f"benchfraud{uuid.uuid4().hex[:6]}.",
        "WEBHOOK_ALLOWED_NETWORKS": ALLOWED_NETWORKS,  # the API and the worker both check
        "FRAUD_MODEL_DIR": str(model_dir),
    }


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` (what ``start_server`` passes on), restored after."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


async def _measure(stack: Stack, bank: SeededBank, engine: AsyncEngine) -> dict[str, Any]:
    config = stack.config
    await asyncio.to_thread(_create_topics, stack)
    settings = ServerSettings(
        stack.database_url, stack.jwt_secret, 2, config.concurrency, free_port()
    )
    stack.server = await asyncio.to_thread(start_server, settings, stack.log_dir)
    stack.start_worker("relay")
    stack.kafka_pid = listening_pid(int(config.bootstrap.rsplit(":", 1)[1]))
    say(f"bench --fraud: server ready at {stack.server.base_url}, relay running")
    webhooks = await _webhook_latency(stack, bank, engine)
    fraud_cost = await _fraud_cost(stack, bank, engine)
    return {"webhook_latency": webhooks, "fraud_cost": fraud_cost}


def _create_topics(stack: Stack) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "banking.cli", "kafka", "create-topics"],
        env=stack.worker_environment(),
        capture_output=True,
        text=True,
        timeout=TOPICS_TIMEOUT_SECONDS,
        check=False,
    )
    if completed.returncode != 0:
        raise BenchFailed(f"banking kafka create-topics failed:\n{completed.stderr[-2000:]}")


# --- the database's view: what is finished, scored, routed --------------------------------


async def _finished_legs(engine: AsyncEngine) -> int:
    statement = select(func.count()).where(transactions.c.status.in_(FINISHED_STATUSES))
    async with engine.connect() as connection:
        return int(await connection.scalar(statement) or 0)


async def _scored_legs(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(fraud_scores)) or 0)


async def _routed_events(engine: AsyncEngine) -> int:
    statement = select(func.count()).where(consumed_events.c.consumer == "notifications")
    async with engine.connect() as connection:
        return int(await connection.scalar(statement) or 0)


async def _wait_until_caught_up(
    count: Callable[[AsyncEngine], Awaitable[int]], engine: AsyncEngine, what: str
) -> float:
    """Seconds until ``count`` reaches the finished legs (``BenchFailed`` after the bound)."""
    started = time.monotonic()
    while time.monotonic() - started < CATCH_UP_TIMEOUT_SECONDS:
        if await count(engine) >= await _finished_legs(engine):
            return time.monotonic() - started
        await asyncio.sleep(POLL_SECONDS)
    raise BenchFailed(f"{what} did not catch up within {CATCH_UP_TIMEOUT_SECONDS:g} s")


# --- 1. webhook delivery latency ----------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    """One request the receiver got: when (Unix seconds), its body and signature header."""

    at: float
    body: bytes
    signature: str


@dataclass(frozen=True)
class SentDebit:
    """A debit the API completed: its leg and when the answer came (Unix seconds)."""

    transaction_id: str
    answered_at: float


async def _webhook_latency(stack: Stack, bank: SeededBank, engine: AsyncEngine) -> dict[str, Any]:
    config = stack.config
    assert stack.server is not None
    stack.start_worker("notifications")
    await _wait_until_caught_up(_routed_events, engine, "the notifications worker")
    arrivals: list[Arrival] = []
    receiver, receiver_url = await _start_receiver(arrivals)
    try:
        async with aiohttp.ClientSession(
            stack.server.base_url, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
        ) as session:
            secret = await _register_webhook(session, bank.teller_token, receiver_url)
            say(
                f"bench --fraud: webhooks: {config.webhook_rate} debits/s for "
                f"{config.webhook_seconds} s to a receiver at {receiver_url}"
            )
            sent, failures = await _paced_debits(session, bank, config)
        delivered_after = await _wait_for_deliveries(arrivals, sent)
    finally:
        await receiver.cleanup()
        stack.stop_worker("notifications")
    routed = await _routed_at(engine)
    return _delivery_figures(arrivals, sent, failures, secret, config, delivered_after, routed)


async def _routed_at(engine: AsyncEngine) -> dict[str, float]:
    """When the notifications worker wrote each event's delivery (Unix seconds, by event id)."""
    statement = select(webhook_deliveries.c.event_id, webhook_deliveries.c.created_at)
    async with engine.connect() as connection:
        rows = (await connection.execute(statement)).all()
    return {str(event_id): created_at.timestamp() for event_id, created_at in rows}


async def _start_receiver(arrivals: list[Arrival]) -> tuple[web.AppRunner, str]:
    """A real HTTP receiver on 127.0.0.1 that records every request and answers 204."""

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        arrivals.append(Arrival(time.time(), body, request.headers.get("Banking-Signature", "")))
        return web.Response(status=204)

    application = web.Application()
    application.router.add_post(WEBHOOK_PATH, receive)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}{WEBHOOK_PATH}"


async def _register_webhook(session: aiohttp.ClientSession, token: str, url: str) -> str:
    """The staff webhook for completed legs; its signing secret."""
    async with session.post(
        "/api/v1/webhooks",
        json={"url": url, "event_types": [WEBHOOK_EVENT_TYPE]},
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        body = await response.json()
        if response.status != 201:
            raise BenchFailed(f"registering the webhook answered {response.status}: {body}")
        return str(body["secret"])


async def _paced_debits(
    session: aiohttp.ClientSession, bank: SeededBank, config: FraudBenchConfig
) -> tuple[list[SentDebit], dict[str, int]]:
    """``webhook_rate`` debits a second for ``webhook_seconds``, each sent at its own time
    whatever the previous ones are doing (open loop), spread over the customers' accounts."""
    accounts = [
        (customer.token, account_id)
        for customer in bank.customers
        for account_id in customer.cold_account_ids
    ]
    total = config.webhook_rate * config.webhook_seconds
    sent: list[SentDebit] = []
    failures: dict[str, int] = {}
    in_flight = asyncio.Semaphore(IN_FLIGHT_MAX)
    run_id = uuid.uuid4().hex[:8]

    async def debit(index: int) -> None:
        token, account_id = accounts[index % len(accounts)]
        body = {
            "account_id": account_id,
            "amount": DEBIT_AMOUNT,
            "currency": CURRENCY,
            "reference_id": f"bench-hook-{run_id}-{index}",
        }
        async with in_flight:
            try:
                async with session.post(
                    "/api/v1/transactions/debit",
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                ) as response:
                    answer = await response.json()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as error:
                failures[type(error).__name__] = failures.get(type(error).__name__, 0) + 1
                return
        if status == 200:
            sent.append(SentDebit(str(answer["transaction_id"]), time.time()))
        else:
            failures[str(status)] = failures.get(str(status), 0) + 1

    tasks: list[asyncio.Task[None]] = []
    start = time.monotonic()
    for index in range(total):
        delay = start + index / config.webhook_rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(debit(index)))
    await asyncio.gather(*tasks)
    return sent, failures


def _leg_of(arrival: Arrival) -> str | None:
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return str(json.loads(arrival.body)["data"]["transaction_id"])
    return None


async def _wait_for_deliveries(arrivals: list[Arrival], sent: list[SentDebit]) -> float | None:
    """Seconds after the last debit until every completed debit was delivered; None when
    some were still missing after ``DELIVERY_TIMEOUT_SECONDS``."""
    expected = {debit.transaction_id for debit in sent}
    started = time.monotonic()
    while time.monotonic() - started < DELIVERY_TIMEOUT_SECONDS:
        if expected <= {_leg_of(arrival) for arrival in arrivals}:
            return round(time.monotonic() - started, 2)
        await asyncio.sleep(POLL_SECONDS)
    return None


def _signed(secret: str, header: str, body: bytes) -> bool:
    """docs/webhooks.md's check, without the replay window (arrivals are checked later)."""
    fields = [item.strip().partition("=") for item in header.split(",")]
    timestamps = [value for name, _, value in fields if name == "t"]
    signatures = [value for name, _, value in fields if name == "v1"]
    if len(timestamps) != 1:
        return False
    signed = timestamps[0].encode() + b"." + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, signature) for signature in signatures)


def _delivery_figures(
    arrivals: list[Arrival],
    sent: list[SentDebit],
    failures: dict[str, int],
    secret: str,
    config: FraudBenchConfig,
    delivered_after: float | None,
    routed: dict[str, float],
) -> dict[str, Any]:
    answered = {debit.transaction_id: debit.answered_at for debit in sent}
    from_commit: list[float] = []
    from_answer: list[float] = []
    commit_to_routed: list[float] = []
    routed_to_received: list[float] = []
    seen: set[str] = set()
    duplicates = unsigned = mismatched_times = 0
    for arrival in arrivals:
        document = json.loads(arrival.body)
        leg = str(document["data"]["transaction_id"])
        if leg not in answered:
            continue  # not one of the measured debits
        if not _signed(secret, arrival.signature, arrival.body):
            unsigned += 1
        event_id = str(document["id"])
        if event_id in seen:
            duplicates += 1
            continue
        seen.add(event_id)
        created_at = datetime.fromisoformat(document["created_at"])
        if document["data"].get("timestamp") != document["created_at"]:
            mismatched_times += 1
        from_commit.append(arrival.at - created_at.timestamp())
        from_answer.append(arrival.at - answered[leg])
        if event_id in routed:
            commit_to_routed.append(routed[event_id] - created_at.timestamp())
            routed_to_received.append(arrival.at - routed[event_id])
    third = len(from_commit) // 3  # in arrival order: does the pipeline keep up with the pace?
    return {
        "rate_per_second": config.webhook_rate,
        "seconds": config.webhook_seconds,
        "debits_sent": config.webhook_rate * config.webhook_seconds,
        "debits_completed": len(sent),
        "debit_failures": failures,
        "delivered": len(seen),
        "duplicate_deliveries": duplicates,
        "bad_signatures": unsigned,
        "all_delivered_seconds_after_last_debit": delivered_after,
        "measured_from": (
            "the delivery body's created_at: the leg's created_at (= data.timestamp), set in "
            "the transaction that commits the leg"
        ),
        "created_at_differs_from_data_timestamp": mismatched_times,
        "latency_ms": _latency_ms(from_commit),
        "from_api_response_latency_ms": _latency_ms(from_answer),
        "first_third_latency_ms": _latency_ms(from_commit[:third]),
        "last_third_latency_ms": _latency_ms(from_commit[len(from_commit) - third :]),
        # The delivery row is written by the notifications worker when it routes the event.
        "commit_to_routed_ms": _latency_ms(commit_to_routed),
        "routed_to_received_ms": _latency_ms(routed_to_received),
    }


def _latency_ms(seconds: list[float]) -> dict[str, float | None]:
    ordered = sorted(seconds)

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 1)

    return {
        "p50": ms(percentile(ordered, 0.50)),
        "p99": ms(percentile(ordered, 0.99)),
        "max": ms(ordered[-1] if ordered else None),
    }


# --- 2. the cost of scoring on the REST path ----------------------------------------------


async def _fraud_cost(stack: Stack, bank: SeededBank, engine: AsyncEngine) -> dict[str, Any]:
    rounds: dict[str, dict[str, Any]] = {}
    rounds["without_1"] = await _load_round(stack, bank, "without the fraud worker")
    scored_before = await _scored_legs(engine)
    backlog = await _finished_legs(engine)
    fraud = stack.start_worker("fraud")
    cpu_before = cpu_snapshot(fraud.pid, stack.postgres_pid)
    started_seconds = await _wait_until_caught_up(_scored_legs, engine, "the fraud worker")
    cpu_after = cpu_snapshot(fraud.pid, stack.postgres_pid)
    window_start = datetime.now(UTC)
    catch_up = await _catch_up(engine, window_start, started_seconds)
    catch_up.update(_cpu_ms_per_leg(cpu_before, cpu_after, backlog - scored_before))
    say(f"bench --fraud: the fraud worker scored the backlog: {catch_up}")
    rounds["with"] = await _load_round(stack, bank, "with the fraud worker", fraud)
    window_end = datetime.now(UTC)
    after_load = await _wait_until_caught_up(_scored_legs, engine, "the fraud worker")
    scoring = await _scoring_lag(engine, window_start, window_end)
    stack.stop_worker("fraud")
    rounds["without_2"] = await _load_round(stack, bank, "without the fraud worker, again")
    without = [rounds[name]["transfers_per_second"] for name in ("without_1", "without_2")]
    without_mean = sum(without) / len(without)
    with_fraud = rounds["with"]["transfers_per_second"]
    return {
        "concurrency": stack.config.concurrency,
        "rounds": rounds,
        "transfers_per_second_without": round(without_mean, 1),
        "transfers_per_second_with": with_fraud,
        "ratio_with_to_without": round(with_fraud / without_mean, 3) if without_mean else None,
        "scored_without_the_worker": scored_before,  # 0: nothing else scores
        "backlog_legs": backlog,
        "catch_up": catch_up,
        "all_scored_seconds_after_load": round(after_load, 2),
        "during_load": scoring,
    }


async def _load_round(
    stack: Stack, bank: SeededBank, what: str, fraud: Service | None = None
) -> dict[str, Any]:
    config = stack.config
    assert stack.server is not None
    say(f"bench --fraud: load at concurrency {config.concurrency} {what}")
    plan = LoadPlan(
        base_url=stack.server.base_url,
        concurrency=config.concurrency,
        warmup_seconds=config.warmup_seconds,
        duration_seconds=config.seconds,
        run_id=uuid.uuid4().hex[:12],
        teller_token=bank.teller_token,
        customers=bank.customers,
        hot_accounts=bank.hot_accounts,
        server_pid=stack.server.pid,
        postgres_pid=stack.postgres_pid,
    )
    watched = {name: service.pid for name, service in stack.services.items()}
    if stack.kafka_pid is not None:
        watched["kafka"] = stack.kafka_pid
    before = _snapshots(watched)
    api: ApiFigures = await asyncio.to_thread(run_load_process, plan)
    after = _snapshots(watched)
    say(
        f"bench --fraud:   {api.transfers_per_second:.1f} transfers/s, "
        f"{api.requests_per_second:.1f} requests/s, {api.errors} errors"
    )
    worker_cores = {
        name: cpu_figures(before[name], after[name])["server_cores"] for name in watched
    }
    other_cores = api.cpu.get("other_cores")
    known = [cores for cores in worker_cores.values() if isinstance(cores, float)]
    return {
        "fraud_worker": fraud is not None,
        "transfers_per_second": api.transfers_per_second,
        "requests_per_second": api.requests_per_second,
        "transfer_p50_ms": api.p50_ms,
        "transfer_p99_ms": api.p99_ms,
        "errors": api.errors,
        "declined": api.declined,
        "error_details": api.error_details,
        "cpu": api.cpu,
        # The workers' and the broker's cores over the load process's whole life (warm-up
        # included), and what else the machine did in the measured window: other users'
        # processes, the kernel.
        "worker_cores": worker_cores,
        "outside_cores": (
            round(max(0.0, other_cores - sum(known)), 2) if isinstance(other_cores, float) else None
        ),
    }


def listening_pid(port: int) -> int | None:
    """The process listening on TCP ``port`` of this machine (from /proc), or None: the
    Kafka broker, whose CPU is part of what moving events costs."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == TCP_LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    if not inodes:
        return None
    for process in Path("/proc").iterdir():
        if not process.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for descriptor in (process / "fd").iterdir():
                target = os.readlink(descriptor)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return int(process.name)
    return None


def _snapshots(pids: dict[str, int]) -> dict[str, CpuSnapshot]:
    return {name: cpu_snapshot(pid, None) for name, pid in pids.items()}


def _cpu_ms_per_leg(before: CpuSnapshot, after: CpuSnapshot, legs: int) -> dict[str, Any]:
    """CPU per scored leg while the API is idle: the fraud worker's own, and PostgreSQL's
    (the worker's queries, and the relay's publishing of the alerts it writes)."""

    def per_leg(first: float | None, last: float | None) -> float | None:
        if first is None or last is None or legs <= 0:
            return None
        return round(1000 * (last - first) / legs, 2)

    return {
        "fraud_worker_cpu_ms_per_leg": per_leg(before.server_seconds, after.server_seconds),
        "postgres_cpu_ms_per_leg": per_leg(before.postgres_seconds, after.postgres_seconds),
        "fraud_worker_cores": cpu_figures(before, after)["server_cores"],
    }


async def _catch_up(engine: AsyncEngine, until: datetime, waited_seconds: float) -> dict[str, Any]:
    """The backlog's scoring rate, from the first score to the last (the worker's start-up
    and its joining the consumer group left out; ``waited_seconds`` has them)."""
    statement = select(
        func.count(), func.min(fraud_scores.c.scored_at), func.max(fraud_scores.c.scored_at)
    ).where(fraud_scores.c.scored_at < until)
    async with engine.connect() as connection:
        legs, first, last = (await connection.execute(statement)).one()
    seconds = (last - first).total_seconds() if first is not None and last is not None else 0.0
    return {
        "legs": int(legs),
        "seconds_from_start": round(waited_seconds, 2),
        "seconds_first_to_last_score": round(seconds, 2),
        "legs_per_second": round(legs / seconds, 1) if seconds > 0 else None,
    }


async def _scoring_lag(engine: AsyncEngine, since: datetime, until: datetime) -> dict[str, Any]:
    """Per leg created in the window: from its commit (``created_at``) to its score."""
    statement = (
        select(
            transactions.c.created_at,
            fraud_scores.c.scored_at,
            fraud_scores.c.decision,
            fraud_scores.c.reasons,
        )
        .join(fraud_scores, fraud_scores.c.transaction_id == transactions.c.transaction_id)
        .where(transactions.c.created_at >= since, transactions.c.created_at <= until)
    )
    async with engine.connect() as connection:
        rows = (await connection.execute(statement)).all()
    lags = [(scored - created).total_seconds() for created, scored, *_ in rows]
    reasons = Counter(reason for *_, legs_reasons in rows for reason in legs_reasons or ())
    return {
        "legs_scored": len(rows),
        "alerts": sum(1 for _, _, decision, _ in rows if decision == "alert"),
        "reasons": dict(reasons.most_common(REASONS_REPORTED_MAX)),
        "commit_to_score_ms": _latency_ms(lags),
    }


# --- output -------------------------------------------------------------------------------


def _print_summary(report: dict[str, Any]) -> None:
    cost, hooks = report["fraud_cost"], report["webhook_latency"]
    rounds = cost["rounds"]
    say("")
    say(
        f"scoring cost at concurrency {cost['concurrency']}: transfers/s without "
        f"{rounds['without_1']['transfers_per_second']:.1f} / "
        f"{rounds['without_2']['transfers_per_second']:.1f}, with "
        f"{cost['transfers_per_second_with']:.1f}: ratio {cost['ratio_with_to_without']}"
    )
    say(
        "  other users' load in each round (cores): "
        + ", ".join(f"{name} {round_['outside_cores']}" for name, round_ in rounds.items())
    )
    during = cost["during_load"]
    lag = during["commit_to_score_ms"]
    say(
        f"fraud worker: backlog {cost['catch_up']['legs_per_second']} legs/s; during the load "
        f"{during['legs_scored']} legs scored ({during['alerts']} alerts), commit to score "
        f"p50 {lag['p50']} ms, p99 {lag['p99']} ms, max {lag['max']} ms; all scored "
        f"{cost['all_scored_seconds_after_load']} s after the load"
    )
    latency = hooks["latency_ms"]
    say(
        f"webhooks at {hooks['rate_per_second']}/s: delivered {hooks['delivered']} of "
        f"{hooks['debits_completed']} completed debits; commit to receiver p50 "
        f"{latency['p50']} ms, p99 {latency['p99']} ms, max {latency['max']} ms (routed to "
        f"received p50 {hooks['routed_to_received_ms']['p50']} ms)"
    )
    say("")


def _verdict(report: dict[str, Any], output: Path) -> int:
    hooks = report["webhook_latency"]
    errors = sum(round_["errors"] for round_ in report["fraud_cost"]["rounds"].values())
    problems = []
    if not report["reconcile_clean"]:
        problems.append("the books do not reconcile")
    if errors or hooks["debit_failures"]:
        problems.append(f"{errors + sum(hooks['debit_failures'].values())} requests failed")
    if hooks["delivered"] != hooks["debits_completed"] or hooks["bad_signatures"]:
        problems.append("webhook deliveries are missing or badly signed")
    if problems:
        say(f"bench --fraud: FAILED: {'; '.join(problems)} (see {output})")
        return EXIT_FAILED
    say(f"bench --fraud: figures written to {output}")
    return EXIT_OK


def main(arguments: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.fraud_notifications [options]``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fraud_notifications",
        description="Fraud scoring's cost on the REST path and webhook delivery latency "
        "(docs/benchmarks.md).",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="figures (JSON)")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY_DEFAULT)
    parser.add_argument(
        "--seconds", type=int, default=SECONDS_DEFAULT, help="measured seconds per load round"
    )
    parser.add_argument("--warmup-seconds", type=float, default=WARMUP_SECONDS)
    parser.add_argument("--webhook-rate", type=int, default=WEBHOOK_RATE_DEFAULT)
    parser.add_argument("--webhook-seconds", type=int, default=WEBHOOK_SECONDS_DEFAULT)
    options = parser.parse_args(arguments)
    return run_fraud_benchmark(
        options.output,
        concurrency=options.concurrency,
        seconds=options.seconds,
        warmup_seconds=options.warmup_seconds,
        webhook_rate=options.webhook_rate,
        webhook_seconds=options.webhook_seconds,
    )


if __name__ == "__main__":
    sys.exit(main())
