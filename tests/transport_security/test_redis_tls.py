"""Redis over TLS with a password (scripts/services/redis-tls.sh: TLS port only, requirepass),
through the service's own client (``cache.redis_connection.RedisConnection``) and the
balance cache built on it."""

from __future__ import annotations

import uuid
from decimal import Decimal

import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, ConnectionError, ResponseError

from banking.cache.redis_connection import RedisConnection
from banking.observability.metrics import Metrics


def connection(url: str) -> RedisConnection:
    return RedisConnection(url, metrics=Metrics(), socket_timeout_seconds=2.0, retry_seconds=0.1)


def tls_url(redis_tls: dict[str, str], ca: str, *, password: bool = True) -> str:
    url = redis_tls["BANKING_REDIS_TLS_URL"]
    if not password:
        url = "rediss://" + url.split("@", 1)[1]
    return f"{url}?ssl_ca_certs={ca}"


async def test_tls_with_the_password_stores_and_reads(
    redis_tls: dict[str, str], certs: dict[str, str]
) -> None:
    redis = connection(tls_url(redis_tls, certs["ca"]))
    key = f"tls-test:{uuid.uuid4().hex}"
    try:
        await redis.call("set", lambda client: client.set(key, "12.34", ex=30))
        value = await redis.call("get", lambda client: client.get(key))
        assert isinstance(value, bytes)
        assert Decimal(value.decode()) == Decimal("12.34")
        assert await redis.probe()
        ports = await redis.call("config", lambda client: client.config_get("*port"))
        assert ports["port"] == "0", "the server must have no plaintext port"
        assert ports["tls-port"] != "0"
    finally:
        await redis.close()


async def test_tls_without_the_password_is_refused(
    redis_tls: dict[str, str], certs: dict[str, str]
) -> None:
    redis = connection(tls_url(redis_tls, certs["ca"], password=False))
    try:
        assert not await redis.probe()
    finally:
        await redis.close()
    client = aioredis.Redis.from_url(tls_url(redis_tls, certs["ca"], password=False))
    try:
        await client.set("tls-test:anonymous", "1")
    except (AuthenticationError, ResponseError) as error:
        assert "auth" in str(error).lower()
    else:
        raise AssertionError("an unauthenticated client could write")
    finally:
        await client.aclose()


async def test_a_wrong_password_is_refused(
    redis_tls: dict[str, str], certs: dict[str, str]
) -> None:
    url = "rediss://:not-the-password@" + tls_url(redis_tls, certs["ca"]).split("@", 1)[1]
    client = aioredis.Redis.from_url(url)
    try:
        await client.ping()
    except (AuthenticationError, ResponseError) as error:
        assert "password" in str(error).lower() or "auth" in str(error).lower()
        assert "not-the-password" not in str(error)
    else:
        raise AssertionError("a wrong password was accepted")
    finally:
        await client.aclose()


async def test_a_server_the_ca_did_not_sign_is_refused(
    redis_tls: dict[str, str], certs: dict[str, str]
) -> None:
    client = aioredis.Redis.from_url(tls_url(redis_tls, certs["other_ca"]), socket_timeout=2)
    try:
        await client.ping()
    except ConnectionError as error:
        assert "CERTIFICATE_VERIFY_FAILED" in str(error)
    else:
        raise AssertionError("a server certificate from another CA was accepted")
    finally:
        await client.aclose()


async def test_plaintext_to_the_tls_port_fails(redis_tls: dict[str, str]) -> None:
    url = redis_tls["BANKING_REDIS_TLS_URL"].replace("rediss://", "redis://", 1)
    redis = connection(url)
    try:
        assert not await redis.probe()
    finally:
        await redis.close()
