"""Alembic migrations run forward and back on both databases and match the table definitions."""

from __future__ import annotations

import asyncio

from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from banking.storage.migrate import downgrade, upgrade
from banking.storage.tables import metadata


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
