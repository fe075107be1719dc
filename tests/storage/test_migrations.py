"""Alembic migrations run forward and back on both databases and match the table definitions;
a database behind this version is refused at start and reported by /ready."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from banking.bootstrap import build_container
from banking.rest.app import create_app
from banking.storage.migrate import (
    database_schema_revision,
    downgrade,
    needed_revisions,
    upgrade,
)
from banking.storage.tables import metadata
from tests.conftest import _admin_execute, _with_database, make_settings
from tests.support.processes import free_port


async def _table_names(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    finally:
        await engine.dispose()
    return names - {"alembic_version"}


def test_downgrade_to_base_and_upgrade_again(database_url: str) -> None:
    assert asyncio.run(_table_names(database_url)) == set(metadata.tables)
    downgrade(database_url, "base")
    assert asyncio.run(_table_names(database_url)) == set()
    upgrade(database_url)
    assert asyncio.run(_table_names(database_url)) == set(metadata.tables)


# --- a database behind this version --------------------------------------------------------

NEEDED = needed_revisions()


def _assert_says_what_to_do(text: str) -> None:
    assert "(none: never migrated)" in text, text
    assert f"this version needs {', '.join(NEEDED)}" in text, text
    assert "run `banking migrate`" in text, text
    assert "Traceback" not in text, text


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "banking.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def _env(**values: str) -> dict[str, str]:
    unset = {"DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "BANKING_ENV", "DATA_DIR"}
    env = {key: value for key, value in os.environ.items() if key not in unset}
    return {**env, "LOG_LEVEL": "WARNING", **values}


@pytest.fixture
def empty_postgres(pg_template: tuple[str, str]) -> Iterator[str]:
    """A fresh PostgreSQL database that no migration ever touched."""
    url, admin = pg_template
    name = f"t_empty_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin_execute(admin, f'CREATE DATABASE "{name}"'))
    yield _with_database(url, name)
    asyncio.run(_admin_execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.postgres
@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["serve", "--port", "{port}", "--grpc-port", "{grpc_port}"], id="serve"),
        pytest.param(["grpc", "--port", "{grpc_port}"], id="grpc"),
        pytest.param(["worker", "relay"], id="worker"),
    ],
)
def test_an_unmigrated_postgres_is_refused_with_what_to_run(
    empty_postgres: str, command: list[str]
) -> None:
    ports = {"port": str(free_port()), "grpc_port": str(free_port())}
    env = _env(
        DATABASE_URL=empty_postgres,
        # The worker needs a broker configured; it is refused before it connects to one.
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
        JWT_SECRET="migration-test-secret-that-is-long-enough-01",
    )
    done = _cli([part.format(**ports) for part in command], env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "refusing to start: the database is at revision" in done.stderr
    _assert_says_what_to_do(done.stderr)
    assert asyncio.run(_table_names(empty_postgres)) == set()  # it changed nothing


def test_an_unmigrated_sqlite_with_no_migrate_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = _env(DATA_DIR=str(data_dir))
    done = _cli(
        ["serve", "--no-migrate", "--port", str(free_port()), "--grpc-port", str(free_port())],
        env,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    _assert_says_what_to_do(done.stderr)
    assert not (data_dir / "banking.db").exists()  # nothing created, no admin printed
    assert "created user 'admin'" not in done.stderr


async def test_ready_is_503_while_the_schema_is_behind(database_url: str) -> None:
    await asyncio.to_thread(downgrade, database_url, "base")
    container = build_container(make_settings(database_url))
    transport = httpx.ASGITransport(app=create_app(container))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/health")).status_code == 200
            behind = await client.get("/ready")
            assert behind.status_code == 503, behind.text
            body = behind.json()
            assert body["status"] == "unavailable"
            assert body["checks"] == {"database": "behind"}
            _assert_says_what_to_do(body["details"]["database"])
            await asyncio.to_thread(upgrade, database_url)
            ready = await client.get("/ready")
            assert ready.status_code == 200, ready.text
            assert ready.json() == {"status": "ready", "checks": {"database": "ok"}}
    finally:
        await container.close()


def test_a_revision_this_version_does_not_know_is_not_behind(tmp_path: Path) -> None:
    """Migrated by a newer version: this one still starts (a rollback keeps working), and
    says so."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'banking.db'}"
    upgrade(url)
    with sqlite3.connect(tmp_path / "banking.db") as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'f00dfeed'")
    revision = database_schema_revision(url)
    assert revision.current == ("f00dfeed",) and revision.needed == NEEDED
    assert not revision.is_behind and revision.is_unknown
    assert "which this version does not know" in revision.describe()
    assert database_schema_revision(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}").is_behind
