"""Through the native production shape (``scripts/production-shape.sh``), real processes on
127.0.0.1: nginx with ``infrastructure/nginx/banking.conf`` in front of two ``banking serve``
instances and ``banking grpc``, every worker, PostgreSQL, Redis and Kafka.

The module starts its own shape on free ports, its own database, topic prefix and Redis
database, and stops it at the end. It needs PostgreSQL, Redis and Kafka from
``scripts/services`` (the runner starts them when they are not running) and nginx.

The throughput and gap figures are printed (``-s``) and written to ``figures.json`` in the
shape's directory; they are measurements, never asserted.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import httpx
import port_for
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from banking.grpc.client import BankingClient

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNNER = REPO_ROOT / "scripts" / "production-shape.sh"
HOST = "127.0.0.1"
UP_TIMEOUT_SECONDS = 150
DOWN_TIMEOUT_SECONDS = 90
WORKER_COUNT = 6  # relay processor dlq balance-cache fraud notifications
PASSWORD = "correct-horse-battery-staple"
TOKEN_LIMIT = 5  # RATE_LIMIT_TOKEN of this shape, per minute
CONCURRENCY = 8
# How long after a SIGKILL an answer already on the wire may still arrive.
IN_FLIGHT_SECONDS = 0.5
PHASE_SECONDS = 4.0
RETRY_ATTEMPTS_MAX = 40
REQUEST_TIMEOUT_SECONDS = 10.0
AMOUNT = Decimal("0.01")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def free_run(count: int) -> int:
    """The first of ``count`` consecutive free ports (the runner numbers worker metrics)."""
    for _ in range(100):
        first = port_for.select_random()
        if first + count < 65000 and all(_free(first + i) for i in range(count)):
            return first
    raise AssertionError(f"no {count} consecutive free ports found")


@dataclass
class Shape:
    directory: Path
    env: dict[str, str]  # the runner's environment
    settings: dict[str, str]  # what every banking process of the shape gets ($STATE/env)
    https_port: int
    http_port: int
    api_ports: list[int]
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def lb_url(self) -> str:
        return f"https://{HOST}:{self.https_port}"

    @property
    def ca(self) -> Path:
        return self.directory / "nginx" / "tls" / "ca.crt"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def run(self, command: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(RUNNER), command],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def banking(self, *arguments: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(REPO_ROOT / ".venv" / "bin" / "banking"), *arguments],
            env={**os.environ, **self.settings},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def pid(self, name: str) -> int:
        return int((self.directory / "pids" / f"{name}.pid").read_text())

    def nginx_log(self) -> Path:
        return self.directory / "logs" / "nginx.log"

    def database_dsn(self) -> str:
        return self.settings["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")


def _read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        name, _, value = line.partition("=")
        values[name] = value.strip("'")
    return values


@pytest.fixture(scope="module")
def shape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shape]:
    admin_dsn = os.environ.get("BANKING_PG_ADMIN_DSN")
    if not admin_dsn:
        pytest.fail(
            "the production-shape test needs BANKING_PG_ADMIN_DSN: run `make test` (or "
            '`eval "$(scripts/services/all.sh start postgres redis kafka)"`)',
            pytrace=False,
        )
    directory = tmp_path_factory.mktemp("shape")
    suffix = uuid.uuid4().hex[:10]
    api_ports = [free_run(1), free_run(1)]
    https_port, http_port = free_run(1), free_run(1)
    env = {
        **os.environ,
        "BANKING_SHAPE_DIR": str(directory),
        "BANKING_SHAPE_HTTPS_PORT": str(https_port),
        "BANKING_SHAPE_HTTP_PORT": str(http_port),
        "BANKING_SHAPE_API_PORTS": " ".join(map(str, api_ports)),
        "BANKING_SHAPE_GRPC_PORT": str(free_run(1)),
        "BANKING_SHAPE_METRICS_PORT": str(free_run(1 + WORKER_COUNT)),
        "BANKING_SHAPE_PROMETHEUS_PORT": str(free_run(1)),
        "BANKING_SHAPE_DATABASE": f"shape_{suffix}",
        "BANKING_SHAPE_REDIS_DB": "9",
        "BANKING_SHAPE_TOPIC_PREFIX": f"shape-{suffix}.",
        "RATE_LIMIT_TOKEN": f"{TOKEN_LIMIT}/minute",
        "RATE_LIMIT_DEFAULT": "100000/second",
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "8192",
        "FRAUD_MODE": "alert",
        "LOG_LEVEL": "WARNING",
    }
    shape = Shape(directory, env, {}, https_port, http_port, api_ports)
    try:
        up = shape.run("up", UP_TIMEOUT_SECONDS)
        assert up.returncode == 0, f"production-shape.sh up failed:\n{up.stderr}"
        assert f"https://localhost:{https_port}/api/v1" in up.stdout
        shape.settings = _read_env_file(directory / "env")
        yield shape
    finally:
        down = shape.run("down", DOWN_TIMEOUT_SECONDS)
        asyncio.run(_drop_database(admin_dsn, f"shape_{suffix}"))
        (directory / "figures.json").write_text(json.dumps(shape.figures, indent=2))
        print(f"\nproduction shape figures: {json.dumps(shape.figures)}")
        assert down.returncode == 0, down.stderr


async def _drop_database(admin_dsn: str, name: str) -> None:
    connection = await asyncpg.connect(admin_dsn)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@dataclass
class Bank:
    """The users and accounts the load runs with."""

    admin: dict[str, str]
    token: str
    pairs: list[tuple[str, str]]  # (source, destination), one per concurrent client
    funded: Decimal


@pytest.fixture(scope="module")
def bank(shape: Shape) -> Bank:
    username = f"ops-{uuid.uuid4().hex[:8]}"
    created = shape.banking(
        "users",
        "create",
        "--username",
        username,
        "--email",
        f"{username}@example.com",
        "--role",
        "admin",
        stdin=PASSWORD + "\n",
    )
    assert created.returncode == 0, created.stderr
    return asyncio.run(_open_accounts(shape, username))


async def _open_accounts(shape: Shape, username: str) -> Bank:
    funded = Decimal("1000.00")
    async with httpx.AsyncClient(base_url=shape.lb_url, verify=shape.ssl_context()) as client:
        signed_in = await client.post(
            "/api/v1/auth/token", data={"username": username, "password": PASSWORD}
        )
        assert signed_in.status_code == 200, signed_in.text
        token = signed_in.json()["access_token"]
        admin = {"Authorization": f"Bearer {token}"}
        customer = await client.post(
            "/api/v1/users",
            json={
                "username": f"cust-{uuid.uuid4().hex[:8]}",
                "email": f"c-{uuid.uuid4().hex[:8]}@example.com",
                "password": PASSWORD,
                "role": "customer",
            },
            headers=admin,
        )
        assert customer.status_code == 201, customer.text
        customer_id = customer.json()["user_id"]

        async def account(funds: Decimal | None) -> str:
            opened = await client.post(
                "/api/v1/accounts",
                json={"account_type": "checking", "currency": "USD", "customer_id": customer_id},
                headers=admin,
            )
            assert opened.status_code == 201, opened.text
            account_id: str = opened.json()["account_id"]
            if funds is not None:
                credited = await client.post(
                    "/api/v1/transactions/credit",
                    json={"account_id": account_id, "amount": str(funds), "currency": "USD"},
                    headers=admin,
                )
                assert credited.status_code == 200, credited.text
            return account_id

        pairs = [(await account(funded), await account(None)) for _ in range(CONCURRENCY)]
    return Bank(admin, token, pairs, funded)


@dataclass
class Load:
    """What a run of concurrent clients saw: one transfer per reference, retried with the same
    reference_id until it succeeds."""

    references: list[str] = field(default_factory=list)
    answered_at: list[float] = field(default_factory=list)  # monotonic time of each success
    served_by: list[str] = field(default_factory=list)
    retries: int = 0
    replayed: int = 0
    failures: list[str] = field(default_factory=list)  # references given up on


async def run_load(
    base_url: str,
    bank: Bank,
    seconds: float,
    *,
    verify: ssl.SSLContext | bool,
    during: Any = None,
) -> Load:
    """``CONCURRENCY`` clients, each transferring ``AMOUNT`` from its own source account for
    ``seconds``; ``during`` (a coroutine function) runs after a third of the time."""
    load = Load()
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=base_url, verify=verify, limits=limits, timeout=REQUEST_TIMEOUT_SECONDS
    ) as client:

        async def one(source: str, destination: str) -> None:
            reference = f"lb-{uuid.uuid4().hex}"
            load.references.append(reference)
            body = {
                "source_account_id": source,
                "destination_account_id": destination,
                "amount": str(AMOUNT),
                "currency": "USD",
                "reference_id": reference,
            }
            for attempt in range(RETRY_ATTEMPTS_MAX):
                try:
                    response = await client.post(
                        "/api/v1/transactions/transfer", json=body, headers=bank.admin
                    )
                except httpx.TransportError:
                    response = None
                if response is not None and response.status_code == 200:
                    load.answered_at.append(time.monotonic())
                    load.served_by.append(response.headers.get("X-Served-By", "?"))
                    load.replayed += response.headers.get("Idempotent-Replayed") == "true"
                    return
                if response is not None and response.status_code not in (502, 503, 504):
                    raise AssertionError(f"transfer {reference}: {response.text}")
                load.retries += 1
                await asyncio.sleep(min(0.05 * (attempt + 1), 0.5))
            load.failures.append(reference)

        async def client_loop(source: str, destination: str) -> None:
            while time.monotonic() < deadline:
                await one(source, destination)

        async def fault() -> None:
            if during is not None:
                await asyncio.sleep(seconds / 3)
                await during()

        await asyncio.gather(fault(), *(client_loop(s, d) for s, d in bank.pairs))
    return load


def longest_gap_seconds(times: list[float], start: float, end: float) -> float:
    points = sorted([start, *(t for t in times if start <= t <= end), end])
    return max(b - a for a, b in itertools.pairwise(points))


async def legs_by_reference(shape: Shape, references: list[str]) -> dict[str, list[str]]:
    connection = await asyncpg.connect(shape.database_dsn())
    try:
        rows = await connection.fetch(
            "SELECT reference_id, transaction_type, status FROM transactions "
            "WHERE reference_id = ANY($1::text[])",
            references,
        )
    finally:
        await connection.close()
    legs: dict[str, list[str]] = {reference: [] for reference in references}
    for row in rows:
        legs[row["reference_id"]].append(f"{row['transaction_type']}:{row['status']}")
    return legs


def test_http_is_redirected_to_https(shape: Shape) -> None:
    response = httpx.get(
        f"http://{HOST}:{shape.http_port}/api/v1/accounts?account_number=42", timeout=5
    )

    assert response.status_code == 308
    assert response.headers["Location"] == (
        f"https://{HOST}:{shape.https_port}/api/v1/accounts?account_number=42"
    )
    # And what it points to answers over TLS, certified by the shape's CA.
    health = httpx.get(f"{shape.lb_url}/health", verify=shape.ssl_context(), timeout=5)
    assert health.status_code == 200
    assert health.json()["status"] == "healthy"


def test_request_ids_pass_through_the_load_balancer(shape: Shape) -> None:
    kept = httpx.get(
        f"{shape.lb_url}/api/v1/users/me",
        headers={"X-Request-ID": "client-chosen-id-42"},
        verify=shape.ssl_context(),
        timeout=5,
    )
    made = httpx.get(f"{shape.lb_url}/api/v1/users/me", verify=shape.ssl_context(), timeout=5)

    assert kept.status_code == 401
    assert kept.headers["X-Request-ID"] == "client-chosen-id-42"
    assert kept.json()["error"]["request_id"] == "client-chosen-id-42"
    # Without one, nginx makes one and the API answers with it; nginx logged the same id.
    assert len(made.headers["X-Request-ID"]) == 32
    assert made.headers["X-Request-ID"] in shape.nginx_log().read_text()


def test_a_spoofed_forwarded_for_does_not_change_the_rate_limit_key(shape: Shape) -> None:
    victim = f"victim-{uuid.uuid4().hex[:8]}"
    lb = httpx.Client(base_url=shape.lb_url, verify=shape.ssl_context(), timeout=5)
    # The instance directly: its peer (127.0.0.1) is not in TRUSTED_PROXIES (nginx's 127.0.0.2).
    direct = httpx.Client(base_url=f"http://{HOST}:{shape.api_ports[1]}", timeout=5)

    def guess(client: httpx.Client, attempt: int) -> int:
        spoofed = f"203.0.113.{attempt}, 198.51.100.{attempt}"
        response = client.post(
            "/api/v1/auth/token",
            data={"username": victim, "password": f"guess-{attempt}"},
            headers={"X-Forwarded-For": spoofed, "X-Forwarded-Proto": "https"},
        )
        return response.status_code

    with lb, direct:
        # Three guesses through nginx (which forwards the real client, 127.0.0.1) and two
        # straight to the instance (peer 127.0.0.1): one key, whatever the headers say.
        statuses = [guess(lb, i) for i in range(3)] + [guess(direct, i) for i in range(3, 5)]
        assert statuses == [401] * TOKEN_LIMIT
        # The budget of 127.0.0.1 is spent, on both paths: rotating spoofed addresses do not
        # buy new ones, and nginx's own address (127.0.0.2) did not absorb the guesses.
        assert guess(lb, 6) == 429
        assert guess(direct, 7) == 429


def test_grpc_through_the_load_balancer(shape: Shape, bank: Bank) -> None:
    async def calls() -> tuple[int, Decimal, Decimal]:
        credentials = grpc.ssl_channel_credentials(shape.ca.read_bytes())
        target = f"{HOST}:{shape.https_port}"
        channel = grpc.aio.secure_channel(target, credentials)
        health = health_pb2_grpc.HealthStub(channel)
        status = (await health.Check(health_pb2.HealthCheckRequest(), timeout=5)).status
        source, destination = bank.pairs[0]
        async with BankingClient(target, bank.token, channel=channel) as client:
            before = (await client.get_balance(destination)).available_balance
            moved = await client.transfer(
                source, destination, Decimal("1.25"), "USD", reference_id=f"grpc-{uuid.uuid4()}"
            )
            after = (await client.get_balance(destination)).available_balance
        assert moved.available_balance is not None
        return status, before, after

    status, before, after = asyncio.run(calls())

    assert status == health_pb2.HealthCheckResponse.SERVING
    assert after - before == Decimal("1.25")


def test_load_balancing_and_an_instance_killed_mid_load(shape: Shape, bank: Bank) -> None:
    verify = shape.ssl_context()
    # Figures first (not asserted): one instance directly, then both through nginx over TLS.
    direct = asyncio.run(
        run_load(f"http://{HOST}:{shape.api_ports[0]}", bank, PHASE_SECONDS, verify=False)
    )
    balanced = asyncio.run(run_load(shape.lb_url, bank, PHASE_SECONDS, verify=verify))
    assert not direct.failures and not balanced.failures
    assert direct.retries == balanced.retries == 0
    # Round robin: both instances answered a fair share.
    assert balanced.served_by.count("api-1") > len(balanced.served_by) / 4
    assert balanced.served_by.count("api-2") > len(balanced.served_by) / 4
    assert set(balanced.served_by) == {"api-1", "api-2"}

    log_offset = shape.nginx_log().stat().st_size
    killed_at: list[float] = []

    async def kill_api_1() -> None:
        os.kill(shape.pid("api-1"), signal.SIGKILL)
        killed_at.append(time.monotonic())

    started = time.monotonic()
    faulted = asyncio.run(
        run_load(shape.lb_url, bank, 3 * PHASE_SECONDS, verify=verify, during=kill_api_1)
    )
    ended = time.monotonic()

    # Every client got its transfer applied, retrying with the same reference_id when needed.
    assert not faulted.failures
    # An answer api-1 had already sent when it was killed may still be read just after: count
    # only the answers that arrived more than a moment after the kill.
    after_kill = [
        who
        for at, who in zip(faulted.answered_at, faulted.served_by, strict=True)
        if at > killed_at[0] + IN_FLIGHT_SECONDS
    ]
    assert after_kill and set(after_kill) == {"api-2"}
    # nginx stopped routing to the dead instance: after the first refused connections marked
    # it down (max_fails=1), requests went straight to api-2.
    dead = f"{HOST}:{shape.api_ports[0]}"
    entries = [
        json.loads(line)
        for line in shape.nginx_log().read_bytes()[log_offset:].decode().splitlines()
        if line.startswith("{")
    ]
    transfers = [e for e in entries if e["uri"] == "/api/v1/transactions/transfer"]
    failed = [
        i
        for i, e in enumerate(transfers)
        if (dead in e["upstream"] and e["status"] != 200) or e["upstream"].startswith(dead + ", ")
    ]
    assert failed, "nginx never saw the dead instance fail"
    # From the first failure on, only requests racing it (in flight, at most one per client and
    # nginx worker) still name the dead instance; fail_timeout (10 s) outlasts the phase.
    tried_dead = [e for e in transfers[failed[0] :] if dead in e["upstream"]]
    assert len(tried_dead) <= 2 * CONCURRENCY
    assert len(transfers) - failed[0] > 50
    assert all(dead not in e["upstream"] for e in transfers[-CONCURRENCY * 5 :])

    # Exactly one application per reference: one leg out and one leg in, nothing else.
    references = direct.references + balanced.references + faulted.references
    legs = asyncio.run(legs_by_reference(shape, references))
    wrong = {
        r: kinds
        for r, kinds in legs.items()
        if sorted(kinds) != ["transfer_in:completed", "transfer_out:completed"]
    }
    assert not wrong, f"{len(wrong)} references not applied exactly once: {list(wrong.items())[:5]}"

    # The books reconcile.
    reconciled = shape.banking("reconcile")
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    assert json.loads(reconciled.stdout)["clean"] is True

    # The runner sees the dead instance.
    status = shape.run("status", 30)
    assert status.returncode == 3
    assert "api-1: not running" in status.stderr
    assert "api-2: running" in status.stderr

    shape.figures.update(
        {
            "concurrency": CONCURRENCY,
            "phase_seconds": PHASE_SECONDS,
            "transfers_per_second_one_instance_direct_http": round(
                len(direct.answered_at) / PHASE_SECONDS, 1
            ),
            "transfers_per_second_two_instances_through_nginx_tls": round(
                len(balanced.answered_at) / PHASE_SECONDS, 1
            ),
            "longest_gap_in_successful_answers_seconds_with_kill": round(
                longest_gap_seconds(faulted.answered_at, killed_at[0], ended), 3
            ),
            "longest_gap_before_kill_seconds": round(
                longest_gap_seconds(faulted.answered_at, started, killed_at[0]), 3
            ),
            "retries_after_kill": faulted.retries,
            "replayed_after_kill": faulted.replayed,
            "transfers_during_kill_phase": len(faulted.answered_at),
        }
    )
