"""Rate limits: per user (per client address before login), stricter on the token endpoint,
429 with the error envelope and the RateLimit headers; shared by two real API processes."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import httpx
import pytest

from banking.bootstrap import build_container
from banking.domain.roles import Role
from tests.cache.conftest import BankFactory, unique_name
from tests.conftest import make_settings
from tests.support.processes import ServerProcess, free_port

PASSWORD = "correct-horse-battery"  # what tests.conftest.Bank.user gives every user
STARTUP_TIMEOUT_SECONDS = 30


@pytest.fixture(params=["memory", "redis"])
def limiter_env(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "memory":
        return {}
    return {"REDIS_URL": request.getfixturevalue("redis_url")}


def assert_refused(response: httpx.Response, limit: int) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "RATE_LIMITED"
    assert error["request_id"] == response.headers["X-Request-ID"]
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["RateLimit-Limit"] == str(limit)
    assert response.headers["RateLimit-Remaining"] == "0"
    assert int(response.headers["RateLimit-Reset"]) >= 1


async def test_each_user_has_a_limit_and_is_told_what_remains(
    database_url: str, limiter_env: dict[str, str], bank_factory: BankFactory
) -> None:
    async with bank_factory(database_url, RATE_LIMIT_DEFAULT="5/minute", **limiter_env) as bank:
        _, alice = await bank.user(Role.CUSTOMER)
        _, bob = await bank.user(Role.CUSTOMER)

        remaining = []
        for _ in range(5):
            response = await bank.client.get("/api/v1/users/me", headers=alice)
            assert response.status_code == 200, response.text
            assert response.headers["RateLimit-Limit"] == "5"
            remaining.append(int(response.headers["RateLimit-Remaining"]))
        assert remaining == [4, 3, 2, 1, 0]

        assert_refused(await bank.client.get("/api/v1/users/me", headers=alice), limit=5)
        # Another user is not affected, and neither are the operational endpoints.
        assert (await bank.client.get("/api/v1/users/me", headers=bob)).status_code == 200
        assert (await bank.client.get("/health")).status_code == 200
        rejected = bank.container.metrics.registry.get_sample_value(
            "banking_rate_limit_rejections_total", {"scope": "default"}
        )
        assert rejected == 1


async def test_before_login_the_client_address_is_limited(
    database_url: str, limiter_env: dict[str, str], bank_factory: BankFactory
) -> None:
    async with bank_factory(database_url, RATE_LIMIT_DEFAULT="3/minute", **limiter_env) as bank:
        anonymous = [await bank.client.get("/api/v1/users/me") for _ in range(2)]
        forged = await bank.client.get(
            "/api/v1/users/me", headers={"Authorization": "Bearer not-a-token"}
        )
        assert [r.status_code for r in [*anonymous, forged]] == [401, 401, 401]
        # A forged token is counted against the address it comes from, not a user.
        assert_refused(await bank.client.get("/api/v1/users/me"), limit=3)


async def test_token_endpoint_stops_a_password_guessing_loop(
    database_url: str, limiter_env: dict[str, str], bank_factory: BankFactory
) -> None:
    async with bank_factory(database_url, RATE_LIMIT_TOKEN="3/minute", **limiter_env) as bank:
        victim = unique_name("victim")
        await bank.user(Role.CUSTOMER, name=victim)
        other = unique_name("other")
        await bank.user(Role.CUSTOMER, name=other)

        statuses = []
        for guess in range(20):
            response = await bank.client.post(
                "/api/v1/auth/token", data={"username": victim, "password": f"guess-{guess}"}
            )
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert_refused(response, limit=3)
        assert statuses == [401] * 3 + [429] * 17

        # Even the right password is refused now: the guesser learns nothing more.
        right = await bank.client.post(
            "/api/v1/auth/token", data={"username": victim, "password": PASSWORD}
        )
        assert right.status_code == 429
        # Another user signing in from the same address is not locked out.
        ok = await bank.client.post(
            "/api/v1/auth/token", data={"username": other, "password": PASSWORD}
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["access_token"]


async def test_browsers_may_read_the_limit_headers(
    database_url: str, bank_factory: BankFactory
) -> None:
    async with bank_factory(database_url, CORS_ALLOW_ORIGINS=["https://app.example"]) as bank:
        response = await bank.client.get(
            "/api/v1/users/me", headers={"Origin": "https://app.example"}
        )
        exposed = response.headers["Access-Control-Expose-Headers"]
        for name in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "Retry-After"):
            assert name in exposed


class ApiProcess:
    """``banking serve`` as a real subprocess on a free port."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = ServerProcess(
            [
                *(sys.executable, "-m", "banking.cli", "serve"),
                *("--port", str(self.port), "--grpc-port", str(free_port())),
            ],
            env=env,
            log_path=log_dir / f"serve-{self.port}.log",
            ready=f"{self.base}/ready",
            timeout=STARTUP_TIMEOUT_SECONDS,
        ).launch()

    def wait_ready(self) -> None:
        self.process.wait_ready()

    def stop(self) -> None:
        self.process.stop()


@dataclass
class TwoProcesses:
    first: ApiProcess
    second: ApiProcess
    username: str
    headers: dict[str, str]  # the user's bearer token


@pytest.fixture
def two_api_processes(postgres_url: str, redis_url: str, tmp_path: Path) -> Iterator[TwoProcesses]:
    """Two API processes on one PostgreSQL database and one Redis, with small limits, and a
    customer who exists in that database."""
    settings = make_settings(postgres_url)
    username = unique_name("carol")

    async def create_user() -> UUID:
        container = build_container(settings)
        try:
            user = await container.users.create(
                None,
                username=username,
                email=f"{username}@example.com",
                password=PASSWORD,
                role=Role.CUSTOMER,
            )
            return user.user_id
        finally:
            await container.close()

    user_id = asyncio.run(create_user())
    token = build_container(settings).tokens.issue(user_id, username, Role.CUSTOMER)
    env = {
        **{k: v for k, v in os.environ.items() if k != "BANKING_ENV"},
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_url,
        "JWT_SECRET": settings.jwt_secret.get_secret_value(),
        "RATE_LIMIT_DEFAULT": "10/minute",
        "RATE_LIMIT_TOKEN": "4/minute",
        "LOG_LEVEL": "WARNING",
        "DATA_DIR": str(tmp_path / "data"),
    }
    servers = [ApiProcess(tmp_path, env), ApiProcess(tmp_path, env)]
    try:
        for server in servers:
            server.wait_ready()
        yield TwoProcesses(servers[0], servers[1], username, {"Authorization": f"Bearer {token}"})
    finally:
        for server in servers:
            server.stop()


def test_limits_are_shared_by_two_api_processes(two_api_processes: TwoProcesses) -> None:
    api = two_api_processes
    alternating = [api.first, api.second]
    with httpx.Client(timeout=10) as client:
        # Password guessing, alternating between the processes: 4 tries in all (not 4 per
        # process), then both refuse.
        guesses = [
            client.post(
                f"{server.base}/api/v1/auth/token",
                data={"username": api.username, "password": f"guess-{index}"},
            )
            for index, server in enumerate(alternating * 4)
        ]
        assert [r.status_code for r in guesses] == [401] * 4 + [429] * 4
        for refused in guesses[4:]:
            assert_refused(refused, limit=4)

        # The per-user limit (10/minute) counts the user's requests on both processes together.
        answers = [
            client.get(f"{server.base}/api/v1/users/me", headers=api.headers)
            for server in alternating * 6
        ]
        assert [r.status_code for r in answers] == [200] * 10 + [429] * 2
        remaining = [int(r.headers["RateLimit-Remaining"]) for r in answers[:10]]
        assert remaining == list(range(9, -1, -1))
        for refused in answers[10:]:
            assert_refused(refused, limit=10)
