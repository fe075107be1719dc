"""The tamper-evident journal (docs/audit.md "Tamper-evident journal"): movements' journal rows
are sealed into one hash chain after commit; `banking audit verify` recomputes it and names the
first row that a tamperer changed, deleted or re-hashed, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from prometheus_client import generate_latest
from sqlalchemy import select

from banking.audit import chain_store
from banking.audit.chain import (
    CONTENT_CHANGED,
    GENESIS_HASH,
    HASH_CHANGED,
    HEAD_MISMATCH,
    SEQ_GAP,
    JournalSealer,
    JournalVerifier,
    canonical_content,
    chain_hash,
    verify_chain,
)
from banking.domain.errors import InvariantViolated
from banking.domain.roles import Role
from banking.events import topics
from banking.events.relay import OutboxRelay
from banking.events.serialization import EventFormat
from banking.events.transport import InProcessBus, Message
from banking.observability.metrics import Metrics
from banking.storage.tables import journal_chain_head, transaction_logs
from banking.workers.runtime import EmbeddedEvents
from tests.audit.conftest import outbox_rows, wait_for
from tests.conftest import Bank

USD = {"currency": "USD"}


# --- helpers ---------------------------------------------------------------------------------


async def _movements(bank: Bank, staff: dict[str, str]) -> tuple[str, str]:
    """A credit, a debit, a transfer and a declined debit: journal rows of every kind."""
    owner_id, owner = await bank.user(Role.CUSTOMER)
    source = await bank.account(owner_id, staff, funded="100.00")
    destination = await bank.account(owner_id, staff)
    for path, body in (
        ("debit", {"account_id": source, "amount": "10.00", **USD}),
        (
            "transfer",
            {
                "source_account_id": source,
                "destination_account_id": destination,
                "amount": "20.00",
                **USD,
            },
        ),
        ("debit", {"account_id": source, "amount": "9999.00", **USD}),  # declined: failed leg
    ):
        response = await bank.client.post(f"/api/v1/transactions/{path}", json=body, headers=owner)
        assert response.status_code in (200, 422), response.text
    return source, destination


async def _journal(bank: Bank) -> list[Any]:
    async with bank.container.database.read() as connection:
        statement = select(transaction_logs).order_by(
            transaction_logs.c.chain_seq, transaction_logs.c.created_at
        )
        return list((await connection.execute(statement)).all())


async def _head(bank: Bank) -> Any:
    async with bank.container.database.read() as connection:
        return (await connection.execute(select(journal_chain_head))).one()


async def _tamper(database_url: str, statement: str) -> None:
    """Run one SQL statement on the database directly (not through the service)."""
    if database_url.startswith("sqlite"):

        def run() -> None:
            path = database_url.split(":///", 1)[1]
            with sqlite3.connect(path, timeout=30) as connection:
                assert connection.execute(statement).rowcount == 1

        # In a thread: the app's own tasks may hold SQLite's write lock for a moment.
        await asyncio.to_thread(run)
        return
    connection = await asyncpg.connect(
        database_url.replace("postgresql+asyncpg://", "postgresql://")
    )
    try:
        assert await connection.execute(statement) in ("UPDATE 1", "DELETE 1")
    finally:
        await connection.close()


def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    return subprocess.run(
        [sys.executable, "-m", "banking.cli", "audit", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )


async def _sealed(bank: Bank, staff: dict[str, str]) -> list[Any]:
    """Movements, sealed by one `banking audit seal`; the journal in chain order."""
    await _movements(bank, staff)
    sealed = await JournalSealer(bank.container.database, batch_size=3).seal_all()
    journal = await _journal(bank)
    assert sealed == len(journal) == 5  # credit, debit, two transfer legs, declined
    return journal


async def _state(bank: Bank) -> dict[str, Any]:
    """What a verification must leave untouched: balances, counts, the journal, the head."""
    journal = [tuple(row) for row in await _journal(bank)]
    return {**await bank.snapshot(), "journal": journal, "head": tuple(await _head(bank))}


# --- the canonical form ----------------------------------------------------------------------


class _Row:
    log_id = uuid.UUID("00000000-0000-4000-8000-000000000001")
    transaction_id = uuid.UUID("00000000-0000-4000-8000-000000000002")
    event_type = "completed"
    metadata = {"trace_id": "t", "amount": "10.00", "nested": {"b": 1, "a": "é"}}
    created_at = datetime(2026, 12, 2, 15, 4, 5, 123456, tzinfo=UTC)
    created_by = "teller-1"


def test_canonical_content_is_sorted_compact_json_with_utc_microseconds() -> None:
    assert canonical_content(_Row()) == (
        '{"created_at":"2026-12-02T15:04:05.123456Z","created_by":"teller-1",'
        '"event_type":"completed","log_id":"00000000-0000-4000-8000-000000000001",'
        '"metadata":{"amount":"10.00","nested":{"a":"é","b":1},"trace_id":"t"},'
        '"transaction_id":"00000000-0000-4000-8000-000000000002"}'
    )
    # sha256 of the previous hash, a newline and the canonical content (UTF-8).
    assert chain_hash(GENESIS_HASH, _Row()) == (
        __import__("hashlib")
        .sha256(f"{GENESIS_HASH}\n{canonical_content(_Row())}".encode())
        .hexdigest()
    )
    assert chain_hash(GENESIS_HASH, _Row()) != chain_hash("1" * 64, _Row())


# --- sealing and verifying -------------------------------------------------------------------


async def test_movements_are_sealed_once_in_order_and_the_chain_verifies(
    bank: Bank, staff: dict[str, str], database_url: str
) -> None:
    await _movements(bank, staff)
    assert all(row.chain_seq is None for row in await _journal(bank))  # the money path: unsealed

    sealed = _cli(database_url, "seal")
    assert sealed.returncode == 0, sealed.stderr
    journal = await _journal(bank)
    assert f"{len(journal)} journal row(s) sealed" in sealed.stderr
    assert [row.chain_seq for row in journal] == list(range(1, len(journal) + 1))
    previous = GENESIS_HASH
    for row in journal:
        assert row.chain_hash == chain_hash(previous, row)
        previous = row.chain_hash
    head = await _head(bank)
    assert (head.last_seq, head.last_hash) == (len(journal), previous)

    outcome = await verify_chain(bank.container.database, page_rows=2)
    assert outcome.ok and outcome.rows_verified == len(journal)
    clean = _cli(database_url, "verify")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout == ""
    assert f"journal chain intact: {len(journal)} row(s)" in clean.stderr

    # A second pass finds nothing to seal and changes nothing.
    assert await JournalSealer(bank.container.database).seal_all() == 0
    assert await _journal(bank) == journal


async def test_an_edited_row_is_named_by_position_and_log_id(
    bank: Bank, staff: dict[str, str], database_url: str
) -> None:
    journal = await _sealed(bank, staff)
    victim = journal[3]
    await _tamper(
        database_url,
        'UPDATE transaction_logs SET metadata = \'{"amount": "99999.00"}\' '
        f"WHERE chain_seq = {victim.chain_seq}",
    )
    before = await _state(bank)

    outcome = await verify_chain(bank.container.database, page_rows=2)
    assert outcome.broken is not None
    assert (outcome.broken.kind, outcome.broken.seq) == (CONTENT_CHANGED, victim.chain_seq)
    assert outcome.broken.log_id == victim.log_id
    assert outcome.broken.transaction_id == victim.transaction_id
    assert outcome.verified_seq == victim.chain_seq - 1

    found = _cli(database_url, "verify")
    assert found.returncode == 1, found.stdout + found.stderr
    (line,) = found.stdout.splitlines()
    named = json.loads(line)
    assert named["kind"] == CONTENT_CHANGED
    assert named["seq"] == victim.chain_seq
    assert named["log_id"] == str(victim.log_id)
    assert named["transaction_id"] == str(victim.transaction_id)
    assert f"BROKEN at position {victim.chain_seq}" in found.stderr
    # Verifying is a read: no balance, row, event, journal row or head changed.
    assert await _state(bank) == before

    # From a later position the walk trusts the row before and finds the rest intact.
    later = _cli(database_url, "verify", "--from-seq", str(victim.chain_seq + 1))
    assert later.returncode == 0, later.stdout + later.stderr


async def test_a_deleted_row_is_named_as_a_gap(
    bank: Bank, staff: dict[str, str], database_url: str
) -> None:
    journal = await _sealed(bank, staff)
    victim = journal[2]
    await _tamper(
        database_url, f"DELETE FROM transaction_logs WHERE chain_seq = {victim.chain_seq}"
    )
    before = await _state(bank)

    found = _cli(database_url, "verify")
    assert found.returncode == 1, found.stdout + found.stderr
    named = json.loads(found.stdout)
    assert (named["kind"], named["seq"]) == (SEQ_GAP, victim.chain_seq)
    assert named["log_id"] is None  # the row is gone: the gap and the row after it are named
    assert (named["next_seq"], named["next_log_id"]) == (
        victim.chain_seq + 1,
        str(journal[3].log_id),
    )
    assert await _state(bank) == before


async def test_a_deleted_last_row_is_a_gap_before_the_head(
    bank: Bank, staff: dict[str, str], database_url: str
) -> None:
    journal = await _sealed(bank, staff)
    last = journal[-1]
    await _tamper(database_url, f"DELETE FROM transaction_logs WHERE chain_seq = {last.chain_seq}")

    outcome = await verify_chain(bank.container.database)
    assert outcome.broken is not None
    assert (outcome.broken.kind, outcome.broken.seq) == (SEQ_GAP, last.chain_seq)


async def test_an_edited_hash_is_named(
    bank: Bank, staff: dict[str, str], database_url: str
) -> None:
    journal = await _sealed(bank, staff)
    victim = journal[1]
    await _tamper(
        database_url,
        f"UPDATE transaction_logs SET chain_hash = '{'f' * 64}' "
        f"WHERE chain_seq = {victim.chain_seq}",
    )
    before = await _state(bank)

    found = _cli(database_url, "verify")
    assert found.returncode == 1, found.stdout + found.stderr
    named = json.loads(found.stdout)
    assert (named["kind"], named["seq"]) == (HASH_CHANGED, victim.chain_seq)
    assert named["log_id"] == str(victim.log_id)
    assert await _state(bank) == before


async def test_an_edited_or_moved_back_head_is_named(
    bank: Bank, staff: dict[str, str], database_url: str
) -> None:
    await _sealed(bank, staff)
    await _tamper(
        database_url, f"UPDATE journal_chain_head SET last_hash = '{'a' * 64}' WHERE id = 1"
    )
    outcome = await verify_chain(bank.container.database)
    assert outcome.broken is not None and outcome.broken.kind == HEAD_MISMATCH

    # The head moved back (hiding the last row): the row past it is named.
    journal = await _journal(bank)
    previous = journal[-2]
    await _tamper(
        database_url,
        f"UPDATE journal_chain_head SET last_seq = {previous.chain_seq}, "
        f"last_hash = '{previous.chain_hash}' WHERE id = 1",
    )
    moved = _cli(database_url, "verify")
    assert moved.returncode == 1, moved.stdout + moved.stderr
    named = json.loads(moved.stdout)
    assert (named["kind"], named["seq"]) == (HEAD_MISMATCH, journal[-1].chain_seq)
    assert named["log_id"] == str(journal[-1].log_id)


async def test_unsealed_rows_are_a_warning_not_a_break(
    bank: Bank, staff: dict[str, str], database_url: str
) -> None:
    await _movements(bank, staff)
    count = len(await _journal(bank))
    found = _cli(database_url, "verify", "--unsealed-grace-seconds", "0")
    assert found.returncode == 0, found.stdout + found.stderr
    assert f"warning: {count} journal row(s) unsealed" in found.stderr


async def test_concurrent_movements_while_two_sealers_run_are_each_sealed_once(
    bank: Bank, staff: dict[str, str]
) -> None:
    owner_id, owner = await bank.user(Role.CUSTOMER)
    accounts = [await bank.account(owner_id, staff, funded="1000.00") for _ in range(4)]
    database = bank.container.database
    sealers = [JournalSealer(database, batch_size=5), JournalSealer(database, batch_size=7)]
    moving = True

    async def seal(sealer: JournalSealer) -> None:
        while moving:
            await sealer.seal_batch()
            await asyncio.sleep(0)

    async def transfer(i: int) -> None:
        body = {
            "source_account_id": accounts[i % 4],
            "destination_account_id": accounts[(i + 1) % 4],
            "amount": "1.00",
            **USD,
        }
        response = await bank.client.post("/api/v1/transactions/transfer", json=body, headers=owner)
        assert response.status_code == 200, response.text

    sealing = [asyncio.create_task(seal(sealer)) for sealer in sealers]
    try:
        await asyncio.gather(*(transfer(i) for i in range(60)))
    finally:
        moving = False
        await asyncio.gather(*sealing)
    await sealers[0].seal_all()

    journal = await _journal(bank)
    assert len(journal) == 4 + 60 * 2  # four credits, two legs per transfer
    assert [row.chain_seq for row in journal] == list(range(1, len(journal) + 1))
    outcome = await verify_chain(database, page_rows=16)
    assert outcome.ok, outcome.broken
    assert outcome.verified_seq == len(journal)


async def test_the_embedded_relay_seals_movements_after_commit(
    bank: Bank, staff: dict[str, str], events: EmbeddedEvents
) -> None:
    await _movements(bank, staff)

    async def all_sealed() -> bool:
        journal = await _journal(bank)
        return bool(journal) and all(row.chain_seq is not None for row in journal)

    await wait_for(all_sealed, timeout_seconds=60, what="the relay to seal the journal")
    outcome = await verify_chain(bank.container.database)
    assert outcome.ok and outcome.verified_seq == len(await _journal(bank))


# --- the alert's metric ----------------------------------------------------------------------


def _exported(metrics: Metrics) -> dict[str, float]:
    values = {}
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith("banking_journal_") and " " in line:
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


async def test_the_broken_metric_goes_to_1_on_a_broken_chain_and_back_when_repaired(
    bank: Bank, staff: dict[str, str], database_url: str
) -> None:
    journal = await _sealed(bank, staff)
    metrics = Metrics()
    verifier = JournalVerifier(bank.container.database, interval_seconds=300, observer=metrics)
    assert (await verifier.verify_once()).ok
    exported = _exported(metrics)
    assert exported["banking_journal_chain_broken"] == 0
    assert exported["banking_journal_chain_verified_seq"] == len(journal)
    assert exported['banking_journal_chain_verifications_total{result="clean"}'] == 1

    # New movements sealed later: the next run checks only those, from the last verified row.
    await _movements(bank, staff)
    await JournalSealer(bank.container.database).seal_all()
    longer = len(await _journal(bank))
    outcome = await verifier.verify_once()
    assert outcome.ok and outcome.from_seq == len(journal) + 1
    assert _exported(metrics)["banking_journal_chain_verified_seq"] == longer

    # The last verified row's hash rewritten: the incremental run sees it.
    await _tamper(
        database_url,
        f"UPDATE transaction_logs SET chain_hash = '{'e' * 64}' WHERE chain_seq = {longer}",
    )
    broken = await verifier.verify_once()
    assert broken.broken is not None and broken.broken.seq == longer
    exported = _exported(metrics)
    assert exported["banking_journal_chain_broken"] == 1
    assert exported['banking_journal_chain_verifications_total{result="broken"}'] == 1

    # Restored (from a backup, say): the next run is a full one and clears the alert.
    original = await _sealed_hash_of(bank, longer, journal_rows=await _journal(bank))
    await _tamper(
        database_url,
        f"UPDATE transaction_logs SET chain_hash = '{original}' WHERE chain_seq = {longer}",
    )
    repaired = await verifier.verify_once()
    assert repaired.ok and repaired.from_seq == 1
    assert _exported(metrics)["banking_journal_chain_broken"] == 0


async def _sealed_hash_of(bank: Bank, seq: int, *, journal_rows: list[Any]) -> str:
    """The hash row ``seq`` was sealed with: recomputed over the intact rows before it."""
    previous = GENESIS_HASH
    for row in journal_rows:
        computed = chain_hash(previous, row)
        if row.chain_seq == seq:
            return computed
        previous = row.chain_hash
    raise AssertionError(f"no row at {seq}")


# --- failures of the sealer ------------------------------------------------------------------


async def test_sealing_a_row_twice_is_refused_and_changes_nothing(
    bank: Bank, staff: dict[str, str]
) -> None:
    journal = await _sealed(bank, staff)
    before = await _state(bank)
    again = [chain_store.Sealed(journal[0].log_id, len(journal) + 1, "b" * 64)]
    head = chain_store.Head(len(journal) + 1, "b" * 64, None)

    async def reseal(connection: Any) -> None:
        await chain_store.seal(connection, again, head, datetime.now(UTC))

    with pytest.raises(InvariantViolated, match="wrote 0"):
        await bank.container.database.run_in_transaction(reseal)
    assert await _state(bank) == before  # rolled back: the head did not move
    assert (await verify_chain(bank.container.database)).ok


class _BrokenSealer:
    batch_size = 10

    def __init__(self) -> None:
        self.calls = 0

    async def seal_batch(self) -> int:
        self.calls += 1
        raise ConnectionError("database down for the sealer")


async def test_a_failing_sealer_never_stops_the_relay_publishing(
    bank: Bank, staff: dict[str, str]
) -> None:
    await _movements(bank, staff)
    bus = InProcessBus()
    received: list[Message] = []

    async def handle(message: Message) -> None:
        received.append(message)

    bus.subscribe(topics.TRANSACTIONS_COMPLETED, handle)
    sealer = _BrokenSealer()
    relay = OutboxRelay(
        bank.container.database,
        bus,
        event_format=EventFormat.JSON,
        publish_schemas=False,
        sealer=sealer,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))

    async def published() -> bool:
        return all(row.published_at is not None for row in await outbox_rows(bank))

    try:
        await wait_for(published, timeout_seconds=60, what="the relay to publish")
    finally:
        stop.set()
        await running
        await bus.close()
    assert sealer.calls >= 1
    assert len(received) == 4  # credit, debit, two transfer legs completed
    assert all(row.chain_seq is None for row in await _journal(bank))  # unsealed, for later


async def test_verify_from_a_position_past_the_head_is_refused_and_changes_nothing(
    bank: Bank, staff: dict[str, str], database_url: str
) -> None:
    journal = await _sealed(bank, staff)
    before = await _state(bank)
    refused = _cli(database_url, "verify", "--from-seq", str(len(journal) + 2))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"cannot verify: from_seq {len(journal) + 2} is past the head ({len(journal)})" in (
        refused.stderr
    )
    assert refused.stdout == ""
    assert await _state(bank) == before
    # Just past the head is the empty tail: nothing to check, intact.
    assert _cli(database_url, "verify", "--from-seq", str(len(journal) + 1)).returncode == 0
