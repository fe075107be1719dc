"""PostgreSQL with ``sslmode=verify-full`` against the test CA, on a server that accepts TLS only
(scripts/services/postgres-tls.sh): the service's own engine (``storage.database.create_engine``)
is used, so the URL an operator writes is the one under test."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from banking.config import Settings
from banking.storage.database import create_engine
from banking.storage.tls import DatabaseTlsError, asyncpg_tls


def tls_url(pg_tls: dict[str, str], *, host: str = "127.0.0.1", query: str) -> str:
    base = pg_tls["BANKING_PG_TLS_URL"].split("?", 1)[0].replace("@127.0.0.1:", f"@{host}:")
    return f"{base}?{query}"


async def session_tls(url: str) -> tuple[bool, str]:
    """Whether this connection is encrypted, and with which protocol, as the server says."""
    engine = create_engine(Settings(database_url=url))
    try:
        async with engine.connect() as connection:
            row = (
                await connection.execute(
                    text("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                )
            ).one()
    finally:
        await engine.dispose()
    return bool(row.ssl), str(row.version)


async def refusal(url: str) -> str:
    """The error connecting with ``url`` raises (the test fails if it connects)."""
    engine = create_engine(Settings(database_url=url))
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    finally:
        await engine.dispose()
    raise AssertionError(f"connected with {url!r}, but it should have been refused")


async def test_verify_full_with_the_test_ca_connects_encrypted(
    pg_tls: dict[str, str], certs: dict[str, str]
) -> None:
    encrypted, version = await session_tls(
        tls_url(pg_tls, query=f"sslmode=verify-full&sslrootcert={certs['ca']}")
    )
    assert encrypted
    assert version in {"TLSv1.2", "TLSv1.3"}


async def test_verify_full_refuses_a_server_the_ca_did_not_sign(
    pg_tls: dict[str, str], certs: dict[str, str]
) -> None:
    error = await refusal(
        tls_url(pg_tls, query=f"sslmode=verify-full&sslrootcert={certs['other_ca']}")
    )
    assert "CERTIFICATE_VERIFY_FAILED" in error


async def test_verify_full_refuses_a_host_name_the_certificate_does_not_name(
    pg_tls: dict[str, str], certs: dict[str, str]
) -> None:
    # "127.1" reaches 127.0.0.1 but is not in the certificate (DNS:localhost, IP:127.0.0.1).
    error = await refusal(
        tls_url(pg_tls, host="127.1", query=f"sslmode=verify-full&sslrootcert={certs['ca']}")
    )
    assert "CERTIFICATE_VERIFY_FAILED" in error
    assert "mismatch" in error


async def test_verify_ca_accepts_the_chain_whatever_the_host_name(
    pg_tls: dict[str, str], certs: dict[str, str]
) -> None:
    encrypted, _ = await session_tls(
        tls_url(pg_tls, host="127.1", query=f"sslmode=verify-ca&sslrootcert={certs['ca']}")
    )
    assert encrypted


async def test_the_server_refuses_a_connection_without_tls(pg_tls: dict[str, str]) -> None:
    error = await refusal(tls_url(pg_tls, query="sslmode=disable"))
    assert "no encryption" in error


async def test_a_url_without_tls_parameters_is_left_as_it_is() -> None:
    url = "postgresql+asyncpg://banking:secret@db.example:5432/banking"
    assert asyncpg_tls(url) == (url, {})


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("sslmode=verify-everything", "sslmode must be one of"),
        ("sslmode=require&sslrootcert=/ca.crt", "does not verify the server"),
        ("sslmode=verify-full&ssl=require", "both ssl= and sslmode="),
        ("sslmode=verify-full&sslrootcert=/nonexistent/ca.crt", "cannot load the database TLS"),
    ],
)
def test_unusable_tls_parameters_are_refused_with_a_clear_error(query: str, message: str) -> None:
    url = f"postgresql+asyncpg://banking:secret@db.example:5432/banking?{query}"
    with pytest.raises(DatabaseTlsError, match=message) as raised:
        create_engine(Settings(database_url=url))
    assert "secret" not in str(raised.value)
