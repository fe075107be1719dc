"""``banking audit gaps`` names an audit record a tamperer deleted (bypassing the triggers,
as only the database's owner can), and exits 0 when the trail is complete."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys

import asyncpg

from banking.domain.roles import Role
from banking.workers.runtime import EmbeddedEvents
from tests.audit.conftest import audit_rows, outbox_rows, settle
from tests.conftest import Bank


def _gaps(database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    return subprocess.run(
        [sys.executable, "-m", "banking.cli", "audit", "gaps", "--grace-seconds", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


async def _tamper(database_url: str, audit_id: int) -> None:
    """Delete one audit row the way its owner could: with the triggers out of the way."""
    if database_url.startswith("sqlite"):

        def delete() -> None:
            path = database_url.split(":///", 1)[1]
            with sqlite3.connect(path, timeout=30) as connection:
                connection.execute("DROP TRIGGER audit_records_no_delete")
                connection.execute("DELETE FROM audit_records WHERE audit_id = ?", (audit_id,))

        # In a thread: a write transaction of the app's own tasks (the embedded consumers) may
        # hold SQLite's lock, and blocking the event loop would keep it from ever committing.
        await asyncio.to_thread(delete)
        return
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(dsn)
    try:
        async with connection.transaction():
            await connection.execute("ALTER TABLE audit_records DISABLE TRIGGER USER")
            await connection.execute("DELETE FROM audit_records WHERE audit_id = $1", audit_id)
            await connection.execute("ALTER TABLE audit_records ENABLE TRIGGER USER")
    finally:
        await connection.close()


async def test_gaps_names_a_deleted_record_and_passes_when_complete(
    bank: Bank, staff: dict[str, str], events: EmbeddedEvents, database_url: str
) -> None:
    customer_id, _ = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, staff, funded="25.00")
    await settle(bank)

    complete = _gaps(database_url)
    assert complete.returncode == 0, complete.stdout + complete.stderr
    assert complete.stdout == ""

    published = {row.event_id: row for row in await outbox_rows(bank)}
    (victim,) = [
        row
        for row in await audit_rows(bank)
        if row.event_type == "transaction.completed" and str(row.account_id) == account_id
    ]
    await _tamper(database_url, victim.audit_id)

    found = _gaps(database_url)
    assert found.returncode == 1, found.stdout + found.stderr
    (line,) = found.stdout.splitlines()
    gap = json.loads(line)
    assert gap["event_id"] == str(victim.event_id)
    assert gap["topic"] == victim.topic
    assert gap["event_type"] == "transaction.completed"
    assert gap["created_at"] == published[victim.event_id].created_at.isoformat()
