"""Observability proven against a real Prometheus scraping the real processes.

Starts `banking serve` (REST and gRPC), `banking grpc`, the four workers with metrics ports,
all on PostgreSQL, Kafka and Redis, and Prometheus (scripts/services/prometheus.sh) with the
committed scrape config (targets rewritten to this run's ports) and alert rules. Drives
traffic with declines, errors, replays, async commands, a poison message and rate-limited
logins; then runs every dashboard panel query and every alert expression through Prometheus's
HTTP API: each must return data. Also checks that one transfer's trace id appears in the API's
and the processor's logs, and that no password or token is ever logged.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from banking.bootstrap import build_container
from banking.config import Settings
from banking.domain.roles import Role
from banking.events import topics
from banking.storage.migrate import upgrade
from banking.workers.admin import create_topics
from banking.workers.runtime import WORKER_NAMES
from tests.events.kafka_support import kafka_bootstrap, produce_raw
from tests.support.processes import ServerProcess, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO_ROOT / "infrastructure/prometheus"
DASHBOARD = REPO_ROOT / "infrastructure/grafana/dashboards/banking-overview.json"
JWT_SECRET = "observability-test-secret-0123456789-abcdef"
PASSWORD = "customer-password-1"
STARTUP_TIMEOUT_SECONDS = 60
SCRAPE_INTERVAL = "1s"
WORKERS = WORKER_NAMES  # every worker, each its own process as in production


def _redis_url() -> str:
    url = os.environ.get("BANKING_REDIS_URL")
    if not url:
        pytest.fail("needs BANKING_REDIS_URL (run `make test`)", pytrace=False)
    return url


def test_promtool_accepts_config_and_rules() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: scripts/install-system-deps.sh installs prometheus"
    config = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert config.returncode == 0, config.stdout + config.stderr
    rules = subprocess.run(
        [promtool, "check", "rules", str(PROMETHEUS_DIR / "alerts.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr


@dataclass
class Stack:
    api: str
    grpc_target: str
    prometheus: str
    prefix: str
    logs: dict[str, Path]
    customer_headers: dict[str, str]
    staff_headers: dict[str, str]
    accounts: list[str]
    customer_account: str
    trace_id: str = ""


def _process(args: list[str], env: dict[str, str], log: Path, ready: str) -> ServerProcess:
    """Launched, not waited for: the processes start side by side."""
    return ServerProcess(
        [sys.executable, "-m", "banking.cli", *args],
        env={**os.environ, **env},
        log_path=log,
        ready=ready,
        timeout=STARTUP_TIMEOUT_SECONDS,
    ).launch()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("observability")
    url, admin = os.environ.get("BANKING_PG_URL"), os.environ.get("BANKING_PG_ADMIN_DSN")
    if not url or not admin:
        pytest.fail("needs PostgreSQL (run `make test`)", pytrace=False)
    database = f"obs_{uuid.uuid4().hex[:10]}"
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"""
import asyncio, asyncpg
async def main():
    c = await asyncpg.connect({admin!r})
    await c.execute('CREATE DATABASE "{database}"')
    await c.close()
asyncio.run(main())
""",
        ],
        check=True,
    )
    database_url = url.rsplit("/", 1)[0] + f"/{database}"
    upgrade(database_url)
    prefix = f"obs{uuid.uuid4().hex[:8]}."
    env = {
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap(),
        "KAFKA_TOPIC_PREFIX": prefix,
        "KAFKA_TOPIC_PARTITIONS": "3",
        "REDIS_URL": _redis_url(),
        "JWT_SECRET": JWT_SECRET,
        "RATE_LIMIT_TOKEN": "3/minute",
        "LOG_LEVEL": "INFO",
        "LOG_JSON": "true",
        "DLQ_BACKOFF_SECONDS": "0.2",
        "ANALYTICS_LOCATION": str(tmp / "analytics"),
        "ANALYTICS_FLUSH_SECONDS": "1",
    }
    settings = Settings(**{k.lower(): v for k, v in env.items()})
    seeded = asyncio.run(_seed(settings))

    ports = {
        "api": free_port(),
        "grpc": free_port(),
        "grpc-standalone": free_port(),
        "grpc-metrics": free_port(),
    }
    ports.update({worker: free_port() for worker in WORKERS})
    logs = {name: tmp / f"{name}.log" for name in ("api", "grpc", *WORKERS)}

    def metrics(name: str) -> str:
        return f"http://127.0.0.1:{ports[name]}/metrics"

    processes = [
        _process(
            ["serve", "--port", str(ports["api"]), "--grpc-port", str(ports["grpc"])],
            env,
            logs["api"],
            f"http://127.0.0.1:{ports['api']}/ready",
        ),
        _process(
            [
                "grpc",
                "--port",
                str(ports["grpc-standalone"]),
                "--metrics-port",
                str(ports["grpc-metrics"]),
            ],
            env,
            logs["grpc"],
            metrics("grpc-metrics"),
        ),
        *[
            _process(
                ["worker", worker, "--metrics-port", str(ports[worker])],
                env,
                logs[worker],
                metrics(worker),
            )
            for worker in WORKERS
        ],
    ]
    prometheus_port = free_port()
    prometheus_env = {
        **os.environ,
        "PROMETHEUS_CONFIG": str(_prometheus_config(tmp, ports)),
        "BANKING_SERVICES_DIR": str(tmp / "services"),
        "BANKING_PROMETHEUS_PORT": str(prometheus_port),
    }
    script = str(REPO_ROOT / "scripts/services/prometheus.sh")
    try:
        for process in processes:
            process.wait_ready()
        subprocess.run(
            ["bash", script, "start"],
            env=prometheus_env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        running = Stack(
            api=f"http://127.0.0.1:{ports['api']}",
            grpc_target=f"127.0.0.1:{ports['grpc']}",
            prometheus=f"http://127.0.0.1:{prometheus_port}",
            prefix=prefix,
            logs=logs,
            **seeded,
        )
        running.trace_id = _traffic(running)
        yield running
    finally:
        subprocess.run(
            ["bash", script, "stop"],
            env=prometheus_env,
            check=False,
            capture_output=True,
            timeout=60,
        )
        for process in processes:
            process.terminate()
        for process in processes:
            process.stop()


async def _seed(settings: Settings) -> dict[str, Any]:
    await create_topics(settings)
    container = build_container(settings)
    try:
        users = container.users
        staff = await users.create(
            None,
            username="obs-teller",
            email="t@example.com",
            password="teller-password-1",
            role=Role.TELLER,
        )
        customer = await users.create(
            None,
            username="obs-customer",
            email="c@example.com",
            password=PASSWORD,
            role=Role.CUSTOMER,
        )
        staff_actor = container.tokens.verify(
            container.tokens.issue(staff.user_id, staff.username, staff.role)
        )
        accounts = []
        for _ in range(3):
            account, _ = await container.accounts.open(
                staff_actor, account_type="checking", currency="USD", customer_id=customer.user_id
            )
            accounts.append(str(account.account_id))
        token = container.tokens.issue(customer.user_id, customer.username, customer.role)
        staff_token = container.tokens.issue(staff.user_id, staff.username, staff.role)
    finally:
        await container.close()
    return {
        "customer_headers": {"Authorization": f"Bearer {token}"},
        "staff_headers": {"Authorization": f"Bearer {staff_token}"},
        "accounts": accounts,
        "customer_account": accounts[0],
    }


def _prometheus_config(tmp: Path, ports: dict[str, int]) -> Path:
    """The committed config with this run's targets, a 1 s scrape and the committed rules."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = SCRAPE_INTERVAL
    config["global"]["evaluation_interval"] = SCRAPE_INTERVAL
    config["rule_files"] = [str(PROMETHEUS_DIR / "alerts.yml")]
    port_of_job = {
        "banking-api": ports["api"],
        "banking-grpc": ports["grpc-metrics"],
        **{f"banking-{worker}": ports[worker] for worker in WORKERS},
    }
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert jobs == set(port_of_job), f"scrape jobs changed: {jobs}"
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [f"127.0.0.1:{port_of_job[job['job_name']]}"]}]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _traffic(stack: Stack) -> str:
    """A burst of everything an operator watches; returns the trace id of one async transfer."""
    trace_id = uuid.uuid4().hex
    with httpx.Client(base_url=stack.api + "/api/v1", timeout=30) as client:
        staff, customer = stack.staff_headers, stack.customer_headers
        for account in stack.accounts:
            response = client.post(
                "/transactions/credit",
                headers=staff,
                json={"account_id": account, "amount": "100.00", "currency": "USD"},
            )
            assert response.status_code == 200, response.text
        for index in range(20):
            body = {
                "account_id": stack.customer_account,
                "amount": "1.00",
                "currency": "USD",
                "reference_id": f"obs-{index % 15}",
            }
            assert (
                client.post("/transactions/debit", headers=customer, json=body).status_code == 200
            )  # 5 of them replay
            client.get(f"/accounts/{stack.customer_account}/balance", headers=customer)
        declined = client.post(
            "/transactions/debit",
            headers=customer,
            json={"account_id": stack.customer_account, "amount": "5000.00", "currency": "USD"},
        )
        assert declined.status_code == 422
        assert (
            client.post("/transactions/debit", headers=customer, json={"amount": "x"}).status_code
            == 422
        )
        assert client.get(f"/accounts/{uuid.uuid4()}", headers=customer).status_code == 404
        accepted = client.post(
            "/transactions/transfer",
            headers={
                **customer,
                "Prefer": "respond-async",
                "traceparent": f"00-{trace_id}-{'1' * 16}-01",
            },
            json={
                "source_account_id": stack.accounts[1],
                "destination_account_id": stack.accounts[2],
                "amount": "2.50",
                "currency": "USD",
            },
        )
        assert accepted.status_code == 202
        for _ in range(5):  # guessing a password: the token limit (3/minute) answers 429
            client.post("/auth/token", data={"username": "obs-customer", "password": "wrong"})
        assert (
            client.post(
                "/auth/token", data={"username": "obs-customer", "password": "wrong"}
            ).status_code
            == 429
        )
        client.post("/auth/token", data={"username": "obs-customer", "password": PASSWORD})
        deadline = time.monotonic() + 60
        location = stack.api + accepted.headers["Location"]
        while client.get(location, headers=customer).json()["status"] == "pending":
            assert time.monotonic() < deadline, "async transfer never settled"
            time.sleep(0.2)
    _grpc_traffic(stack)
    asyncio.run(
        produce_raw(
            kafka_bootstrap(),
            stack.prefix + topics.TRANSACTIONS_SUBMITTED,
            b"not a command",
            key=b"poison",
        )
    )
    return trace_id


def _grpc_traffic(stack: Stack) -> None:
    from banking.grpc.client import BankingClient

    async def calls() -> None:
        token = stack.staff_headers["Authorization"].removeprefix("Bearer ")
        async with BankingClient(stack.grpc_target, token) as client:
            await client.credit(stack.accounts[2], Decimal("3.00"), "USD")
            await client.get_balance(stack.accounts[2])

    asyncio.run(calls())


def _query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def _rule_queries() -> list[tuple[str, str]]:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    queries = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            expr = " ".join(rule["expr"].split())
            # The measurement an alert compares: everything before its final threshold.
            measured = re.sub(r"\s*(==|!=|>=|<=|>|<)\s*[0-9.e+-]+\s*$", "", expr)
            assert measured != expr, f"{rule['alert']} has no final threshold"
            queries.append((rule["alert"], measured))
    return queries


def _wait_for_data(stack: Stack, queries: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Queries still without data once Prometheus had time to scrape the burst (bounded)."""
    deadline = time.monotonic() + 60
    missing = queries
    while missing and time.monotonic() < deadline:
        missing = [(name, expr) for name, expr in missing if not _query(stack.prometheus, expr)]
        if missing:
            time.sleep(1)
    return missing


def test_every_dashboard_panel_returns_data(stack: Stack) -> None:
    queries = _panel_queries()
    assert len(queries) > 25
    assert _wait_for_data(stack, queries) == []


def test_every_metric_a_panel_or_rule_reads_is_exported(stack: Stack) -> None:
    """No panel or alert reads a metric the service does not declare (a typo, a rename)."""
    exposition = httpx.get(stack.api + "/metrics", timeout=10).text
    declared = {family.name for family in text_string_to_metric_families(exposition)}
    read = {
        (name, metric)
        for name, expr in _panel_queries() + _rule_queries()
        for metric in re.findall(r"\bbanking_[a-z0-9_]+", expr)
    }
    assert len({metric for _, metric in read}) > 40
    missing = [
        (name, metric)
        for name, metric in read
        if re.sub(r"_(bucket|count|sum|total)$", "", metric) not in declared
    ]
    assert missing == []


def test_every_alert_expression_returns_data(stack: Stack) -> None:
    queries = _rule_queries()
    assert len(queries) >= 10
    assert _wait_for_data(stack, queries) == []


def test_every_process_is_scraped(stack: Stack) -> None:
    up = _query(stack.prometheus, 'up{job=~"banking-.*"}')
    assert {series["metric"]["job"] for series in up} == {
        "banking-api",
        "banking-grpc",
        *(f"banking-{worker}" for worker in WORKERS),
    }
    assert {series["value"][1] for series in up} == {"1"}


def test_one_trace_id_follows_a_transfer_through_api_and_worker_logs(stack: Stack) -> None:
    def lines_with_trace(name: str) -> list[dict[str, Any]]:
        found = []
        for line in stack.logs[name].read_text().splitlines():
            if stack.trace_id in line:
                found.append(json.loads(line))
        return found

    api_lines = lines_with_trace("api")
    processor_lines = lines_with_trace("processor")
    assert any(line["event"] == "http_request" and line.get("request_id") for line in api_lines)
    assert any(line["event"] == "command_applied" for line in processor_lines)
    assert all(line["trace_id"] == stack.trace_id for line in api_lines + processor_lines)
    transaction_ids = {line.get("transaction_id") for line in processor_lines} - {None}
    assert transaction_ids and transaction_ids <= {line.get("transaction_id") for line in api_lines}


def test_no_password_token_or_secret_in_any_log(stack: Stack) -> None:
    secrets = [
        PASSWORD,
        "teller-password-1",
        JWT_SECRET,
        stack.customer_headers["Authorization"].removeprefix("Bearer "),
        stack.staff_headers["Authorization"].removeprefix("Bearer "),
    ]
    for name, path in stack.logs.items():
        text = path.read_text()
        assert text, f"{name} wrote no log"
        for secret in secrets:
            assert secret not in text, f"a secret appears in the {name} log"
