"""Fixtures of the notification tests: a bank with webhook settings fit for tests (127.0.0.1
allowed, short backoffs) and a real HTTP receiver on 127.0.0.1 (aiohttp)."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import func, select

from banking.events import topics
from banking.storage.tables import consumed_events, outbox, webhook_attempts, webhook_deliveries
from banking.storage.tables import webhooks as webhooks_table
from banking.workers.runtime import EmbeddedEvents
from tests.conftest import Bank, make_settings, running_bank

WEBHOOK_SETTINGS: dict[str, Any] = {
    "webhook_allowed_networks": ["127.0.0.1/32"],
    "webhook_backoff_seconds": 0.05,
    "webhook_backoff_seconds_max": 0.2,
    "webhook_attempts_max": 3,
    "webhook_timeout_seconds": 2.0,
    "webhook_disable_after_failures": 2,
}
WAIT_SECONDS_MAX = 20.0


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 that records each request and answers the next planned
    status (200 once the plan is used up)."""

    base_url: str = ""
    received: list[Received] = field(default_factory=list)
    plan: deque[int] = field(default_factory=deque)

    def url(self, path: str = "/hook") -> str:
        return f"{self.base_url}{path}"

    def on(self, path: str) -> list[Received]:
        return [request for request in self.received if request.path == path]

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(Received(request.path, dict(request.headers), await request.read()))
        status = self.plan.popleft() if self.plan else 200
        return web.Response(status=status, text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recorder = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", recorder.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    recorder.base_url = f"http://127.0.0.1:{port}"
    yield recorder
    await runner.cleanup()


@pytest.fixture
async def bank(database_url: str) -> AsyncIterator[Bank]:
    """The shared ``bank`` with the test webhook settings."""
    async with running_bank(make_settings(database_url, **WEBHOOK_SETTINGS)) as running:
        yield running


@pytest.fixture
async def events(bank: Bank) -> AsyncIterator[EmbeddedEvents]:
    """The embedded shape's event side (relay, consumers, webhook delivery loop) running."""
    embedded = EmbeddedEvents(bank.container)
    await embedded.start()
    yield embedded
    await embedded.stop()


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait (bounded) until ``check`` holds."""
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS_MAX
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def create_webhook(
    bank: Bank, headers: dict[str, str], url: str, event_types: list[str] | None = None
) -> dict[str, Any]:
    response = await bank.client.post(
        "/api/v1/webhooks",
        json={"url": url, "event_types": event_types or ["transaction.completed"]},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def counts(bank: Bank) -> dict[str, int]:
    """Rows of every table the notification service writes."""
    found = {}
    async with bank.container.database.read() as connection:
        for table in (
            webhooks_table,
            webhook_deliveries,
            webhook_attempts,
            consumed_events,
            outbox,
        ):
            found[table.name] = (
                await connection.execute(select(func.count()).select_from(table))
            ).scalar_one()
    return found


async def notifications_for(bank: Bank, user_id: object) -> list[dict[str, Any]]:
    """The outbox rows on ``banking.notifications`` for one user, oldest first."""
    async with bank.container.database.read() as connection:
        rows = (
            await connection.execute(
                select(outbox.c.payload, outbox.c.event_type)
                .where(outbox.c.topic == topics.NOTIFICATIONS)
                .where(outbox.c.event_key == str(user_id))
                .order_by(outbox.c.outbox_id)
            )
        ).all()
    return [json.loads(row.payload) | {"_event_type": row.event_type} for row in rows]
