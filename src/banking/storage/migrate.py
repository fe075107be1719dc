"""Run the Alembic migrations of the package against a database URL, and tell whether a
database is at the revision this version of the code needs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from banking.storage.tls import asyncpg_tls

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url)
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate the database to ``revision`` (blocking; call from a thread inside event loops)."""
    if database_url.startswith("sqlite") and ":///" in database_url:
        path = database_url.split(":///", 1)[1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


@cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(""))


def needed_revisions() -> tuple[str, ...]:
    """The head revisions of this version's migrations: what the code needs."""
    return tuple(sorted(_scripts().get_heads()))


@cache
def _known_revisions() -> frozenset[str]:
    return frozenset(script.revision for script in _scripts().walk_revisions())


@dataclass(frozen=True, slots=True)
class SchemaRevision:
    """Where a database's schema is, against what this version of the code needs."""

    current: tuple[str, ...]  # empty: never migrated (no alembic_version, or no row)
    needed: tuple[str, ...]

    @property
    def is_current(self) -> bool:
        return self.current == self.needed

    @property
    def is_unknown(self) -> bool:
        """At a revision this version does not know: migrated by a newer version. The code
        still starts (migrations add before they remove, so a rollback keeps working)."""
        return not _known_revisions().issuperset(self.current)

    @property
    def is_behind(self) -> bool:
        """Older than this version needs: the tables the code uses may not exist yet."""
        return not self.is_current and not self.is_unknown

    def describe(self) -> str:
        """The message for an operator: where the database is, what is needed, what to do."""
        current = ", ".join(self.current) or "(none: never migrated)"
        needed = ", ".join(self.needed)
        if self.is_current:
            return f"the database is at revision {current}, the one this version needs"
        if self.is_unknown:
            return (
                f"the database is at revision {current}, which this version does not know "
                f"(a newer version migrated it); this version needs {needed}"
            )
        return (
            f"the database is at revision {current}; this version needs {needed}: "
            "run `banking migrate`"
        )


def _revision_of(connection: Connection) -> SchemaRevision:
    current = MigrationContext.configure(connection).get_current_heads()
    return SchemaRevision(tuple(sorted(current)), needed_revisions())


async def schema_revision(connection: AsyncConnection) -> SchemaRevision:
    """The schema revision of the database behind ``connection`` (two small reads)."""
    return await connection.run_sync(_revision_of)


def database_schema_revision(database_url: str) -> SchemaRevision:
    """The schema revision of the database at ``database_url``, on a short-lived engine
    (blocking, like ``upgrade``). A SQLite file that does not exist yet is a database never
    migrated (and is not created)."""
    if database_url.startswith("sqlite") and ":///" in database_url:
        path = database_url.split(":///", 1)[1]
        if path and path != ":memory:" and not Path(path).exists():
            return SchemaRevision((), needed_revisions())

    async def read() -> SchemaRevision:
        url, tls_connect_args = asyncpg_tls(database_url)
        engine = create_async_engine(url, connect_args=tls_connect_args)
        try:
            async with engine.connect() as connection:
                return await schema_revision(connection)
        finally:
            await engine.dispose()

    return asyncio.run(read())
