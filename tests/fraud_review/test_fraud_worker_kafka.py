"""`banking worker fraud` against the real Kafka and PostgreSQL: every finished leg is scored
exactly once, with the features an uninterrupted replay of the ledger gives (a SIGKILL and a
restart mid-stream lose no feature state and score no event twice); alerts reach
``banking.fraud.alerts`` keyed by account, in Arrow, with exact amounts; a poison event goes to
the permanent DLQ and the worker goes on."""

from __future__ import annotations

import asyncio
import signal
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from banking.domain.roles import Role
from banking.events import envelope, topics
from banking.events.serialization import decode
from banking.fraud.assessment import Movement
from banking.fraud.features import FeatureBook
from banking.storage.ledger_store import transaction_of_row
from banking.storage.tables import fraud_scores, transactions
from tests.conftest import Bank
from tests.events.kafka_support import consume, kafka_bootstrap, produce_raw, worker_process
from tests.events.test_kafka import (  # noqa: F401 - fixtures
    outbox_counts,
    pg_kbank,
    prefix,
    wait_for,
    worker_env,
)

pytestmark = pytest.mark.postgres
SETTLE_SECONDS = 120
MOVEMENTS = 240


async def _count(bank: Bank, table: object) -> int:
    async with bank.container.database.read() as connection:
        result = await connection.execute(select(func.count()).select_from(table))  # type: ignore[arg-type]
        return int(result.scalar_one())


async def _move(bank: Bank, accounts: list[str], owner: dict[str, str], start: int, n: int) -> None:
    requests = []
    for i in range(start, start + n):
        source, destination = accounts[i % len(accounts)], accounts[(i * 3 + 1) % len(accounts)]
        if i % 4 == 0 or source == destination:
            body = {
                "account_id": source,
                "amount": f"{1 + i % 37}.{i % 100:02d}",
                "currency": "USD",
            }
            requests.append(
                bank.client.post("/api/v1/transactions/debit", json=body, headers=owner)
            )
        else:
            body = {
                "source_account_id": source,
                "destination_account_id": destination,
                "amount": f"{2 + i % 11}.50",
                "currency": "USD",
            }
            requests.append(
                bank.client.post("/api/v1/transactions/transfer", json=body, headers=owner)
            )
    answers = await asyncio.gather(*requests)
    assert {a.status_code for a in answers} <= {200, 422}


async def test_killed_fraud_worker_loses_no_features_and_scores_nothing_twice(
    pg_kbank: Bank,  # noqa: F811
    postgres_url: str,
    prefix: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    bank = pg_kbank
    _, staff = await bank.user(Role.TELLER)
    owner_id, owner = await bank.user(Role.CUSTOMER)
    accounts = [await bank.account(owner_id, staff, funded="400.00") for _ in range(8)]
    env = {
        **worker_env(bank, postgres_url),
        "FRAUD_ALERT_THRESHOLD": "0",  # every movement alerts: the alert stream is checkable
        "FRAUD_MODEL_DIR": str(tmp_path / "models"),
    }
    relay = worker_process("relay", env, tmp_path / "relay.log")
    fraud = worker_process("fraud", env, tmp_path / "fraud.log")
    try:
        await _move(bank, accounts, owner, 0, MOVEMENTS // 2)

        async def some_scored() -> bool:
            return await _count(bank, fraud_scores) > 10

        await wait_for(some_scored, timeout_seconds=SETTLE_SECONDS, what="scoring to start")
        fraud.send_signal(signal.SIGKILL)
        fraud.wait(timeout=10)
        await produce_raw(
            kafka_bootstrap(),
            prefix + topics.TRANSACTIONS_COMPLETED,
            b"\x00not an event",
            key=accounts[0].encode(),
            headers={"ce_type": "transaction.completed", "content-type": "application/json"},
        )
        await _move(bank, accounts, owner, MOVEMENTS // 2, MOVEMENTS // 2)
        fraud = worker_process("fraud", env, tmp_path / "fraud.log")

        async def all_scored() -> bool:
            return await _count(bank, fraud_scores) == await _count(bank, transactions)

        await wait_for(all_scored, timeout_seconds=SETTLE_SECONDS, what="every leg scored")

        async def alerts_published() -> bool:  # the relay publishes the alerts' outbox rows
            return (await outbox_counts(bank))[1] == 0

        await wait_for(alerts_published, timeout_seconds=SETTLE_SECONDS, what="the alerts")
    finally:
        for process in (relay, fraud):
            process.terminate()
            process.wait(timeout=20)

    async with bank.container.database.read() as connection:
        legs = [
            transaction_of_row(row)
            for row in await connection.execute(
                select(transactions).order_by(
                    transactions.c.created_at, transactions.c.transaction_id
                )
            )
        ]
        stored = {row.transaction_id: row for row in await connection.execute(select(fraud_scores))}
    assert set(stored) == {leg.transaction_id for leg in legs}  # every leg, once (primary key)

    # What an uninterrupted worker would have computed: the ledger replayed in order.
    book = FeatureBook()
    for leg in legs:
        movement = Movement.of_leg(leg)
        expected = {k: round(v, 6) for k, v in book.features(movement).as_dict().items()}
        assert stored[leg.transaction_id].features == expected, leg.transaction_id
        book.observe(movement)

    alerts = await consume(
        kafka_bootstrap(),
        topics.FRAUD_ALERTS,
        prefix=prefix,
        until=lambda ms: len({m.headers["ce_id"] for m in ms}) >= len(legs),
    )
    by_transaction: dict[str, set[str]] = defaultdict(set)
    amounts = {str(leg.transaction_id): (leg.amount, str(leg.account_id)) for leg in legs}
    for message in alerts:
        headers = envelope.read_headers(message.headers)
        assert headers.event_type == "fraud.alert"
        fields = decode(
            message.value,
            content_type=headers.content_type or "",
            event_type="fraud.alert",
            schema_version=headers.schema_version,
        )
        amount, account = amounts[fields["transaction_id"]]
        assert fields["amount"] == amount and isinstance(fields["amount"], Decimal)
        assert message.key == account
        by_transaction[fields["transaction_id"]].add(fields["alert_id"])
    assert set(by_transaction) == set(amounts)
    assert all(len(ids) == 1 for ids in by_transaction.values())  # one alert per leg

    dead = await consume(
        kafka_bootstrap(), topics.TRANSACTIONS_PERMANENT_DLQ, prefix=prefix, until=lambda ms: ms
    )
    assert dead[0].value == b"\x00not an event"
    assert dead[0].headers["original_topic"] == topics.TRANSACTIONS_COMPLETED
