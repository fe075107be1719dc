"""TRUSTED_PROXIES: the client address (the per-IP rate limit's key) and scheme come from
X-Forwarded-For / X-Forwarded-Proto only when the direct peer is a trusted proxy; then the
client is the right-most address that is not one. INSTANCE_NAME shows in X-Served-By."""

from __future__ import annotations

import ipaddress
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from banking.bootstrap import build_container, create_rest_app
from banking.rest.middleware import ProxyHeadersMiddleware, forwarded_client
from tests.conftest import make_settings

LB = "10.0.0.5"
TRUSTED = (ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("fd00::/8"))

ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def api(tmp_path: Path, sqlite_template: Path) -> ClientFactory:
    """``async with api(peer, **settings) as client``: the REST app seen from ``peer``."""

    @asynccontextmanager
    async def build(peer: str, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        database = tmp_path / "banking.db"
        if not database.exists():
            shutil.copyfile(sqlite_template, database)
        settings = make_settings(
            f"sqlite+aiosqlite:///{database}", rate_limit_default="3/minute", **overrides
        )
        container = build_container(settings)
        transport = httpx.ASGITransport(app=create_rest_app(container), client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://bank") as client:
            try:
                yield client
            finally:
                await container.close()

    return build


async def remaining(client: httpx.AsyncClient, forwarded_for: str | None = None) -> int:
    headers = {} if forwarded_for is None else {"X-Forwarded-For": forwarded_for}
    response = await client.get("/api/v1/users/me", headers=headers)
    assert response.status_code in (401, 429), response.text
    return int(response.headers["RateLimit-Remaining"])


async def test_a_spoofed_header_from_an_untrusted_peer_changes_nothing(api: ClientFactory) -> None:
    async with api("198.51.100.7", trusted_proxies=[f"{LB}/32"]) as client:
        seen = [await remaining(client, f"203.0.113.{i}") for i in range(3)]
        assert seen == [2, 1, 0]  # one budget: the peer's, whatever the header says
        assert (await client.get("/api/v1/users/me")).status_code == 429


async def test_without_trusted_proxies_the_header_is_never_believed(api: ClientFactory) -> None:
    async with api(LB) as client:  # TRUSTED_PROXIES empty (the default)
        seen = [await remaining(client, f"203.0.113.{i}") for i in range(3)]
        assert seen == [2, 1, 0]


async def test_from_a_trusted_peer_the_forwarded_address_is_the_key(api: ClientFactory) -> None:
    async with api(LB, trusted_proxies=["10.0.0.0/24"]) as client:
        # Two clients behind the same balancer have a budget each.
        assert [await remaining(client, "203.0.113.1") for _ in range(2)] == [2, 1]
        assert await remaining(client, "203.0.113.2") == 2
        # In a chain, the right-most untrusted address counts: what the client wrote on the
        # left (a spoofed 192.0.2.99) is ignored, 10.0.0.7 is another trusted proxy.
        assert await remaining(client, "192.0.2.99, 203.0.113.1, 10.0.0.7") == 0
        refused = await client.get(
            "/api/v1/users/me", headers={"X-Forwarded-For": "192.0.2.1, 203.0.113.1"}
        )
        assert refused.status_code == 429


async def _seen_by_the_app(peer: str, headers: dict[str, str]) -> dict[str, Any]:
    """The client and scheme an app inside ProxyHeadersMiddleware sees."""
    seen: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.update(client=scope["client"][0], scheme=scope["scheme"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    transport = httpx.ASGITransport(
        app=ProxyHeadersMiddleware(app, trusted=TRUSTED), client=(peer, 40000)
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://bank") as client:
        assert (await client.get("/", headers=headers)).status_code == 204
    return seen


async def test_the_scheme_comes_from_a_trusted_proxy_only() -> None:
    headers = {"X-Forwarded-For": "203.0.113.1", "X-Forwarded-Proto": "https"}
    assert await _seen_by_the_app(LB, headers) == {"client": "203.0.113.1", "scheme": "https"}
    assert await _seen_by_the_app("198.51.100.7", headers) == {
        "client": "198.51.100.7",
        "scheme": "http",
    }
    # One proto per hop: the one written by the proxy the client reached.
    chain = {"X-Forwarded-For": "203.0.113.1, 10.0.0.7", "X-Forwarded-Proto": "https, http"}
    assert await _seen_by_the_app(LB, chain) == {"client": "203.0.113.1", "scheme": "https"}
    # A value that is not a scheme is ignored.
    odd = {"X-Forwarded-For": "203.0.113.1", "X-Forwarded-Proto": "gopher"}
    assert await _seen_by_the_app(LB, odd) == {"client": "203.0.113.1", "scheme": "http"}


async def test_every_response_names_the_instance(api: ClientFactory) -> None:
    async with api("198.51.100.7", instance_name="api-7") as client:
        assert (await client.get("/health")).headers["X-Served-By"] == "api-7"
        assert (await client.get("/api/v1/users/me")).headers["X-Served-By"] == "api-7"
    async with api("198.51.100.7") as client:
        assert "X-Served-By" not in (await client.get("/health")).headers


@pytest.mark.parametrize(
    ("peer", "chain", "expected"),
    [
        ("198.51.100.7", ["203.0.113.1"], ("198.51.100.7", None)),  # untrusted peer
        (LB, [], (LB, None)),  # no header: the proxy itself
        (LB, ["203.0.113.1"], ("203.0.113.1", 0)),
        (LB, ["192.0.2.99", "203.0.113.1", "10.0.0.7"], ("203.0.113.1", 1)),
        (LB, ["10.0.0.9", "10.0.0.7"], ("10.0.0.9", 0)),  # all trusted: the left-most
        (LB, ["203.0.113.1", "not-an-address"], (LB, None)),  # garbage: the hop that sent it
        (LB, ["203.0.113.1:5678"], ("203.0.113.1", 0)),
        (LB, ["[2001:db8::1]:443"], ("2001:db8::1", 0)),
        ("::ffff:10.0.0.5", ["203.0.113.1"], ("203.0.113.1", 0)),  # IPv4-mapped peer
        ("fd00::1", ["2001:db8::2"], ("2001:db8::2", 0)),
    ],
)
def test_forwarded_client(peer: str, chain: list[str], expected: tuple[str, int | None]) -> None:
    assert forwarded_client(peer, chain, TRUSTED) == expected


def test_a_trusted_proxy_must_be_a_network() -> None:
    with pytest.raises(ValueError, match="TRUSTED_PROXIES: 'nginx' is not a network"):
        make_settings("sqlite+aiosqlite:///x.db", trusted_proxies=["nginx"])
