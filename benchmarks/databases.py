"""The benchmark's own databases on the PostgreSQL server named by ``BANKING_PG_ADMIN_DSN``:
dropped and created fresh for a run, dropped at its end."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from benchmarks.accounting import postmaster_pid_of
from benchmarks.config import BenchUnusable, say


@dataclass(frozen=True)
class PostgresFacts:
    """What a run records about the server."""

    version: str
    postmaster_pid: int | None  # None when the server is not a process on this machine


@contextlib.asynccontextmanager
async def admin_connection(admin_url: URL) -> AsyncIterator[AsyncConnection]:
    """An autocommit connection to the admin database (CREATE/DROP DATABASE need one);
    ``BenchUnusable`` when the server does not answer."""
    url = admin_url.set(drivername="postgresql+asyncpg")
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        try:
            connection = await engine.connect()
        except (OSError, DBAPIError) as error:
            raise BenchUnusable(
                f"cannot connect to PostgreSQL at {admin_url.host}:{admin_url.port} "
                f"({type(error).__name__}: {str(error).splitlines()[0]}); is it running? "
                'eval "$(bash scripts/services/postgres.sh start)"'
            ) from error
        try:
            yield connection
        finally:
            await connection.close()
    finally:
        await engine.dispose()


async def recreate_databases(admin_url: URL, names: Sequence[str]) -> PostgresFacts:
    """Drop (if they exist) and create the databases ``names``; the server's version and
    postmaster."""
    async with admin_connection(admin_url) as connection:
        for name in names:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        version = await connection.scalar(text("SHOW server_version"))
        backend_pid = await connection.scalar(text("SELECT pg_backend_pid()"))
        return PostgresFacts(str(version), postmaster_pid_of(int(backend_pid)))


async def drop_databases(admin_url: URL, names: Sequence[str]) -> None:
    """Drop the databases ``names``; a failure is reported, not raised (the run is ending)."""
    try:
        async with admin_connection(admin_url) as connection:
            for name in names:
                await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    except BenchUnusable as error:
        say(f"bench: could not drop the bench databases: {error}")
