"""An account's transaction history: filtered, newest first, with opaque keyset cursors."""

from __future__ import annotations

import base64
import binascii
from dataclasses import replace
from datetime import UTC, datetime
from uuid import UUID

from banking.domain.errors import ValidationFailed
from banking.domain.records import HistoryFilter, HistoryPage, Transaction
from banking.domain.roles import Actor
from banking.ledger.access import require_visible
from banking.ledger.ports import LedgerStore, UnitOfWork


def keyset_cursor(created_at: datetime, record_id: UUID) -> str:
    """The opaque cursor after a record of a list ordered by (time, id): ``decode_cursor``
    reads it back."""
    raw = f"{created_at.isoformat()}|{record_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def encode_cursor(leg: Transaction) -> str:
    return keyset_cursor(leg.created_at, leg.transaction_id)


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, transaction_id = base64.urlsafe_b64decode(padded).decode().split("|")
        when = datetime.fromisoformat(created_at)
        if when.tzinfo is None:
            raise ValueError("cursor timestamp without a time zone")
        return when, UUID(transaction_id)
    except (ValueError, binascii.Error, UnicodeDecodeError) as error:
        raise ValidationFailed("cursor is not valid", field="cursor") from error


def in_utc(moment: datetime | None, field: str) -> datetime | None:
    """A filter time in UTC; times that fall outside years 1-9999 in UTC are refused."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise ValidationFailed(f"{field} needs a time zone (for example Z)", field=field)
    try:
        return moment.astimezone(UTC)
    except OverflowError as error:
        raise ValidationFailed(f"{field} is out of range", field=field) from error


def page_size_within(page_size: int | None, *, default: int, maximum: int) -> int:
    """The size of a page: ``default`` when none is asked for; ``ValidationFailed`` (field
    ``page_size``) outside 1 to ``maximum``."""
    size = default if page_size is None else page_size
    if not 1 <= size <= maximum:
        raise ValidationFailed(f"page_size must be between 1 and {maximum}", field="page_size")
    return size


def newest_first_page(legs: list[Transaction], size: int) -> HistoryPage:
    """A page of at most ``size`` legs from a read of ``size + 1``: the extra one only says
    that a next page exists (its cursor is the page's last leg)."""
    page = legs[:size]
    return HistoryPage(page, encode_cursor(page[-1]) if len(legs) > size and page else None)


class HistoryService:
    def __init__(
        self, unit_of_work: UnitOfWork, *, page_size_default: int, page_size_max: int
    ) -> None:
        self._unit_of_work = unit_of_work
        self.page_size_default = page_size_default
        self.page_size_max = page_size_max

    async def page(
        self,
        actor: Actor,
        account_id: UUID,
        history: HistoryFilter,
        *,
        cursor: str | None = None,
        page_size: int | None = None,
    ) -> HistoryPage:
        size = page_size_within(
            page_size, default=self.page_size_default, maximum=self.page_size_max
        )
        after = decode_cursor(cursor) if cursor else None
        history = replace(
            history,
            created_from=in_utc(history.created_from, "from"),
            created_to=in_utc(history.created_to, "to"),
        )

        async def read(store: LedgerStore) -> list[Transaction]:
            require_visible(actor, await store.get_account(account_id))
            return await store.list_transactions(account_id, history, after=after, limit=size + 1)

        # History may be slightly behind (a replica), never behind the caller's own writes.
        return newest_first_page(await self._unit_of_work.read_may_lag(actor.user_id, read), size)
