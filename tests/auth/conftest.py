"""Helpers for the token and user tests: key files, several instances on one database (each
a container with its REST app and a real gRPC server), and what a user sees at each door."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from banking.config import Settings
from banking.domain.roles import Role
from banking.grpc.client import BankingClient, BankingClientError
from banking.grpc.server import start_server
from tests.conftest import Bank, make_settings, running_bank

PASSWORD = "correct-horse-battery"
SECRET_OLD = "old-signing-secret-0123456789-abcdefghij"
SECRET_NEW = "new-signing-secret-9876543210-klmnopqrst"


def write_key_pair(directory: Path, kid: str, *, kind: str = "ed25519") -> tuple[Path, Path]:
    """A fresh private key (``<kid>.key``) and its public half (``<kid>.pem``) in
    ``directory``: the layout JWT_PRIVATE_KEY_FILE and JWT_PUBLIC_KEYS_DIR read."""
    directory.mkdir(parents=True, exist_ok=True)
    private: Any = (
        ed25519.Ed25519PrivateKey.generate()
        if kind == "ed25519"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    private_path = directory / f"{kid}.key"
    private_path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    private_path.chmod(0o600)
    public_path = directory / f"{kid}.pem"
    public_path.write_bytes(public_pem(private))
    return private_path, public_path


def public_pem(private: Any) -> bytes:
    pem: bytes = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem


def hmac_settings(database_url: str, keys: str, signing_kid: str, **overrides: Any) -> Settings:
    """An instance configured with JWT_KEYS / JWT_SIGNING_KID (no JWT_SECRET)."""
    return make_settings(
        database_url, jwt_secret="", jwt_keys=keys, jwt_signing_kid=signing_kid, **overrides
    )


@dataclass
class Instance:
    """One running instance: the REST app (in-process) and a real gRPC server."""

    bank: Bank
    grpc_target: str

    async def rest_balance(self, token: str, account_id: str) -> httpx.Response:
        return await self.bank.client.get(
            f"/api/v1/accounts/{account_id}/balance",
            headers={"Authorization": f"Bearer {token}"},
        )

    async def grpc_balance(self, token: str, account_id: str) -> str | BankingClientError:
        """The available balance over gRPC, or the error the call ended with."""
        async with BankingClient(self.grpc_target, token) as client:
            try:
                return str((await client.get_balance(account_id)).available_balance)
            except BankingClientError as error:
                return error


@asynccontextmanager
async def instance(settings: Settings) -> AsyncIterator[Instance]:
    async with running_bank(settings) as bank:
        server = await start_server(bank.container, host="127.0.0.1", port=0)
        try:
            yield Instance(bank, f"127.0.0.1:{server.port}")
        finally:
            await server.stop(0)


async def login(bank: Bank, username: str, password: str = PASSWORD) -> str:
    """A token from ``POST /api/v1/auth/token``, as a client gets one."""
    response = await bank.client.post(
        "/api/v1/auth/token", data={"username": username, "password": password}
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def customer_with_account(bank: Bank, funded: str = "25.00") -> tuple[str, str]:
    """A new customer's username and their funded account (opened by a new teller)."""
    _, staff = await bank.user(Role.TELLER)
    username = f"customer-{uuid.uuid4().hex[:8]}"
    user = await bank.container.users.create(
        None,
        username=username,
        email=f"{username}@example.com",
        password=PASSWORD,
        role=Role.CUSTOMER,
    )
    return username, await bank.account(user.user_id, staff, funded=funded)


def refused_over_grpc(outcome: str | BankingClientError) -> bool:
    return (
        isinstance(outcome, BankingClientError)
        and outcome.status is grpc.StatusCode.UNAUTHENTICATED
        and outcome.code == "UNAUTHENTICATED"
    )
