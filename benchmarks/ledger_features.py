"""``banking bench --ledger-features``: what the ledger features of issue 15 cost the money path,
each scenario next to the same load without the feature, in one run (docs/benchmarks.md, "The
ledger features").

One run, on a fresh PostgreSQL database of its own, with the money path's load (random 1.00 REST
transfers among ``ACCOUNTS_DEFAULT`` funded accounts, by a teller, at one concurrency: 32 or
``BENCH_CONCURRENCY``'s largest) and the default mode's durations:

1. ``transfers``: the journal's hash chain off (``JOURNAL_SEAL=false``), no holds: the baseline;
2. ``transfers_journal_chain``: the same server settings but ``JOURNAL_SEAL=true`` (the relay
   seals every journal row of the load into the chain while it runs);
3. ``transfers_open_holds``: the chain off again, and every account carrying
   ``HOLDS_PER_ACCOUNT`` open holds (authorized over REST before the scenario), so that every
   debit is decided against an available balance below the current one (voided after it).

The three run twice in that order (``ROUNDS``), so that drift over the run shows. Each feature
reports its transfers/s per round, their mean and its ratio to the baseline's mean; each
scenario its latency
percentiles, errors and CPU; the books are reconciled after every scenario (with holds open,
``available = current - open holds`` included). Then, on an account given
``STATEMENT_LEGS`` completed legs (inserted directly, in bulk, with a matching balance): the
time of its statement over REST (JSON, all legs) and of its balance ``as_of`` a time in the
middle of them. Figures, never assertions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import aiohttp

from benchmarks.config import (
    EXIT_FAILED,
    BenchFailed,
    exit_code_of,
    say,
)
from benchmarks.databases import drop_databases, recreate_databases
from benchmarks.money_path import (
    DOOR_REST,
    Bank,
    Run,
    Scenario,
    _measure,
    _options,
    _rest_server,
    _server_settings,
    seed_accounts,
)
from benchmarks.processes import ServerSettings

DEFAULT_OUTPUT = Path("bench-results/ledger-features.json")
HOLDS_PER_ACCOUNT = 3
HOLD_AMOUNT = "1.00"
STATEMENT_LEGS = 100_000
STATEMENT_LEG_AMOUNT = Decimal("0.01")
INSERT_CHUNK = 5_000
REQUEST_TIMEOUT_SECONDS = 300.0

ROUNDS = 2
FEATURE_BASELINE = "transfers"
FEATURE_CHAIN = "transfers_journal_chain"
FEATURE_HOLDS = "transfers_open_holds"
# (feature, JOURNAL_SEAL, open holds), in the order of each round.
FEATURES = (
    (FEATURE_BASELINE, False, False),
    (FEATURE_CHAIN, True, False),
    (FEATURE_HOLDS, False, True),
)


@dataclass
class StatementFigures:
    legs: int
    statement_seconds: float
    statement_bytes: int
    as_of_seconds: float


def run_ledger_features_benchmark(output: Path) -> int:
    """The whole run; the JSON figures go to ``output``; the exit code (0 ok, 1 failed, 2 could
    not start, 130 interrupted)."""
    return exit_code_of(lambda: _run(output), stopped="servers stopped and bench databases dropped")


def _run(output: Path) -> int:
    options = _options(output, None, 100, None)
    config = options.config
    database = f"bench_lf_{uuid4().hex[:8]}"
    run = Run(options, secrets.token_urlsafe(48)[:48], output.parent / "ledger-features-logs")
    run.log_dir.mkdir(parents=True, exist_ok=True)
    started_at = datetime.now(UTC).isoformat()
    created = False
    try:
        run.postgres = asyncio.run(recreate_databases(config.admin_url, (database,)))
        created = True
        statement = _scenarios(run, config.database_url(database))
        report = _report(run, statement, started_at)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2) + "\n")
        _print(report)
        failed = [
            name
            for name, scenario in run.scenarios.items()
            if scenario.books_clean is False or (scenario.load and scenario.load.errors)
        ]
        if failed:
            say(f"bench: FAILED: errors or books not clean in {', '.join(failed)} (see {output})")
            return EXIT_FAILED
        return 0
    finally:
        if created:
            asyncio.run(drop_databases(config.admin_url, (database,)))


def _scenarios(run: Run, api_url: str) -> StatementFigures:
    from banking.storage.migrate import upgrade

    options = run.options
    upgrade(api_url)
    bank = asyncio.run(seed_accounts(api_url, run.jwt_secret, options.accounts))
    for round_number in range(1, ROUNDS + 1):
        for feature, seal, holds in FEATURES:
            name = f"{feature}_{round_number}"
            settings = _server_settings(run, api_url, options.workers, group_commit=False)
            settings = _with_environment(settings, JOURNAL_SEAL=str(seal).lower())
            with _rest_server(run, settings, name) as server:
                hold_ids = asyncio.run(_authorize_holds(server.base_url, bank)) if holds else []
                scenario = Scenario(name, DOOR_REST, "postgresql", 1, options.workers, False)
                _measure(run, scenario, bank, (server.base_url,), (server.pid,), api_url)
                if hold_ids:  # the next scenarios run without open holds
                    asyncio.run(_void_holds(server.base_url, bank, hold_ids))
    settings = _server_settings(run, api_url, options.workers, group_commit=False)
    with _rest_server(run, settings, "statement") as server:
        return asyncio.run(_statement_figures(api_url, server.base_url, bank))


def _with_environment(settings: ServerSettings, **extra: str) -> ServerSettings:
    return dataclasses.replace(
        settings, extra_environment=(*settings.extra_environment, *extra.items())
    )


async def _authorize_holds(base_url: str, bank: Bank) -> list[str]:
    """``HOLDS_PER_ACCOUNT`` open holds on every account, through the API; their ids."""
    hold_ids: list[str] = []
    headers = {"Authorization": f"Bearer {bank.teller_token}"}
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(base_url, headers=headers, timeout=timeout) as session:
        for account_id in bank.account_ids:
            for _ in range(HOLDS_PER_ACCOUNT):
                body = {
                    "account_id": account_id,
                    "amount": HOLD_AMOUNT,
                    "currency": "USD",
                    "reference_id": f"bench-hold-{uuid4().hex}",
                }
                async with session.post("/api/v1/holds", json=body) as response:
                    if response.status != 201:
                        text = await response.text()
                        raise BenchFailed(f"authorizing a hold: {response.status} {text[:300]}")
                    hold_ids.append(str((await response.json())["hold_id"]))
    say(f"bench:   {HOLDS_PER_ACCOUNT} open holds on each of {len(bank.account_ids)} accounts")
    return hold_ids


async def _void_holds(base_url: str, bank: Bank, hold_ids: list[str]) -> None:
    headers = {"Authorization": f"Bearer {bank.teller_token}"}
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(base_url, headers=headers, timeout=timeout) as session:
        for hold_id in hold_ids:
            async with session.post(f"/api/v1/holds/{hold_id}/void") as response:
                if response.status != 200:
                    text = await response.text()
                    raise BenchFailed(f"voiding a hold: {response.status} {text[:300]}")


async def _statement_figures(api_url: str, base_url: str, bank: Bank) -> StatementFigures:
    """``STATEMENT_LEGS`` completed credits on the first account (in bulk, the balance set to
    their sum), then its statement and a balance as of the middle, over REST."""
    account_id = UUID(bank.account_ids[0])
    first, middle = await _insert_legs(api_url, account_id)
    headers = {"Authorization": f"Bearer {bank.teller_token}"}
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
    period_from = (first - timedelta(seconds=1)).isoformat()
    # ``(from, to]``: exactly the inserted legs (the load's legs are a day later).
    period_to = (first + timedelta(microseconds=STATEMENT_LEGS - 1)).isoformat()
    async with aiohttp.ClientSession(base_url, headers=headers, timeout=timeout) as session:
        started = time.perf_counter()
        async with session.get(
            f"/api/v1/accounts/{account_id}/statement",
            params={"from": period_from, "to": period_to},
        ) as response:
            body = await response.read()
            if response.status != 200:
                raise BenchFailed(f"statement: {response.status} {body[:300]!r}")
        statement_seconds = time.perf_counter() - started
        started = time.perf_counter()
        async with session.get(
            f"/api/v1/accounts/{account_id}/balance", params={"as_of": middle.isoformat()}
        ) as response:
            text = await response.text()
            if response.status != 200:
                raise BenchFailed(f"balance as of: {response.status} {text[:300]}")
        as_of_seconds = time.perf_counter() - started
    figures = StatementFigures(STATEMENT_LEGS, statement_seconds, len(body), as_of_seconds)
    say(
        f"bench:   statement of {STATEMENT_LEGS:,} legs {statement_seconds:.2f} s "
        f"({len(body) / 1e6:.1f} MB JSON), balance as of {as_of_seconds * 1000:.1f} ms"
    )
    return figures


async def _insert_legs(api_url: str, account_id: UUID) -> tuple[datetime, datetime]:
    """The legs, one microsecond apart, and the balance raised by their sum, in one
    transaction; returns the first leg's time and the middle one's."""
    from sqlalchemy import insert, update
    from sqlalchemy.ext.asyncio import create_async_engine

    from banking.storage.tables import balances, transactions

    engine = create_async_engine(api_url)
    start = datetime.now(UTC) - timedelta(days=1)
    try:
        async with engine.begin() as connection:
            for chunk_start in range(0, STATEMENT_LEGS, INSERT_CHUNK):
                rows = [
                    {
                        "transaction_id": uuid4(),
                        "account_id": account_id,
                        "transaction_type": "credit",
                        "amount": STATEMENT_LEG_AMOUNT,
                        "currency": "USD",
                        "description": None,
                        "reference_id": f"bench-leg-{index}",
                        "created_at": start + timedelta(microseconds=index),
                        "status": "completed",
                        "request_fingerprint": "bench",
                    }
                    for index in range(chunk_start, min(chunk_start + INSERT_CHUNK, STATEMENT_LEGS))
                ]
                await connection.execute(insert(transactions), rows)
            total = STATEMENT_LEG_AMOUNT * STATEMENT_LEGS
            await connection.execute(
                update(balances)
                .where(balances.c.account_id == account_id)
                .values(
                    current_balance=balances.c.current_balance + total,
                    available_balance=balances.c.available_balance + total,
                    version=balances.c.version + 1,
                )
            )
    finally:
        await engine.dispose()
    return start, start + timedelta(microseconds=STATEMENT_LEGS // 2)


def _report(run: Run, statement: StatementFigures, started_at: str) -> dict[str, Any]:
    rates: dict[str, list[float]] = {feature: [] for feature, _, _ in FEATURES}
    for name, scenario in run.scenarios.items():
        if scenario.load is not None:
            rates[name.rpartition("_")[0]].append(scenario.load.transfers_per_second)
    means = {feature: statistics.mean(found) for feature, found in rates.items() if found}
    baseline = means.get(FEATURE_BASELINE)
    features = {
        feature: {
            "transfers_per_second": [round(rate, 1) for rate in rates[feature]],
            "mean_transfers_per_second": round(mean, 1),
            "ratio_to_baseline": None if not baseline else round(mean / baseline, 3),
        }
        for feature, mean in means.items()
    }
    scenarios: dict[str, Any] = {}
    for name, scenario in run.scenarios.items():
        load = scenario.load
        rate = load.transfers_per_second if load else None
        scenarios[name] = {
            "transfers_per_second": None if rate is None else round(rate, 1),
            "latency_ms": None
            if load is None
            else {"p50": load.p50_ms, "p95": load.p95_ms, "p99": load.p99_ms},
            "errors": load.errors if load else None,
            "declined": load.declined if load else None,
            "cpu": load.cpu if load else None,
            "books_clean": scenario.books_clean,
            "books_problems": scenario.books_problems,
        }
    return {
        "benchmark": "ledger_features",
        "started_at": started_at,
        "concurrency": run.options.concurrency,
        "accounts": run.options.accounts,
        "duration_seconds": run.options.config.duration_seconds,
        "holds_per_account": HOLDS_PER_ACCOUNT,
        "rounds": ROUNDS,
        "baseline_transfers_per_second": None if baseline is None else round(baseline, 1),
        "features": features,
        "scenarios": scenarios,
        "statement": {
            "legs": statement.legs,
            "statement_json_seconds": round(statement.statement_seconds, 3),
            "statement_json_bytes": statement.statement_bytes,
            "balance_as_of_seconds": round(statement.as_of_seconds, 4),
        },
    }


def _print(report: dict[str, Any]) -> None:
    say("")
    say(f"{'feature':<26} {'xfer/s (each round)':>22} {'mean':>8} {'x baseline':>11}")
    for name, figures in report["features"].items():
        each = ", ".join(str(rate) for rate in figures["transfers_per_second"])
        say(
            f"{name:<26} {each:>22} {figures['mean_transfers_per_second']:>8} "
            f"{figures['ratio_to_baseline']!s:>11}"
        )
    errors = sum(figures["errors"] or 0 for figures in report["scenarios"].values())
    clean = all(figures["books_clean"] for figures in report["scenarios"].values())
    say(f"errors {errors}; books {'clean after every scenario' if clean else 'NOT CLEAN'}")
    statement = report["statement"]
    say(
        f"statement of {statement['legs']:,} legs: {statement['statement_json_seconds']} s; "
        f"balance as of: {statement['balance_as_of_seconds']} s"
    )


if __name__ == "__main__":
    raise SystemExit(run_ledger_features_benchmark(DEFAULT_OUTPUT))
