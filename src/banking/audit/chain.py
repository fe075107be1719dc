"""The tamper-evident journal (DESIGN.md invariant 7; docs/audit.md "Tamper-evident journal").

Every ``transaction_logs`` row is sealed into one hash chain after it commits: it gets a
position (``chain_seq``, 1, 2, 3, ...) and ``chain_hash = sha256(previous hash (hex) + "\\n" +
canonical content)``, the genesis previous hash being 64 zeros. The money path does not change:
movements insert their rows unsealed, and ``JournalSealer`` (run by the outbox relay after each
publish pass, and by ``banking audit seal``) chains them in batches, one transaction per batch
that locks the one head row (``journal_chain_head``). So only sealers wait for each other.
Chain order is seal order: rows are taken by (created_at, log_id), and a row that commits
after a batch was sealed with an earlier ``created_at`` simply gets a later position.

``verify_chain`` walks the chain in position order in bounded pages, recomputes every hash,
and names the first row that does not match (``ChainBreak``); ``JournalVerifier`` runs it
periodically and reports the outcome as metrics (the ``JournalChainBroken`` alert).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from banking.audit import chain_store as store
from banking.domain.clock import utc_now
from banking.observability.logging import get_logger
from banking.storage.database import Database

log = get_logger(__name__)

GENESIS_HASH: Final = "0" * 64
SEAL_BATCH_MAX: Final = 10_000
VERIFY_PAGE_ROWS: Final = 5_000
UNSEALED_GRACE_SECONDS: Final = 60.0
# The periodic verifier walks the whole chain again at least this often (between, it checks
# the rows sealed since its last run and that the last verified hash is unchanged).
FULL_VERIFY_SECONDS: Final = 24 * 3600.0
# The kinds of break ``verify_chain`` names.
CONTENT_CHANGED: Final = "content_changed"  # the row's columns differ from what was sealed
HASH_CHANGED: Final = "hash_changed"  # the row's stored hash differs from what was sealed
CONTENT_OR_HASH_CHANGED: Final = "content_or_hash_changed"  # both, or cannot tell which
SEQ_GAP: Final = "seq_gap"  # a position holds no row (a deleted row, or an unsealed one)
HEAD_MISMATCH: Final = "head_mismatch"  # the head names another last hash or position


def canonical_content(row: Any) -> str:
    """The fixed encoding of a journal row that its hash covers: JSON with sorted keys, no
    spaces, non-ASCII as is (UTF-8), ids as lowercase hyphenated UUIDs, ``created_at`` as
    ISO 8601 UTC with microseconds (``2026-12-02T15:04:05.123456Z``), ``metadata`` as stored
    (its keys sorted at every level)."""
    created_at: datetime = row.created_at
    content = {
        "log_id": str(row.log_id),
        "transaction_id": str(row.transaction_id),
        "event_type": row.event_type,
        "metadata": row.metadata,
        "created_at": created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "created_by": row.created_by,
    }
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(previous_hash: str, row: Any) -> str:
    """``sha256(previous_hash + "\\n" + canonical_content(row))`` as 64 hex digits."""
    data = f"{previous_hash}\n{canonical_content(row)}".encode()
    return hashlib.sha256(data).hexdigest()


class SealObserver(Protocol):
    def journal_sealed(self, count: int) -> None: ...


class _UnobservedSealer:
    def journal_sealed(self, count: int) -> None:
        pass


class JournalSealer:
    """Seals unsealed journal rows into the chain, one batch per transaction."""

    def __init__(
        self,
        database: Database,
        *,
        batch_size: int = 1000,
        observer: SealObserver | None = None,
    ) -> None:
        self._database = database
        self.batch_size = max(1, min(batch_size, SEAL_BATCH_MAX))
        self._observer: SealObserver = observer or _UnobservedSealer()

    async def seal_batch(self) -> int:
        """Seal the oldest unsealed rows (at most ``batch_size``); the number sealed."""
        # A read first: when nothing waits (most passes of an idle relay) no write
        # transaction is opened, so SQLite's one write lock is not taken for nothing.
        async with self._database.read() as connection:
            if not await store.any_unsealed(connection):
                return 0
        count = await self._database.run_in_transaction(self._seal)
        if count:
            self._observer.journal_sealed(count)
        return count

    async def seal_all(self, *, batches_max: int = 1_000_000) -> int:
        """Seal batches until none is full (or ``batches_max`` batches); the number sealed."""
        total = 0
        for _ in range(batches_max):
            sealed = await self.seal_batch()
            total += sealed
            if sealed < self.batch_size:
                break
        return total

    async def _seal(self, connection: AsyncConnection) -> int:
        head = await store.read_head(connection, lock=True)
        rows = await store.unsealed_rows(connection, limit=self.batch_size)
        if not rows:
            return 0
        seq, previous = head.last_seq, head.last_hash
        sealed = []
        for row in rows:
            seq += 1
            previous = chain_hash(previous, row)
            sealed.append(store.Sealed(row.log_id, seq, previous))
        await store.seal(connection, sealed, store.Head(seq, previous, None), utc_now())
        log.debug("journal_sealed", count=len(sealed), first_seq=sealed[0].chain_seq, last_seq=seq)
        return len(sealed)


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first place the chain does not match: ``seq`` and the row there (None when no row
    holds it), what is wrong (``kind``), and for a gap the next row found."""

    kind: str
    seq: int
    log_id: UUID | None
    transaction_id: UUID | None
    detail: str
    next_seq: int | None = None
    next_log_id: UUID | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "seq": self.seq,
            "log_id": str(self.log_id) if self.log_id else None,
            "transaction_id": str(self.transaction_id) if self.transaction_id else None,
            "detail": self.detail,
            "next_seq": self.next_seq,
            "next_log_id": str(self.next_log_id) if self.next_log_id else None,
        }


@dataclass(frozen=True, slots=True)
class Verification:
    """The outcome of one walk: rows checked from ``from_seq``, the last position that
    matched and its hash, the head, the first break (None: the chain is intact), and the
    unsealed rows older than the grace (count, oldest creation time)."""

    from_seq: int
    rows_verified: int
    verified_seq: int
    verified_hash: str
    head: store.Head
    broken: ChainBreak | None
    unsealed_overdue: int
    unsealed_oldest: datetime | None

    @property
    def ok(self) -> bool:
        return self.broken is None


async def verify_chain(
    database: Database,
    *,
    from_seq: int = 1,
    previous_hash: str | None = None,
    page_rows: int = VERIFY_PAGE_ROWS,
    unsealed_grace_seconds: float = UNSEALED_GRACE_SECONDS,
) -> Verification:
    """Recompute the chain from position ``from_seq`` up to the head and name the first break.

    From 1 the walk starts at the genesis hash. From a later position it starts at the stored
    hash of the row before (trusted: what was verified earlier), or at ``previous_hash`` when
    given, and then that stored hash must equal it (a rewrite behind the walk is named).
    """
    if from_seq < 1:
        raise ValueError("from_seq starts at 1")
    page_rows = max(1, min(page_rows, 50_000))
    async with database.read() as connection:
        head = await store.read_head(connection)
        overdue, oldest = await store.unsealed_before(
            connection, utc_now() - timedelta(seconds=unsealed_grace_seconds)
        )
        start = await _starting_hash(connection, from_seq, previous_hash, head)
    walk = _Walk(from_seq, head, overdue, oldest)
    if isinstance(start, ChainBreak):
        return walk.result(broken=start)
    walk.previous_hash = start
    expected = from_seq
    while expected <= head.last_seq:
        async with database.read() as connection:
            page = await store.sealed_page(
                connection, after_seq=expected - 1, through_seq=head.last_seq, limit=page_rows
            )
            if not page:
                return walk.result(broken=_gap(expected, None, head))
            for row in page:
                if row.chain_seq != expected:
                    return walk.result(broken=_gap(expected, row, head))
                computed = chain_hash(walk.previous_hash, row)
                if row.chain_hash != computed:
                    kind = await _which_changed(connection, row, computed, head)
                    return walk.result(broken=_changed(kind, row, computed))
                walk.matched(row)
                expected += 1
        await asyncio.sleep(0)  # a long walk shares the event loop between pages
    if walk.verified_seq != head.last_seq or walk.previous_hash != head.last_hash:
        return walk.result(
            broken=ChainBreak(
                HEAD_MISMATCH,
                head.last_seq,
                None,
                None,
                f"the head says position {head.last_seq} with hash {head.last_hash}; the rows "
                f"end at {walk.verified_seq} with {walk.previous_hash}",
            )
        )
    async with database.read() as connection:
        # A row past the head: the head was moved back (a sealer moves it with its rows in
        # one transaction, and the head and the row are read in one statement).
        beyond = await store.row_past_head(connection)
    if beyond is not None:
        return walk.result(
            broken=ChainBreak(
                HEAD_MISMATCH,
                beyond.chain_seq,
                beyond.log_id,
                beyond.transaction_id,
                f"a row holds position {beyond.chain_seq}, past the head",
            )
        )
    return walk.result(broken=None)


class _Walk:
    def __init__(
        self, from_seq: int, head: store.Head, overdue: int, oldest: datetime | None
    ) -> None:
        self.from_seq = from_seq
        self.head = head
        self.overdue = overdue
        self.oldest = oldest
        self.rows = 0
        self.verified_seq = from_seq - 1
        self.previous_hash = GENESIS_HASH

    def matched(self, row: Any) -> None:
        self.rows += 1
        self.verified_seq = row.chain_seq
        self.previous_hash = row.chain_hash

    def result(self, *, broken: ChainBreak | None) -> Verification:
        return Verification(
            self.from_seq,
            self.rows,
            self.verified_seq,
            self.previous_hash,
            self.head,
            broken,
            self.overdue,
            self.oldest,
        )


async def _starting_hash(
    connection: AsyncConnection, from_seq: int, previous_hash: str | None, head: store.Head
) -> str | ChainBreak:
    if from_seq == 1:
        return GENESIS_HASH
    if from_seq - 1 > head.last_seq:
        raise ValueError(f"from_seq {from_seq} is past the head ({head.last_seq})")
    before = await store.sealed_row(connection, from_seq - 1)
    if before is None:
        return _gap(from_seq - 1, None, head)
    if previous_hash is not None and before.chain_hash != previous_hash:
        return ChainBreak(
            HASH_CHANGED,
            before.chain_seq,
            before.log_id,
            before.transaction_id,
            f"the stored hash {before.chain_hash} is not the {previous_hash} verified before",
        )
    return str(before.chain_hash)


def _gap(seq: int, next_row: Any | None, head: store.Head) -> ChainBreak:
    if next_row is None:
        detail = f"no row holds position {seq} (the head is at {head.last_seq}): deleted"
        return ChainBreak(SEQ_GAP, seq, None, None, detail)
    detail = f"no row holds position {seq}; the next row holds {next_row.chain_seq}: deleted"
    return ChainBreak(SEQ_GAP, seq, None, None, detail, next_row.chain_seq, next_row.log_id)


def _changed(kind: str, row: Any, computed: str) -> ChainBreak:
    what = {
        CONTENT_CHANGED: "the row's content is not what was sealed",
        HASH_CHANGED: "the row's stored hash is not what was sealed (its content is)",
        CONTENT_OR_HASH_CHANGED: "the row's content or stored hash is not what was sealed",
    }[kind]
    detail = f"{what}: stored hash {row.chain_hash}, recomputed {computed}"
    return ChainBreak(kind, row.chain_seq, row.log_id, row.transaction_id, detail)


async def _which_changed(
    connection: AsyncConnection, row: Any, computed: str, head: store.Head
) -> str:
    """Tell an edited row from an edited hash by what comes after it: the next row (or the
    head) was sealed over the original hash, so it still matches the stored hash when only
    the content changed, and the recomputed one when only the stored hash changed."""
    following = await store.sealed_row(connection, row.chain_seq + 1)
    if following is not None:
        if following.chain_hash == chain_hash(str(row.chain_hash), following):
            return CONTENT_CHANGED
        if following.chain_hash == chain_hash(computed, following):
            return HASH_CHANGED
        return CONTENT_OR_HASH_CHANGED
    if row.chain_seq == head.last_seq:
        if head.last_hash == row.chain_hash:
            return CONTENT_CHANGED
        if head.last_hash == computed:
            return HASH_CHANGED
    return CONTENT_OR_HASH_CHANGED


class VerifyObserver(Protocol):
    def journal_verified(
        self, *, broken: bool, verified_seq: int, unsealed_overdue: int
    ) -> None: ...

    def journal_verify_failed(self) -> None: ...


class _UnobservedVerifier:
    def journal_verified(self, *, broken: bool, verified_seq: int, unsealed_overdue: int) -> None:
        pass

    def journal_verify_failed(self) -> None:
        pass


class JournalVerifier:
    """Verifies the chain every ``interval_seconds``: in full first (and again every
    ``FULL_VERIFY_SECONDS``), in between from the last verified row (whose stored hash must
    not have changed); after a break, in full each time, so the alert clears only once the
    whole chain verifies again."""

    def __init__(
        self,
        database: Database,
        *,
        interval_seconds: float,
        observer: VerifyObserver | None = None,
    ) -> None:
        self._database = database
        self._interval_seconds = interval_seconds
        self._observer: VerifyObserver = observer or _UnobservedVerifier()
        self._verified: tuple[int, str] | None = None  # (seq, hash) of the last verified row
        self._full_at = 0.0  # the event loop's time of the last full walk

    async def verify_once(self) -> Verification:
        """One verification (full, or from the last verified row), reported to the observer."""
        now = asyncio.get_running_loop().time()
        full_due = not self._full_at or now - self._full_at >= FULL_VERIFY_SECONDS
        if self._verified is None or self._verified[0] == 0 or full_due:
            outcome = await verify_chain(self._database)
            self._full_at = now
        else:
            seq, verified_hash = self._verified
            outcome = await verify_chain(
                self._database, from_seq=seq + 1, previous_hash=verified_hash
            )
        if outcome.broken is None:
            self._verified = (outcome.verified_seq, outcome.verified_hash)
        else:
            self._verified = None
            log.error("journal_chain_broken", **outcome.broken.as_json())
        if outcome.unsealed_overdue:
            log.warning(
                "journal_rows_unsealed",
                count=outcome.unsealed_overdue,
                oldest=outcome.unsealed_oldest.isoformat() if outcome.unsealed_oldest else None,
            )
        self._observer.journal_verified(
            broken=outcome.broken is not None,
            verified_seq=outcome.verified_seq,
            unsealed_overdue=outcome.unsealed_overdue,
        )
        return outcome

    async def run(self, stop: asyncio.Event) -> None:
        """Verify until ``stop`` is set; a failed run (database down) is retried next time."""
        if self._interval_seconds <= 0:
            return
        while not stop.is_set():
            try:
                await self.verify_once()
            except Exception as error:  # noqa: BLE001 - the database is down: try next time
                self._observer.journal_verify_failed()
                log.warning(
                    "journal_verify_failed",
                    error_type=type(error).__name__,
                    error=str(error)[:300],
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._interval_seconds)
