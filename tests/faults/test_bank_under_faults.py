"""A Jepsen-style bank test (issue 11, item 7): the production shape on PostgreSQL, Kafka and
Redis, under a schedule of faults, must keep the books.

Two ``banking serve`` instances (each its own process, so one can die while clients go on to the
other, as behind a load balancer), ``banking worker relay`` and ``banking worker processor`` run
on a database, topic prefix and Redis database of this test. ``CLIENTS`` concurrent clients send
random transfers, debits and credits, each with its own idempotency key (``reference_id``),
while the nemesis, in turn, SIGKILLs an API instance (and starts it again), restarts PostgreSQL
abruptly (``pg_ctl -m immediate``), SIGKILLs the Kafka broker and Redis (then ``kafka.sh start``,
``redis.sh start``), twice round, recording each fault's window.

Afterwards every unknown outcome (connection error, timeout, 503) is retried with its key until
it has a business answer, and the test checks: every balance is exactly what the acknowledged
movements make it (so total money is conserved exactly, Decimal), no balance is negative, every
acknowledged movement is in the ledger with its outcome and no key applied twice, every
committed leg's event is on Kafka exactly once after dedupe by ``ce_id`` and in per-account
order (``ce_sequence``, read committed), only 503 with ``Retry-After`` or connection errors
during fault windows (never a 500) and none outside them (``GRACE_SECONDS`` after each fault
ends), and ``banking reconcile`` clean. The figures are printed (``-s``) and written to
``faults-figures.json`` in the test's tmp dir.

The faults hit the PostgreSQL and Redis of the environment and a Kafka broker of the suite's own
(tests/faults/services.py): in CI the shared PostgreSQL and Redis, started again at the end
whatever happens; to develop, start private ones (docs/faults.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from banking.bootstrap import build_container
from banking.domain.roles import Role
from banking.events import envelope, topics
from banking.events.serialization import decode
from banking.events.transport import Message
from banking.storage.migrate import upgrade
from banking.workers.admin import create_topics
from tests.conftest import make_settings
from tests.events.kafka_support import consume
from tests.faults.cluster import BankProcess
from tests.faults.services import Services
from tests.faults.workload import (
    BAD,
    CURRENCY,
    DECLINED,
    DEFINITE,
    OK,
    UNKNOWN,
    History,
    Workload,
)
from tests.support.processes import free_port

pytestmark = [pytest.mark.faults, pytest.mark.postgres]

CLIENTS = 24
ACCOUNTS = 12
FUNDED = Decimal("300.00")
API_INSTANCES = 2
WARMUP_SECONDS = 5.0
DOWN_SECONDS = 4.0  # how long each service stays dead
# After a fault ends (the service answers again), errors are still allowed this long: the API's
# pooled connections to a restarted PostgreSQL fail once each before they are replaced, and a
# request that started during the fault may end in it.
GRACE_SECONDS = 5.0
QUIET_SECONDS = GRACE_SECONDS + 4.0  # fault-free load between two faults (4 s outside windows)
TAIL_SECONDS = 6.0
START_TIMEOUT_SECONDS = 60.0
DRAIN_TIMEOUT_SECONDS = 120.0
EVENTS_TIMEOUT_SECONDS = 120.0
TOKEN_SECRET = "fault-suite-secret-that-is-long-enough-0123456789"
REDIS_DATABASE = 13
MOVEMENT_TOPICS = (
    topics.TRANSACTIONS_COMPLETED,
    topics.TRANSACTIONS_FAILED,
    topics.ACCOUNT_BALANCES,
)


@dataclass
class Fault:
    """One fault of the schedule: from when it was injected to when the service answered."""

    name: str
    started: float
    ended: float = float("nan")

    def covers(self, started: float, ended: float) -> bool:
        """Whether an attempt over [started, ended] overlaps the fault or its grace period."""
        return started <= self.ended + GRACE_SECONDS and ended >= self.started


@dataclass
class Topology:
    services: Services
    database: str
    database_url: str
    prefix: str
    env: dict[str, str]
    apis: list[BankProcess]
    workers: list[BankProcess]
    tmp_path: Path

    @property
    def bases(self) -> list[str]:
        return [api.ready_url.removesuffix("/ready") for api in self.apis]

    @property
    def dsn(self) -> str:
        return self.database_url.replace("postgresql+asyncpg://", "postgresql://")


async def _admin(dsn: str, statement: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def _process_env(services: Services, database_url: str, prefix: str, tmp: Path) -> dict[str, str]:
    inherited = {
        k: v
        for k, v in os.environ.items()
        if k not in {"BANKING_ENV", "DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS"}
    }
    return {
        **inherited,
        "DATABASE_URL": database_url,
        "REDIS_URL": services.redis_database(REDIS_DATABASE),
        "KAFKA_BOOTSTRAP_SERVERS": services.kafka_bootstrap,
        "KAFKA_TOPIC_PREFIX": prefix,
        "KAFKA_TOPIC_PARTITIONS": "3",
        "JWT_SECRET": TOKEN_SECRET,
        "DATA_DIR": str(tmp / "data"),
        "LOG_LEVEL": "INFO",
        "LOG_JSON": "true",
        "FRAUD_MODE": "alert",
        "RATE_LIMIT_DEFAULT": "100000/second",
        "DLQ_BACKOFF_SECONDS": "0.2",
    }


@pytest.fixture
def topology(tmp_path: Path) -> Any:
    services = Services.from_environment(tmp_path / "kafka", (free_port(), free_port()))
    suffix = uuid.uuid4().hex[:10]
    database = f"faults_{suffix}"
    database_url = services.database_url(database)
    prefix = f"faults-{suffix}."
    asyncio.run(_admin(services.pg_admin_dsn, f'CREATE DATABASE "{database}"'))
    upgrade(database_url)
    env = _process_env(services, database_url, prefix, tmp_path)
    apis = []
    for index in range(API_INSTANCES):
        port = free_port()
        apis.append(
            BankProcess(
                f"api-{index}",
                [
                    "serve",
                    "--no-migrate",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--grpc-port",
                    "0",
                ],
                env={**env, "INSTANCE_NAME": f"api-{index}"},
                log_path=tmp_path / f"api-{index}.log",
                ready_url=f"http://127.0.0.1:{port}/ready",
            )
        )
    workers = []
    for name in ("relay", "processor"):
        port = free_port()
        workers.append(
            BankProcess(
                name,
                ["worker", name, "--metrics-port", str(port)],
                env=env,
                log_path=tmp_path / f"{name}.log",
                ready_url=f"http://127.0.0.1:{port}/metrics",
            )
        )
    running = Topology(services, database, database_url, prefix, env, apis, workers, tmp_path)
    passed = False
    try:
        services.start("kafka")
        settings = make_settings(
            database_url,
            kafka_bootstrap_servers=services.kafka_bootstrap,
            kafka_topic_prefix=prefix,
            kafka_topic_partitions=3,
        )
        asyncio.run(create_topics(settings))
        for process in [*apis, *workers]:
            process.launch()
        for process in [*apis, *workers]:
            process.wait_ready(START_TIMEOUT_SECONDS)
        yield running
        passed = True
    finally:
        for process in [*apis, *workers]:
            process.stop()
        problems = services.ensure_running()  # the tests after this one need them
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            # the suite's own broker: its state goes too unless it is kept for inspection
            services.script("kafka", "clean" if passed else "stop")
        if passed:
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                asyncio.run(
                    _admin(
                        services.pg_admin_dsn, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'
                    )
                )
        else:
            print(f"\nfault suite: database {database} and logs in {tmp_path} kept for inspection")
        assert not problems, f"services not running again after the fault suite: {problems}"


# --- set-up: users, tokens, accounts -------------------------------------------------------------


@dataclass
class Seeded:
    customer: dict[str, str]
    teller: dict[str, str]
    accounts: list[str]


async def seed(topology: Topology) -> Seeded:
    container = build_container(make_settings(topology.database_url, jwt_secret=TOKEN_SECRET))
    try:
        tokens = {}
        for role in (Role.TELLER, Role.CUSTOMER):
            username = f"{role.value}-{uuid.uuid4().hex[:8]}"
            user = await container.users.create(
                None,
                username=username,
                email=f"{username}@example.com",
                password="correct-horse-battery",
                role=role,
            )
            token = container.tokens.issue(user.user_id, username, role)
            tokens[role] = ({"Authorization": f"Bearer {token}"}, user.user_id)
    finally:
        await container.close()
    teller, _ = tokens[Role.TELLER]
    customer, customer_id = tokens[Role.CUSTOMER]
    accounts = []
    async with httpx.AsyncClient(base_url=topology.bases[0], timeout=30) as client:
        for index in range(ACCOUNTS):
            opened = await client.post(
                "/api/v1/accounts",
                json={
                    "account_type": "checking",
                    "currency": CURRENCY,
                    "customer_id": str(customer_id),
                },
                headers=teller,
            )
            assert opened.status_code == 201, opened.text
            account_id = opened.json()["account_id"]
            credited = await client.post(
                "/api/v1/transactions/credit",
                json={
                    "account_id": account_id,
                    "amount": str(FUNDED),
                    "currency": CURRENCY,
                    "reference_id": f"seed-{index}",
                },
                headers=teller,
            )
            assert credited.status_code == 200, credited.text
            accounts.append(account_id)
    return Seeded(customer, teller, accounts)


# --- the nemesis ---------------------------------------------------------------------------------


def schedule(topology: Topology) -> list[tuple[str, Callable[[], None], Callable[[], None]]]:
    """The faults in turn, twice round: (name, break it, mend it)."""
    services = topology.services

    def api(index: int) -> tuple[str, Callable[[], None], Callable[[], None]]:
        process = topology.apis[index]
        return (
            f"SIGKILL {process.name}",
            process.kill,
            lambda: process.start(START_TIMEOUT_SECONDS),
        )

    round_ = [
        (
            "PostgreSQL immediate restart",
            services.stop_postgres_immediately,
            lambda: services.start("postgres"),
        ),
        ("SIGKILL Kafka", services.kill_kafka, lambda: services.start("kafka")),
        ("SIGKILL Redis", services.kill_redis, lambda: services.start("redis")),
    ]
    return [api(0), *round_, api(1), *round_]


async def nemesis(topology: Topology, faults: list[Fault]) -> None:
    await asyncio.sleep(WARMUP_SECONDS)
    for name, inject, mend in schedule(topology):
        fault = Fault(name, time.monotonic())
        faults.append(fault)
        await asyncio.to_thread(inject)
        await asyncio.sleep(DOWN_SECONDS)
        await asyncio.to_thread(mend)
        fault.ended = time.monotonic()
        await asyncio.sleep(QUIET_SECONDS)
    await asyncio.sleep(TAIL_SECONDS)


# --- the checks ----------------------------------------------------------------------------------


def window_figures(history: History, faults: list[Fault], origin: float) -> list[dict[str, Any]]:
    figures = []
    for fault in faults:
        first_ok = min(
            (
                a.ended
                for a in history.attempts
                if not a.resolving and a.result == OK and a.started >= fault.started
            ),
            default=float("nan"),
        )
        errors = Counter(
            a.result
            for a in history.attempts
            if not a.resolving and a.result not in DEFINITE and fault.covers(a.started, a.ended)
        )
        figures.append(
            {
                "fault": fault.name,
                "started_s": round(fault.started - origin, 2),
                "service_back_s": round(fault.ended - origin, 2),
                "longest_outage_s": round(first_ok - fault.started, 3),
                "errors_in_window": dict(errors),
            }
        )
    return figures


async def ledger_rows(topology: Topology, accounts: list[str]) -> tuple[list[Any], list[Any]]:
    connection = await asyncpg.connect(topology.dsn)
    try:
        balances = await connection.fetch(
            "SELECT account_id::text, current_balance, available_balance, version FROM balances"
            " WHERE account_id::text = ANY($1::text[])",
            accounts,
        )
        legs = await connection.fetch(
            "SELECT transaction_id::text, account_id::text, transaction_type, amount, status,"
            " reference_id FROM transactions"
        )
    finally:
        await connection.close()
    return list(balances), list(legs)


async def wait_for_the_outbox(topology: Topology) -> dict[str, set[str]]:
    """Until the relay has published every row; then the event ids of each movement topic."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    connection = await asyncpg.connect(topology.dsn)
    try:
        while await connection.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"):
            assert time.monotonic() < deadline, (
                f"the relay left rows unpublished for {DRAIN_TIMEOUT_SECONDS:g} s: "
                f"{topology.workers[0].output()[-3000:]}"
            )
            await asyncio.sleep(0.5)
        rows = await connection.fetch(
            "SELECT topic, event_id::text FROM outbox WHERE topic = ANY($1::text[])",
            list(MOVEMENT_TOPICS),
        )
    finally:
        await connection.close()
    expected: dict[str, set[str]] = {topic: set() for topic in MOVEMENT_TOPICS}
    for row in rows:
        expected[row["topic"]].add(row["event_id"])
    return expected


async def read_topic(topology: Topology, topic: str, expected: set[str]) -> list[Message]:
    ids: set[str] = set()
    read = 0

    def complete(messages: list[Message]) -> bool:
        nonlocal read
        ids.update(m.headers["ce_id"] for m in messages[read:])
        read = len(messages)
        return expected <= ids

    return await consume(
        topology.services.kafka_bootstrap,
        topic,
        prefix=topology.prefix,
        until=complete,
        timeout_seconds=EVENTS_TIMEOUT_SECONDS,
    )


def check_event_stream(
    topic: str, messages: list[Message], expected: set[str]
) -> tuple[list[Message], int]:
    """Exactly the outbox's events, each once after dedupe by ``ce_id``, in per-account order;
    the first copy of each event and the number of re-sent copies skipped."""
    assert {m.headers["ce_id"] for m in messages} == expected, f"{topic}: events not in the outbox"
    first: list[Message] = []
    seen: set[str] = set()
    last_sequence: dict[str | None, int] = {}
    duplicates = 0
    for message in messages:
        sequence = envelope.read_headers(message.headers).sequence
        assert sequence is not None, f"{topic}: an event without ce_sequence"
        if message.headers["ce_id"] in seen:
            duplicates += 1
            assert sequence <= last_sequence[message.key], f"{topic}: a re-sent event ahead"
            continue
        seen.add(message.headers["ce_id"])
        assert sequence > last_sequence.get(message.key, 0), (
            f"{topic}: account {message.key} out of order ({sequence} after "
            f"{last_sequence.get(message.key)})"
        )
        last_sequence[message.key] = sequence
        first.append(message)
    return first, duplicates


def fields_of(message: Message) -> dict[str, Any]:
    return decode(
        message.value,
        content_type=message.headers["content-type"],
        event_type=message.headers["ce_type"],
    )


# --- the test ------------------------------------------------------------------------------------


async def test_the_books_hold_under_faults(topology: Topology) -> None:
    seeded = await seed(topology)
    workload = Workload(
        bases=topology.bases,
        accounts=seeded.accounts,
        customer=seeded.customer,
        teller=seeded.teller,
        seed=11,
        run=f"f{uuid.uuid4().hex[:6]}",
    )
    faults: list[Fault] = []
    stop = asyncio.Event()
    origin = time.monotonic()
    clients = asyncio.create_task(workload.run_clients(CLIENTS, stop))
    try:
        await nemesis(topology, faults)
    finally:
        stop.set()
        await clients
    load_ended = time.monotonic()
    history = workload.history

    # Nothing but business answers, 503 with Retry-After and connection errors; never a 500.
    bad = [a for a in history.attempts if a.result == BAD]
    assert not bad, f"{len(bad)} bad answers, e.g. {bad[:5]}"
    # No error at all outside the fault windows (and their grace).
    outside = [
        a
        for a in history.attempts
        if a.result in UNKNOWN and not any(f.covers(a.started, a.ended) for f in faults)
    ]
    unknown_first = {r for r, results in _results(history).items() if results[0] in UNKNOWN}

    unresolved = await workload.resolve()
    assert not unresolved, f"{len(unresolved)} movements never got an answer: {unresolved[:5]}"
    resolving_errors = [a for a in history.attempts if a.resolving and a.result not in DEFINITE]
    # (errors outside the windows are asserted last, once the figures are written)

    # Every movement has one outcome, whichever attempt told it.
    results = _results(history)
    for reference_id, answers in results.items():
        definite = {r for r in answers if r in DEFINITE}
        assert len(definite) == 1, f"{reference_id} answered {answers}"
    final = history.final()

    # The ledger: each balance is what the acknowledged movements make it, exactly.
    balances, legs = await ledger_rows(topology, seeded.accounts)
    expected_balance = dict.fromkeys(seeded.accounts, FUNDED)
    for reference_id, movement in history.movements.items():
        if final[reference_id] == OK:
            for account_id, change in movement.effects().items():
                expected_balance[account_id] += change
    actual = {row["account_id"]: row["current_balance"] for row in balances}
    assert actual == expected_balance
    assert all(row["available_balance"] == row["current_balance"] for row in balances)
    assert all(row["current_balance"] >= 0 for row in balances), "a negative balance"
    credited = sum(
        (m.amount for r, m in history.movements.items() if m.kind == "credit" and final[r] == OK),
        Decimal(0),
    )
    debited = sum(
        (m.amount for r, m in history.movements.items() if m.kind == "debit" and final[r] == OK),
        Decimal(0),
    )
    assert sum(actual.values(), Decimal(0)) == FUNDED * ACCOUNTS + credited - debited

    # Every movement's legs, with its outcome, and no key applied twice.
    legs_of: dict[str, list[Any]] = defaultdict(list)
    for leg in legs:
        legs_of[leg["reference_id"]].append(leg)
    seeds = {f"seed-{i}" for i in range(ACCOUNTS)}
    assert set(legs_of) - seeds - set(history.movements) == set(), "legs nobody asked for"
    for reference_id, movement in history.movements.items():
        found = legs_of.get(reference_id, [])
        if final[reference_id] == OK:
            expected_legs = (
                {
                    (movement.account_id, "transfer_out"),
                    (movement.destination_account_id, "transfer_in"),
                }
                if movement.kind == "transfer"
                else {(movement.account_id, movement.kind)}
            )
            completed = [
                (leg["account_id"], leg["transaction_type"])
                for leg in found
                if leg["status"] == "completed" and leg["amount"] == movement.amount
            ]
            assert sorted(completed) == sorted(expected_legs), f"{reference_id}: legs {found}"
            assert len(found) == len(expected_legs), f"{reference_id} applied twice: {found}"
        else:
            assert found and all(leg["status"] == "failed" for leg in found), (
                f"declined {reference_id}: legs {found}"
            )

    # Events: exactly once after dedupe, in per-account order, for every committed leg.
    expected_events = await wait_for_the_outbox(topology)
    events_checked: dict[str, int] = {}
    duplicates_skipped = 0
    firsts: dict[str, list[Message]] = {}
    for topic in MOVEMENT_TOPICS:
        messages = await read_topic(topology, topic, expected_events[topic])
        firsts[topic], duplicates = check_event_stream(topic, messages, expected_events[topic])
        duplicates_skipped += duplicates
        events_checked[topic] = len(firsts[topic])
    for topic, status in (
        (topics.TRANSACTIONS_COMPLETED, "completed"),
        (topics.TRANSACTIONS_FAILED, "failed"),
    ):
        published = [str(fields_of(m)["transaction_id"]) for m in firsts[topic]]
        assert len(published) == len(set(published)), f"{topic}: a leg published twice"
        committed = {leg["transaction_id"] for leg in legs if leg["status"] == status}
        assert set(published) == committed, f"{topic}: legs missing or extra"
    versions: dict[str | None, list[int]] = defaultdict(list)
    for message in firsts[topics.ACCOUNT_BALANCES]:
        versions[message.key].append(int(fields_of(message)["version"]))
    for row in balances:
        account_versions = versions[row["account_id"]]
        assert account_versions == sorted(account_versions), f"{row['account_id']}: versions"
        assert account_versions[-1] == row["version"], f"{row['account_id']}: last version"

    # The books reconcile, and no server logged an unhandled error.
    reconciled = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "banking.cli", "reconcile"],
        env=topology.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    assert json.loads(reconciled.stdout)["clean"] is True
    for api in topology.apis:
        output = api.output()
        assert "Traceback" not in output, f"{api.name} logged a traceback"
        assert "unhandled_error" not in output, f"{api.name} answered an unhandled error"

    outcomes = Counter(final.values())
    resolved_as = Counter(final[r] for r in unknown_first)
    figures = {
        "clients": CLIENTS,
        "accounts": ACCOUNTS,
        "load_seconds": round(load_ended - origin, 1),
        "grace_seconds": GRACE_SECONDS,
        "movements": {
            "attempted": len(history.movements),
            "acknowledged": outcomes[OK],
            "declined": outcomes[DECLINED],
            "unknown_then_resolved": len(unknown_first),
            "unknown_resolved_as": dict(resolved_as),
        },
        "attempts": {
            "total": len(history.attempts),
            "by_result": history.counts(),
            "kinds": {
                k: Counter(m.kind for m in history.movements.values())[k]
                for k in ("transfer", "debit", "credit")
            },
        },
        "faults": window_figures(history, faults, origin),
        "errors_outside_fault_windows": len(outside) + len(resolving_errors),
        "errors_after_the_faults_while_resolving": len(resolving_errors),
        "events_checked": {**events_checked, "duplicates_skipped": duplicates_skipped},
        "reconcile": "clean",
    }
    path = topology.tmp_path / "faults-figures.json"
    path.write_text(json.dumps(figures, indent=2))
    print(f"\nfault suite figures ({path}):\n{json.dumps(figures, indent=2)}")

    assert not outside, f"{len(outside)} errors outside the fault windows, e.g. {outside[:5]}"
    assert not resolving_errors, (
        f"{len(resolving_errors)} errors after the faults, while resolving: {resolving_errors[:5]}"
    )


def _results(history: History) -> dict[str, list[str]]:
    results: dict[str, list[str]] = defaultdict(list)
    for attempt in history.attempts:
        results[attempt.reference_id].append(attempt.result)
    return results
