"""Read-your-write with several API processes and no Redis: the real ``banking serve
--workers 2`` on PostgreSQL, no ``REDIS_URL``. A client debits and then reads its balance, on a
new connection each time, so the two requests land on either worker; every read must show the
version the debit returned. Without Redis a memory cache per worker cannot see the other
worker's commits, so ``--workers 2`` turns it off (and says so once); ``--workers 1`` keeps it
(cache hits in ``/metrics``).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from banking.bootstrap import build_container
from banking.domain.roles import Role
from tests.cache.conftest import unique_name
from tests.conftest import make_settings
from tests.support.processes import ServerProcess, free_port

pytestmark = pytest.mark.postgres

PAIRS = 100
REPEATED_READS = 10
STARTUP_TIMEOUT_SECONDS = 60.0
PASSWORD = "correct-horse-battery"


@dataclass
class Served:
    server: ServerProcess
    base: str
    customer: dict[str, str]
    account_id: str


def start_api(postgres_url: str, tmp_path: Path, *, workers: int) -> Served:
    """Users, a funded account, and ``banking serve --workers N`` on that database."""
    settings = make_settings(postgres_url)

    async def create_users() -> tuple[dict[str, str], dict[str, str], str]:
        container = build_container(settings)
        try:
            made = {}
            for role in (Role.TELLER, Role.CUSTOMER):
                name = unique_name(role.value)
                user = await container.users.create(
                    None, username=name, email=f"{name}@example.com", password=PASSWORD, role=role
                )
                token = container.tokens.issue(user.user_id, name, role)
                made[role] = ({"Authorization": f"Bearer {token}"}, str(user.user_id))
            return made[Role.TELLER][0], made[Role.CUSTOMER][0], made[Role.CUSTOMER][1]
        finally:
            await container.close()

    staff, customer, customer_id = asyncio.run(create_users())
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if k not in {"BANKING_ENV", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS"}
        },
        "DATABASE_URL": postgres_url,
        "JWT_SECRET": settings.jwt_secret.get_secret_value(),
        "DATA_DIR": str(tmp_path / "data"),
        "LOG_LEVEL": "INFO",
        "RATE_LIMIT_DEFAULT": "100000/second",
        "BALANCE_CACHE_TTL_SECONDS": "60",  # an entry outlives the test: only invalidation helps
    }
    server = ServerProcess(
        [
            *(sys.executable, "-m", "banking.cli", "serve", "--no-migrate"),
            *("--port", str(port), "--grpc-port", str(free_port()), "--workers", str(workers)),
        ],
        env=env,
        log_path=tmp_path / f"serve-{workers}.log",
        ready=f"{base}/ready",
        timeout=STARTUP_TIMEOUT_SECONDS,
    ).start()
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            opened = client.post(
                "/api/v1/accounts",
                json={"account_type": "checking", "currency": "USD", "customer_id": customer_id},
                headers=staff,
            )
            assert opened.status_code == 201, opened.text
            account_id = opened.json()["account_id"]
            credited = client.post(
                "/api/v1/transactions/credit",
                json={"account_id": account_id, "amount": "1000.00", "currency": "USD"},
                headers=staff,
            )
            assert credited.status_code == 200, credited.text
    except BaseException:
        server.stop()
        raise
    return Served(server, base, customer, account_id)


def fresh_request(served: Served, method: str, path: str, **options: object) -> httpx.Response:
    """One request on a connection of its own: the kernel hands it to either worker."""
    with httpx.Client(base_url=served.base, timeout=30, headers={"Connection": "close"}) as client:
        return client.request(method, path, headers=served.customer, **options)  # type: ignore[arg-type]


def debit_then_read(served: Served) -> list[tuple[int, int, str]]:
    """``PAIRS`` times: read (so a worker may cache the balance), debit 1.00, read again. The
    stale reads: (pair, version the debit returned, what the read showed)."""
    balance_path = f"/api/v1/accounts/{served.account_id}/balance"
    stale = []
    for pair in range(PAIRS):
        assert fresh_request(served, "GET", balance_path).status_code == 200
        debited = fresh_request(
            served,
            "POST",
            "/api/v1/transactions/debit",
            json={
                "account_id": served.account_id,
                "amount": "1.00",
                "currency": "USD",
                "reference_id": f"ryw-{pair}",
            },
        )
        assert debited.status_code == 200, debited.text
        written = debited.json()
        read = fresh_request(served, "GET", balance_path)
        assert read.status_code == 200, read.text
        shown = read.json()
        if (shown["version"], shown["available_balance"]) != (
            written["balance_version"],
            written["available_balance"],
        ):
            stale.append((pair, written["balance_version"], f"{shown['version']}"))
    return stale


def balance_cache_counts(served: Served) -> dict[str, float]:
    """``banking_cache_requests_total{cache="balance"}`` by result, summed over the workers."""
    text = fresh_request(served, "GET", "/metrics").text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "banking_cache_requests_total"
                and sample.labels.get("cache") == "balance"
            ):
                result = sample.labels["result"]
                counts[result] = counts.get(result, 0.0) + sample.value
    return counts


def test_two_workers_without_redis_read_their_own_writes(postgres_url: str, tmp_path: Path) -> None:
    served = start_api(postgres_url, tmp_path, workers=2)
    try:
        stale = debit_then_read(served)
        counts = balance_cache_counts(served)
    finally:
        served.server.stop()
    assert stale == []
    assert counts.get("hit", 0) == 0 and counts.get("miss", 0) == 0  # no cache at all
    output = served.server.log_path.read_text()
    assert output.count('"balance_cache_disabled"') == 1  # said once, by the master process


def test_one_worker_keeps_its_cache_and_reads_its_own_writes(
    postgres_url: str, tmp_path: Path
) -> None:
    served = start_api(postgres_url, tmp_path, workers=1)
    try:
        stale = debit_then_read(served)
        # Once the in-process relay has delivered the last balance event (which invalidates
        # too), repeated reads of an unchanged balance are served from the cache.
        time.sleep(1.0)
        before = balance_cache_counts(served)
        for _ in range(REPEATED_READS):
            read = fresh_request(served, "GET", f"/api/v1/accounts/{served.account_id}/balance")
            assert read.json()["available_balance"] == f"{1000 - PAIRS}.00"
        after = balance_cache_counts(served)
    finally:
        served.server.stop()
    assert stale == []
    assert after.get("hit", 0) - before.get("hit", 0) >= REPEATED_READS - 1
    assert after.get("hit", 0) + after.get("miss", 0) >= 2 * PAIRS + REPEATED_READS
    assert "balance_cache_disabled" not in served.server.log_path.read_text()
