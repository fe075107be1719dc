"""`banking worker analytics` as a process, fed by `banking worker relay`, on the real Kafka
and PostgreSQL: a mixed workload through the REST API reconciles with the ledger to the cent
per currency and day; the worker killed with SIGKILL mid-stream and restarted stores every
event exactly once; the README's queries (run through `banking analytics query`, as a user
runs them) give the figures the ledger gives."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from datetime import UTC
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from banking.analytics import query
from banking.analytics.reconcile import reconcile_dataset
from banking.domain.roles import Role
from banking.storage.tables import outbox, transactions
from banking.workers.runtime import CONSUMER_GROUPS
from tests.conftest import Bank
from tests.events.kafka_support import worker_process
from tests.events.test_kafka import (  # noqa: F401 - fixtures
    pg_kbank,
    prefix,
    wait_for,
    worker_env,
)

pytestmark = pytest.mark.postgres
SETTLE_SECONDS = 120
ANALYTICS_TOPICS = CONSUMER_GROUPS["analytics"][1]
CURRENCIES = ("USD", "EUR", "JPY")
README_QUERIES = Path(__file__).with_name("readme_queries.json")


async def _analytics_events(bank: Bank) -> int:
    async with bank.container.database.read() as connection:
        count = await connection.execute(
            select(func.count()).select_from(outbox).where(outbox.c.topic.in_(ANALYTICS_TOPICS))
        )
        return int(count.scalar_one())


def _stored_ids(location: Path) -> list[str]:
    if not location.exists():
        return []
    sql = " UNION ALL ".join(
        f"SELECT event_id FROM {view}"
        for view in ("transactions", "balances", "held", "fraud_alerts")
    )
    return [row[0] for row in query.run(str(location), sql).rows]


async def _open(bank: Bank, staff: dict[str, str]) -> tuple[dict[str, str], dict[str, list[str]]]:
    owner_id, owner = await bank.user(Role.CUSTOMER)
    accounts = {
        currency: [
            await bank.account(owner_id, staff, currency=currency, funded=funding)
            for funding in (("500.00", "75.25") if currency != "JPY" else ("90000", "1200"))
        ]
        for currency in CURRENCIES
    }
    return owner, accounts


async def _move(
    bank: Bank, owner: dict[str, str], accounts: dict[str, list[str]], start: int, count: int
) -> None:
    """Debits, transfers both ways, credits by staff and some declines, in three currencies."""
    requests = []
    for i in range(start, start + count):
        currency = CURRENCIES[i % len(CURRENCIES)]
        a, b = accounts[currency]
        cents = "" if currency == "JPY" else f".{(i * 7) % 100:02d}"
        amount = f"{1 + i % 23}{cents}"
        if i % 5 == 0:
            body = {"account_id": b, "amount": f"{10**6}{cents}", "currency": currency}
            requests.append(
                bank.client.post("/api/v1/transactions/debit", json=body, headers=owner)
            )
        elif i % 3 == 0:
            body = {"account_id": a, "amount": amount, "currency": currency}
            requests.append(
                bank.client.post("/api/v1/transactions/debit", json=body, headers=owner)
            )
        else:
            source, destination = (a, b) if i % 2 else (b, a)
            body = {
                "source_account_id": source,
                "destination_account_id": destination,
                "amount": amount,
                "currency": currency,
            }
            requests.append(
                bank.client.post("/api/v1/transactions/transfer", json=body, headers=owner)
            )
    answers = await asyncio.gather(*requests)
    statuses = {answer.status_code for answer in answers}
    assert statuses <= {200, 422}, [a.text for a in answers if a.status_code not in (200, 422)]
    assert 422 in statuses  # some declines


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "banking.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _ledger_legs(bank: Bank) -> list[Any]:
    async with bank.container.database.read() as connection:
        return list(await connection.execute(select(transactions)))


async def test_a_killed_sink_restarts_exactly_once_and_reconciles_with_the_ledger(
    pg_kbank: Bank,  # noqa: F811
    postgres_url: str,
    prefix: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    bank = pg_kbank
    location = tmp_path / "dataset"
    _, staff = await bank.user(Role.TELLER)
    owner, accounts = await _open(bank, staff)
    env = {
        **worker_env(bank, postgres_url),
        "ANALYTICS_LOCATION": str(location),
        "ANALYTICS_FLUSH_SECONDS": "0.5",
        "ANALYTICS_ROW_GROUP_ROWS": "40",
        "EVENT_FORMAT": "arrow",
    }
    relay = worker_process("relay", env, tmp_path / "relay.log")
    sink = worker_process("analytics", env, tmp_path / "analytics.log")
    try:
        await _move(bank, owner, accounts, 0, 150)

        async def some_files() -> bool:
            return len(list(location.rglob("*.parquet"))) >= 3

        await wait_for(some_files, timeout_seconds=SETTLE_SECONDS, what="the first files")
        sink.send_signal(signal.SIGKILL)  # mid-stream: files written, offsets maybe not
        sink.wait(timeout=10)
        await _move(bank, owner, accounts, 150, 150)
        sink = worker_process("analytics", env, tmp_path / "analytics.log")

        async def everything_stored() -> bool:
            return len(_stored_ids(location)) >= await _analytics_events(bank)

        await wait_for(everything_stored, timeout_seconds=SETTLE_SECONDS, what="every event")
        await asyncio.sleep(2)  # anything more (a duplicate) would land now
    finally:
        for process in (relay, sink):
            process.terminate()
            process.wait(timeout=20)

    loads = [
        json.loads(line)
        for line in (tmp_path / "analytics.log").read_text().splitlines()
        if '"analytics_sink_loaded"' in line
    ]
    assert loads[0]["files"] == 0 and loads[-1]["files"] > 0  # the restart read the files
    ids = _stored_ids(location)
    async with bank.container.database.read() as connection:
        expected = {
            str(row.event_id)
            for row in await connection.execute(
                select(outbox.c.event_id).where(outbox.c.topic.in_(ANALYTICS_TOPICS))
            )
        }
    assert len(ids) == len(set(ids)), "a row stored twice"
    assert set(ids) == expected

    report = await reconcile_dataset(str(location), bank.container.database)
    assert report.clean, report.problems
    assert {currency for currency, _ in report.ledger} == set(CURRENCIES)

    cli = _cli(["analytics", "reconcile"], env)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["clean"] is True
    await _readme_queries_give_the_ledgers_figures(bank, env)

    # The reconciliation notices a leg the dataset lacks: remove one file, exit 1, named.
    victim = next(location.glob("event_type=transaction.completed/*/*.parquet"))
    victim.unlink()
    cli = _cli(["analytics", "reconcile"], env)
    assert cli.returncode == 1
    assert json.loads(cli.stdout)["problems"]


async def _readme_queries_give_the_ledgers_figures(bank: Bank, env: dict[str, str]) -> None:
    """The three queries of the README (kept in readme_queries.json, which the README
    section quotes), run with `banking analytics query --format json`."""
    queries = json.loads(README_QUERIES.read_text())
    legs = await _ledger_legs(bank)
    completed = [leg for leg in legs if leg.status == "completed"]

    volume: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [Decimal("0"), 0])
    for leg in completed:
        if leg.transaction_type in ("debit", "credit", "transfer_out"):
            entry = volume[(leg.created_at.astimezone(UTC).date().isoformat(), leg.currency)]
            entry[0] += leg.amount
            entry[1] += 1
    answer = _cli(["analytics", "query", queries["daily_volume"], "--format", "json"], env)
    assert answer.returncode == 0, answer.stderr
    got = {
        (r["date"], r["currency"]): [Decimal(r["volume"]), r["movements"]]
        for r in json.loads(answer.stdout)
    }
    assert got == dict(volume)

    outflow: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for leg in completed:
        if leg.transaction_type in ("debit", "transfer_out"):
            outflow[(str(leg.account_id), leg.currency)] += leg.amount
    top = sorted(outflow.items(), key=lambda item: (-item[1], item[0]))[:10]
    answer = _cli(["analytics", "query", queries["top_outflow"], "--format", "json"], env)
    assert answer.returncode == 0, answer.stderr
    rows = json.loads(answer.stdout)
    assert [((r["account_id"], r["currency"]), Decimal(r["outflow"])) for r in rows] == top

    decided: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for leg in legs:
        if leg.transaction_type in ("debit", "transfer_out") and leg.status != "pending":
            decided[leg.currency][0] += 1
            decided[leg.currency][1] += leg.status == "failed"
    answer = _cli(["analytics", "query", queries["decline_rate"], "--format", "json"], env)
    assert answer.returncode == 0, answer.stderr
    rates = {
        r["currency"]: (r["attempts"], r["declined"], Decimal(r["decline_rate"]))
        for r in json.loads(answer.stdout)
    }
    assert rates == {
        currency: (
            n,
            failed,
            (Decimal(failed) / n).quantize(Decimal("0.0001"), rounding=ROUND_FLOOR),
        )
        for currency, (n, failed) in decided.items()
    }
    table = _cli(["analytics", "query", queries["daily_volume"]], env)
    assert table.returncode == 0 and "volume" in table.stdout.splitlines()[0]
