"""The ``banking`` command line, run as a user runs it: real processes, real HTTP."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import ServerProcess, free_port

BANKING = [sys.executable, "-m", "banking.cli"]
STARTUP_TIMEOUT_SECONDS = 30


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BANKING_ENV")}
    env.update({"DATA_DIR": str(data_dir), "LOG_LEVEL": "INFO"}, **extra)
    return env


def _run(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BANKING, *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class Server:
    def __init__(self, data_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = ServerProcess(
            # serve binds gRPC too: a free port, not 50051, which may be taken
            [*BANKING, "serve", "--port", str(self.port), "--grpc-port", str(free_port())],
            env=_env(data_dir, **env),
            log_path=data_dir.parent / f"serve-{self.port}.log",
            ready=f"{self.base}/ready",
            timeout=STARTUP_TIMEOUT_SECONDS,
        ).start()

    def output(self) -> str:
        return self.process.output()

    def stop(self) -> None:
        self.process.stop()


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "data"


def test_first_start_prints_admin_password_once_and_the_sketch_flow_works(data_dir: Path) -> None:
    server = Server(data_dir)
    try:
        banner = re.search(r"created user 'admin' with password\s+(\S+)", server.output())
        assert banner, server.output()
        password = banner.group(1)
        with httpx.Client(base_url=server.base + "/api/v1") as client:
            token = client.post("/auth/token", data={"username": "admin", "password": password})
            assert token.status_code == 200, token.text
            admin = {"Authorization": f"Bearer {token.json()['access_token']}"}
            customer = client.post(
                "/users",
                headers=admin,
                json={
                    "username": "dana",
                    "email": "dana@example.com",
                    "password": "dana-password-12",
                    "role": "customer",
                },
            ).json()
            account = client.post(
                "/accounts",
                headers=admin,
                json={
                    "currency": "USD",
                    "account_type": "checking",
                    "customer_id": customer["user_id"],
                },
            )
            assert account.status_code == 201
            account_id = account.json()["account_id"]
            credit = client.post(
                "/transactions/credit",
                headers=admin,
                json={
                    "account_id": account_id,
                    "amount": 1000.00,
                    "currency": "USD",
                    "reference_id": "TEST-INIT-CREDIT",
                },
            )
            assert credit.status_code == 200
            dana = client.post(
                "/auth/token", data={"username": "dana", "password": "dana-password-12"}
            )
            dana_headers = {"Authorization": f"Bearer {dana.json()['access_token']}"}
            debit = client.post(
                "/transactions/debit",
                headers=dana_headers,
                json={
                    "account_id": account_id,
                    "amount": 100.00,
                    "currency": "USD",
                    "reference_id": "TEST-DEBIT-1",
                },
            )
            assert debit.status_code == 200
            balance = client.get(f"/accounts/{account_id}/balance", headers=dana_headers)
            assert balance.json()["available_balance"] == "900.00"
        logs = server.output()
        assert password not in logs.replace(banner.group(0), "")
        assert "dana-password-12" not in logs
    finally:
        server.stop()

    again = Server(data_dir)
    try:
        assert "created user 'admin'" not in again.output()
    finally:
        again.stop()

    reconciled = _run(["reconcile"], _env(data_dir))
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    assert '"clean": true' in reconciled.stdout


def test_production_refuses_default_or_missing_secret(data_dir: Path) -> None:
    for secret in ("", "your-secret-key", "development-only-insecure-jwt-secret-change-me"):
        result = _run(
            ["serve", "--port", str(free_port())],
            _env(
                data_dir,
                BANKING_ENV="production",
                JWT_SECRET=secret,
                DATABASE_URL=f"sqlite:///{data_dir}/p.db",
            ),
        )
        assert result.returncode == 2
        assert "JWT_SECRET" in result.stderr
        assert secret == "" or secret not in result.stderr


def test_serve_refuses_replicas_with_several_workers_and_no_redis(data_dir: Path) -> None:
    """Each worker would keep its own record of who just wrote: a client could read its own
    write stale from a replica. Refused before anything starts or is written."""
    env = _env(data_dir, DATABASE_REPLICA_URLS='["postgresql://banking@127.0.0.1:1/banking"]')
    env.pop("REDIS_URL", None)
    result = _run(["serve", "--port", str(free_port()), "--workers", "2"], env)
    assert result.returncode == 2
    assert "DATABASE_REPLICA_URLS with --workers > 1 needs REDIS_URL" in result.stderr
    assert not data_dir.exists()  # no database was made


def test_users_create_reads_the_password_from_stdin(data_dir: Path) -> None:
    env = _env(data_dir)
    created = _run(
        [
            "users",
            "create",
            "--username",
            "erin",
            "--email",
            "erin@example.com",
            "--role",
            "teller",
        ],
        env,
        stdin="erin-password-123\n",
    )
    assert created.returncode == 0, created.stderr
    assert '"role": "teller"' in created.stdout
    assert "erin-password-123" not in created.stdout + created.stderr
    duplicate = _run(
        ["users", "create", "--username", "erin", "--email", "e2@example.com"],
        env,
        stdin="another-password-1\n",
    )
    assert duplicate.returncode == 1
    assert "USER_ALREADY_EXISTS" in duplicate.stderr
    weak = _run(
        ["users", "create", "--username", "frank", "--email", "f@example.com"], env, stdin="short\n"
    )
    assert weak.returncode == 1
    assert "VALIDATION_ERROR" in weak.stderr


def test_reconcile_exits_non_zero_when_the_books_do_not_balance(data_dir: Path) -> None:
    server = Server(data_dir)
    try:
        password = re.search(r"password\s+(\S+)", server.output())
        assert password
        with httpx.Client(base_url=server.base + "/api/v1") as client:
            token = client.post(
                "/auth/token", data={"username": "admin", "password": password.group(1)}
            )
            admin = {"Authorization": f"Bearer {token.json()['access_token']}"}
            customer = client.post(
                "/users",
                headers=admin,
                json={
                    "username": "gail",
                    "email": "gail@example.com",
                    "password": "gail-password-12",
                },
            ).json()
            account_id = client.post(
                "/accounts",
                headers=admin,
                json={"currency": "EUR", "customer_id": customer["user_id"]},
            ).json()["account_id"]
            client.post(
                "/transactions/credit",
                headers=admin,
                json={"account_id": account_id, "amount": "10.00", "currency": "EUR"},
            )
    finally:
        server.stop()
    assert _run(["reconcile"], _env(data_dir)).returncode == 0

    with sqlite3.connect(data_dir / "banking.db") as connection:
        connection.execute("UPDATE balances SET current_balance = current_balance + 1")
    result = _run(["reconcile"], _env(data_dir))
    assert result.returncode == 1
    assert "EUR: balances 10.01 != credits 10.00 - debits 0.00" in result.stdout
