"""An account's history: newest first, filtered by type, status and time, paged with opaque
cursors that visit every leg exactly once."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import pytest

from banking.domain.errors import InsufficientFundsDeclined, ValidationFailed
from banking.domain.records import (
    Account,
    HistoryFilter,
    Transaction,
    TransactionStatus,
    TransactionType,
)
from banking.domain.roles import Actor
from tests.ledger.world import CREDIT, DEBIT, TRANSFER, World, make_world, request
from tests.support.ledger import Core


async def every_page(
    core: Core, actor: Actor, account: Account, page_size: int, history: HistoryFilter
) -> list[list[Transaction]]:
    pages, cursor = [], None
    while True:
        page = await core.history.page(
            actor, account.account_id, history, cursor=cursor, page_size=page_size
        )
        pages.append(page.transactions)
        cursor = page.next_cursor
        if cursor is None:
            return pages


async def debits(core: Core, world: World, count: int) -> list[UUID]:
    return [
        (
            await core.movements.debit(world.alice, request(DEBIT, world.usd, "1.00"))
        ).transaction.transaction_id
        for _ in range(count)
    ]


@pytest.mark.parametrize("page_size", [1, 2, 3, 5, 7, 200])
async def test_pages_visit_every_leg_once_newest_first(core: Core, page_size: int) -> None:
    world = await make_world(core)
    made = await debits(core, world, 6)

    pages = await every_page(core, world.alice, world.usd, page_size, HistoryFilter())

    seen = [leg.transaction_id for page in pages for leg in page]
    assert len(seen) == len(set(seen)) == 7  # six debits and the funding credit
    assert seen[:6] == list(reversed(made))
    assert all(len(page) == page_size for page in pages[:-1])
    assert 1 <= len(pages[-1]) <= page_size
    keys = [(leg.created_at, leg.transaction_id) for page in pages for leg in page]
    assert keys == sorted(keys, reverse=True)


async def test_a_page_that_ends_the_history_has_no_cursor(core: Core, world: World) -> None:
    await debits(core, world, 3)  # four legs with the funding credit

    first = await core.history.page(world.alice, world.usd.account_id, HistoryFilter(), page_size=2)
    second = await core.history.page(
        world.alice, world.usd.account_id, HistoryFilter(), cursor=first.next_cursor, page_size=2
    )
    whole = await core.history.page(world.alice, world.usd.account_id, HistoryFilter(), page_size=4)

    assert first.next_cursor is not None
    assert (len(second.transactions), second.next_cursor) == (2, None)
    assert (len(whole.transactions), whole.next_cursor) == (4, None)


async def test_the_default_page_holds_fifty_legs(core: Core, world: World) -> None:
    await debits(core, world, 55)

    page = await core.history.page(world.alice, world.usd.account_id, HistoryFilter())

    assert len(page.transactions) == 50
    assert page.next_cursor is not None


async def test_legs_made_after_a_cursor_do_not_shift_the_next_page(
    core: Core, world: World
) -> None:
    older = await debits(core, world, 4)
    first = await core.history.page(world.alice, world.usd.account_id, HistoryFilter(), page_size=2)
    await core.movements.debit(world.alice, request(DEBIT, world.usd, "1.00"))

    second = await core.history.page(
        world.alice, world.usd.account_id, HistoryFilter(), cursor=first.next_cursor, page_size=2
    )

    assert [leg.transaction_id for leg in first.transactions] == older[:-3:-1]
    assert [leg.transaction_id for leg in second.transactions] == older[1::-1]


async def test_a_history_holds_only_its_accounts_legs(core: Core) -> None:
    world = await make_world(core)
    out_leg = (
        await core.movements.transfer(
            world.alice, request(TRANSFER, world.usd, "5.00", destination=world.usd_bob)
        )
    ).transaction

    alices = await core.history.page(world.alice, world.usd.account_id, HistoryFilter())
    bobs = await core.history.page(world.bob, world.usd_bob.account_id, HistoryFilter())

    assert {leg.account_id for leg in alices.transactions} == {world.usd.account_id}
    assert {leg.account_id for leg in bobs.transactions} == {world.usd_bob.account_id}
    assert out_leg in alices.transactions
    assert [leg.transaction_type for leg in bobs.transactions] == [
        TransactionType.TRANSFER_IN,
        TransactionType.CREDIT,
    ]


async def a_mixed_history(core: Core, world: World) -> None:
    """On Alice's USD account: the funding credit, a credit, a debit, a declined debit, an
    outgoing and an incoming transfer, and a pending debit."""
    await core.movements.credit(world.teller, request(CREDIT, world.usd, "5.00"))
    await core.movements.debit(world.alice, request(DEBIT, world.usd, "4.00"))
    with pytest.raises(InsufficientFundsDeclined):
        await core.movements.debit(world.alice, request(DEBIT, world.usd, "500.00"))
    await core.movements.transfer(
        world.alice, request(TRANSFER, world.usd, "3.00", destination=world.usd_bob)
    )
    await core.movements.transfer(
        world.bob, request(TRANSFER, world.usd_bob, "2.00", destination=world.usd)
    )
    await core.movements.submit(world.alice, DEBIT, request(DEBIT, world.usd, "1.00"))


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        (HistoryFilter(transaction_type=TransactionType.CREDIT), [("credit", "completed")] * 2),
        (
            HistoryFilter(transaction_type=TransactionType.DEBIT),
            [("debit", "pending"), ("debit", "failed"), ("debit", "completed")],
        ),
        (
            HistoryFilter(transaction_type=TransactionType.TRANSFER_OUT),
            [("transfer_out", "completed")],
        ),
        (
            HistoryFilter(transaction_type=TransactionType.TRANSFER_IN),
            [("transfer_in", "completed")],
        ),
        (HistoryFilter(status=TransactionStatus.FAILED), [("debit", "failed")]),
        (HistoryFilter(status=TransactionStatus.PENDING), [("debit", "pending")]),
        (
            HistoryFilter(status=TransactionStatus.COMPLETED),
            [
                ("transfer_in", "completed"),
                ("transfer_out", "completed"),
                ("debit", "completed"),
                ("credit", "completed"),
                ("credit", "completed"),
            ],
        ),
        (
            HistoryFilter(
                transaction_type=TransactionType.DEBIT, status=TransactionStatus.COMPLETED
            ),
            [("debit", "completed")],
        ),
        (
            HistoryFilter(transaction_type=TransactionType.CREDIT, status=TransactionStatus.FAILED),
            [],
        ),
    ],
    ids=[
        "credits",
        "debits",
        "transfers-out",
        "transfers-in",
        "failed",
        "pending",
        "completed",
        "completed-debits",
        "failed-credits",
    ],
)
async def test_filters_by_type_and_status(
    core: Core, world: World, history: HistoryFilter, expected: list[tuple[str, str]]
) -> None:
    await a_mixed_history(core, world)

    page = await core.history.page(world.alice, world.usd.account_id, history)

    assert [(leg.transaction_type.value, leg.status.value) for leg in page.transactions] == (
        expected
    )


async def test_a_time_window_includes_its_start_and_excludes_its_end(
    core: Core, world: World
) -> None:
    async def moment() -> datetime:
        await asyncio.sleep(0.002)
        at = datetime.now(UTC)
        await asyncio.sleep(0.002)
        return at

    start = await moment()
    inside = await debits(core, world, 2)
    end = await moment()
    await debits(core, world, 1)

    window = await core.history.page(
        world.alice, world.usd.account_id, HistoryFilter(created_from=start, created_to=end)
    )
    since = await core.history.page(
        world.alice, world.usd.account_id, HistoryFilter(created_from=end)
    )
    until = await core.history.page(
        world.alice, world.usd.account_id, HistoryFilter(created_to=start)
    )
    at_the_first = await core.history.page(
        world.alice,
        world.usd.account_id,
        HistoryFilter(
            created_from=window.transactions[-1].created_at,
            created_to=window.transactions[-1].created_at,
        ),
    )

    assert [leg.transaction_id for leg in window.transactions] == inside[::-1]
    assert len(since.transactions) == 1
    assert [leg.transaction_type for leg in until.transactions] == [TransactionType.CREDIT]
    assert at_the_first.transactions == []  # [t, t) is empty


async def test_a_time_window_in_another_zone_is_the_same_instants(core: Core, world: World) -> None:
    await asyncio.sleep(0.002)
    start = datetime.now(UTC)
    made = await debits(core, world, 2)
    in_tokyo = start.astimezone(timezone(timedelta(hours=9)))

    page = await core.history.page(
        world.alice, world.usd.account_id, HistoryFilter(created_from=in_tokyo)
    )

    assert [leg.transaction_id for leg in page.transactions] == made[::-1]


@pytest.mark.parametrize("page_size", [0, -1, 201, 10_000])
async def test_a_page_size_outside_one_to_the_maximum_is_refused(
    core: Core, world: World, page_size: int
) -> None:
    before = await core.books()

    with pytest.raises(ValidationFailed) as refused:
        await core.history.page(
            world.alice, world.usd.account_id, HistoryFilter(), page_size=page_size
        )

    assert refused.value.field == "page_size"
    assert refused.value.message == "page_size must be between 1 and 200"
    assert await core.books() == before


def _b64(text: bytes) -> str:
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        "!!!!",
        _b64(b"yesterday|00000000-0000-0000-0000-000000000000"),
        _b64(b"2024-01-01T00:00:00|00000000-0000-0000-0000-000000000000"),  # no time zone
        _b64(b"2024-01-01T00:00:00+00:00|not-a-uuid"),
        _b64(b"2024-01-01T00:00:00+00:00"),
        _b64(b"\xff\xfe|\x00"),
    ],
    ids=["text", "not-base64", "bad-time", "naive-time", "bad-id", "no-id", "not-utf8"],
)
async def test_a_bad_cursor_is_refused(core: Core, world: World, cursor: str) -> None:
    before = await core.books()

    with pytest.raises(ValidationFailed) as refused:
        await core.history.page(world.alice, world.usd.account_id, HistoryFilter(), cursor=cursor)

    assert (refused.value.field, refused.value.message) == ("cursor", "cursor is not valid")
    assert await core.books() == before


@pytest.mark.parametrize(
    ("history", "field", "message"),
    [
        (
            HistoryFilter(created_from=datetime(2024, 1, 1)),
            "from",
            "from needs a time zone (for example Z)",
        ),
        (
            HistoryFilter(created_to=datetime(2024, 1, 1)),
            "to",
            "to needs a time zone (for example Z)",
        ),
        (
            HistoryFilter(created_from=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))),
            "from",
            "from is out of range",
        ),
        (
            HistoryFilter(
                created_to=datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14)))
            ),
            "to",
            "to is out of range",
        ),
    ],
    ids=["from-without-zone", "to-without-zone", "from-before-year-1", "to-after-year-9999"],
)
async def test_a_time_filter_needs_a_zone_and_a_real_instant(
    core: Core, world: World, history: HistoryFilter, field: str, message: str
) -> None:
    before = await core.books()

    with pytest.raises(ValidationFailed) as refused:
        await core.history.page(world.alice, world.usd.account_id, history)

    assert (refused.value.field, refused.value.message) == (field, message)
    assert await core.books() == before


async def test_a_leg_in_the_history_is_the_leg_that_was_answered(core: Core) -> None:
    world = await make_world(core)
    answered = await core.movements.debit(
        world.alice, request(DEBIT, world.usd, "12.34", description="books", reference_id="b-1")
    )

    page = await core.history.page(world.alice, world.usd.account_id, HistoryFilter(), page_size=1)

    assert page.transactions == [answered.transaction]
    assert page.transactions[0].amount == Decimal("12.34")
