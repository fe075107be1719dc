"""Outbox retention deletes published rows older than the retention age, in bounded batches,
and never an unpublished row (it has not reached Kafka yet)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update

from banking.domain.clock import utc_now
from banking.domain.roles import Role
from banking.events.retention import OutboxRetention
from banking.storage.tables import outbox, transactions
from tests.conftest import Bank


async def _outbox_ids(bank: Bank) -> list[int]:
    async with bank.container.database.read() as connection:
        return list(
            (await connection.execute(select(outbox.c.outbox_id).order_by(outbox.c.outbox_id)))
            .scalars()
            .all()
        )


async def _age(bank: Bank, ids: list[int], *, published_days_ago: float | None) -> None:
    published = (
        None if published_days_ago is None else utc_now() - timedelta(days=published_days_ago)
    )
    async with bank.container.database.unit_of_work() as connection:
        await connection.execute(
            update(outbox).where(outbox.c.outbox_id.in_(ids)).values(published_at=published)
        )


async def test_old_published_rows_go_in_batches_and_nothing_else(
    bank: Bank, staff: dict[str, str]
) -> None:
    customer_id, _ = await bank.user(Role.CUSTOMER)
    users_created = set(await _outbox_ids(bank))  # staff actions, recent and unpublished: kept
    for _ in range(6):  # 12 outbox rows: a transaction and a balance event per credit
        await bank.account(customer_id, staff, funded="1.00")
    ids = [i for i in await _outbox_ids(bank) if i not in users_created]
    assert len(ids) == 12
    old_published, recent_published, old_unpublished = ids[:7], ids[7:10], ids[10:]
    await _age(bank, old_published, published_days_ago=30)
    await _age(bank, recent_published, published_days_ago=1)
    await _age(bank, old_unpublished, published_days_ago=None)
    async with bank.container.database.unit_of_work() as connection:
        # Unpublished for a month (the relay was down): still waits for the relay.
        await connection.execute(
            update(outbox)
            .where(outbox.c.outbox_id.in_(old_unpublished))
            .values(created_at=utc_now() - timedelta(days=30))
        )
    retention = OutboxRetention(bank.container.database, keep_hours=7 * 24, batch_size=3)

    report = await retention.prune_once()

    assert (report.deleted, report.batches) == (7, 3)
    assert await _outbox_ids(bank) == sorted(users_created) + recent_published + old_unpublished
    async with bank.container.database.read() as connection:
        legs = (await connection.execute(select(func.count()).select_from(transactions))).scalar()
    assert legs == 6  # the books are not the outbox: every leg stays
    assert (await retention.prune_once()).deleted == 0


async def test_retention_zero_keeps_everything(bank: Bank, staff: dict[str, str]) -> None:
    customer_id, _ = await bank.user(Role.CUSTOMER)
    await bank.account(customer_id, staff, funded="1.00")
    ids = await _outbox_ids(bank)
    await _age(bank, ids, published_days_ago=3650)

    report = await OutboxRetention(
        bank.container.database, keep_hours=0, batch_size=10
    ).prune_once()

    assert report.deleted == 0
    assert await _outbox_ids(bank) == ids
