"""A real ``grpc.aio`` server on a free loopback port, on the same container as the ``bank``
fixture's REST app (SQLite and PostgreSQL), and typed clients for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import grpc
import pytest

from banking.domain.roles import Role
from banking.grpc.client import BankingClient
from banking.grpc.server import start_server
from tests.conftest import Bank, make_settings, running_bank


def bearer(headers: dict[str, str]) -> str:
    """The raw JWT of the ``bank`` fixture's ``Authorization`` header."""
    return headers["Authorization"].removeprefix("Bearer ")


@dataclass
class GrpcBank:
    """The REST ``bank`` and a gRPC server on the same container."""

    bank: Bank
    target: str
    _clients: list[BankingClient] = field(default_factory=list)
    _channels: list[grpc.aio.Channel] = field(default_factory=list)

    def client(self, headers: dict[str, str] | None) -> BankingClient:
        client = BankingClient(self.target, bearer(headers) if headers else None)
        self._clients.append(client)
        return client

    def channel(self) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(self.target)
        self._channels.append(channel)
        return channel

    async def customer_with_account(
        self, funded: str | None = "100.00", currency: str = "USD"
    ) -> tuple[dict[str, str], dict[str, str], UUID]:
        """A teller's and a customer's headers, and the customer's account (funded)."""
        _, staff = await self.bank.user(Role.TELLER)
        customer_id, customer = await self.bank.user(Role.CUSTOMER)
        account_id = await self.bank.account(customer_id, staff, currency=currency, funded=funded)
        return staff, customer, UUID(account_id)

    async def close(self) -> None:
        for client in self._clients:
            await client.close()
        for channel in self._channels:
            await channel.close()


@asynccontextmanager
async def serving(bank: Bank) -> AsyncIterator[GrpcBank]:
    """A gRPC server on ``bank``'s container for as long as the block runs."""
    server = await start_server(bank.container, host="127.0.0.1", port=0)
    running = GrpcBank(bank, f"127.0.0.1:{server.port}")
    try:
        yield running
    finally:
        await running.close()
        await server.stop(0)


@asynccontextmanager
async def grpc_bank_with(database_url: str, **settings: Any) -> AsyncIterator[GrpcBank]:
    """REST and gRPC on a container of the test's own settings (``make_settings`` overrides)."""
    async with running_bank(make_settings(database_url, **settings)) as bank, serving(bank) as g:
        yield g


@pytest.fixture
async def grpc_bank(bank: Bank) -> AsyncIterator[GrpcBank]:
    async with serving(bank) as running:
        yield running


@pytest.fixture
async def pg_grpc_bank(pg_bank: Bank) -> AsyncIterator[GrpcBank]:
    async with serving(pg_bank) as running:
        yield running
