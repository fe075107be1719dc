"""Redis figures on PostgreSQL, all in one run (docs/redis.md):

* balance-read throughput and latency with no cache, the in-memory cache and the Redis cache
  (and the Redis cache with the Redis rate limiter counting every request);
* transfer throughput with the per-account lock guard off and on (ACCOUNT_LOCKS=redis), over
  many accounts and over a few hot ones.

Each scenario runs a real ``banking serve`` subprocess (one worker) on a fresh port against one
seeded database, and drives it with an aiohttp loop: CONCURRENCY clients for DURATION seconds
after a short warm-up. Everything targets 127.0.0.1 and stops by itself.

    eval "$(scripts/services/postgres.sh start)"; eval "$(scripts/services/redis.sh start)"
    .venv/bin/python -m benchmarks.load.redis_load [--duration 15] [--concurrency 16] [--out FILE]

Needs BANKING_PG_URL, BANKING_PG_ADMIN_DSN and BANKING_REDIS_URL (the scripts print them).
The database ``redis_load`` on that server is dropped and re-created.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import secrets
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from banking.bootstrap import build_container
from banking.config import Settings
from banking.container import Container
from banking.domain.roles import Actor, Role
from banking.ledger.reconcile import reconcile
from banking.storage.migrate import upgrade
from benchmarks.databases import recreate_databases
from benchmarks.processes import Service, free_port
from benchmarks.seeding import create_user, open_funded_account, token
from benchmarks.stats import percentile_ms

DATABASE = "redis_load"
READ_ACCOUNTS = 100
SPREAD_ACCOUNTS = 100
HOT_ACCOUNTS = 4
WARMUP_SECONDS = 2.0
STARTUP_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0
REQUEST_TIMEOUT_SECONDS = 30.0
SEED_FUNDS = Decimal("1000000.00")


@dataclass
class Result:
    scenario: str
    settings: dict[str, str]
    requests: int
    errors: dict[str, int]
    seconds: float
    per_second: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    extra: dict[str, Any] = field(default_factory=dict)


async def prepare_database(admin_dsn: str, pg_url: str) -> str:
    """The database ``DATABASE``, dropped, created and migrated; its URL."""
    await recreate_databases(make_url(admin_dsn), [DATABASE])
    url = pg_url.rpartition("/")[0] + "/" + DATABASE
    await asyncio.to_thread(upgrade, url)  # alembic runs its own event loop
    return url


@dataclass
class Seed:
    """The seeded users' tokens and the accounts of each kind of scenario."""

    tokens: list[str]  # one teller per client: per-user rate limits apply per client
    read_accounts: list[str]
    spread_accounts: list[str]
    hot_accounts: list[str]


async def seed(settings: Settings, clients: int) -> Seed:
    """One teller per client, one customer, and the funded accounts of the scenarios."""
    container = build_container(settings)
    try:
        tellers = [
            await create_user(container, f"load-teller-{index}", Role.TELLER)
            for index in range(clients)
        ]
        customer = await create_user(container, "load-customer", Role.CUSTOMER)
        return Seed(
            tokens=[token(container, teller) for teller in tellers],
            read_accounts=await _open_funded(container, tellers[0], customer, READ_ACCOUNTS),
            spread_accounts=await _open_funded(container, tellers[0], customer, SPREAD_ACCOUNTS),
            hot_accounts=await _open_funded(container, tellers[0], customer, HOT_ACCOUNTS),
        )
    finally:
        await container.close()


async def _open_funded(
    container: Container, teller: Actor, customer: Actor, count: int
) -> list[str]:
    return [
        str(await open_funded_account(container, teller, customer.user_id, SEED_FUNDS, "USD"))
        for _ in range(count)
    ]


class Server:
    """``banking serve`` (one worker) on free ports, started and ready."""

    def __init__(self, base_env: dict[str, str], extra: dict[str, str], log_dir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.service = Service.start(
            "the server",
            [
                *(sys.executable, "-m", "banking.cli", "serve"),
                *("--port", str(self.port), "--grpc-port", str(free_port())),
            ],
            environment={**base_env, **extra},
            log_path=log_dir / f"serve-{self.port}.log",
            ready_url=f"{self.base}/ready",
            timeout_seconds=STARTUP_TIMEOUT_SECONDS,
        )

    async def metric(self, session: aiohttp.ClientSession, name: str) -> dict[str, float]:
        async with session.get(f"{self.base}/metrics") as response:
            text = await response.text()
        found: dict[str, float] = {}
        for line in text.splitlines():
            match = re.match(rf"^{name}(\{{[^}}]*\}})? ([0-9.e+-]+)$", line)
            if match:
                found[match.group(1) or ""] = float(match.group(2))
        return found

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not stop in time."""
        self.service.stop(STOP_TIMEOUT_SECONDS)


async def drive(
    session: aiohttp.ClientSession,
    request: Any,
    *,
    concurrency: int,
    duration: float,
) -> tuple[list[float], dict[str, int], float]:
    """``concurrency`` clients send ``request(session, rng)`` back to back: WARMUP_SECONDS not
    measured, then ``duration`` seconds measured. Returns latencies, errors, elapsed."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    measuring_from = time.monotonic() + WARMUP_SECONDS
    stop_at = measuring_from + duration

    async def client(index: int) -> None:
        rng = random.Random(index)  # noqa: S311 - load shape, not security
        while True:
            started = time.monotonic()
            if started >= stop_at:
                return
            outcome = await request(session, rng, index)
            ended = time.monotonic()
            if started >= measuring_from and ended <= stop_at:
                latencies.append(ended - started)
                if outcome != "ok":
                    errors[outcome] = errors.get(outcome, 0) + 1

    await asyncio.gather(*[client(index) for index in range(concurrency)])
    return latencies, errors, duration


async def run_scenario(
    name: str,
    extra_env: dict[str, str],
    base_env: dict[str, str],
    log_dir: Path,
    make_request: Any,
    *,
    concurrency: int,
    duration: float,
) -> Result:
    server = await asyncio.to_thread(Server, base_env, extra_env, log_dir)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    try:
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            latencies, errors, seconds = await drive(
                session, make_request(server.base), concurrency=concurrency, duration=duration
            )
            cache = await server.metric(session, "banking_cache_requests_total")
            lock_wait_sum = await server.metric(session, "banking_account_lock_wait_seconds_sum")
            lock_wait_count = await server.metric(
                session, "banking_account_lock_wait_seconds_count"
            )
    finally:
        server.stop()
    ordered = sorted(latencies)
    extra: dict[str, Any] = {}
    hits = sum(v for k, v in cache.items() if 'result="hit"' in k)
    lookups = sum(cache.values())
    if lookups:
        extra["cache_hit_ratio"] = round(hits / lookups, 4)
    if lock_wait_count.get(""):
        extra["lock_wait_mean_ms"] = round(
            1000 * lock_wait_sum.get("", 0.0) / lock_wait_count[""], 3
        )
    result = Result(
        scenario=name,
        settings=extra_env,
        requests=len(latencies),
        errors=errors,
        seconds=seconds,
        per_second=round(len(latencies) / seconds, 1),
        p50_ms=_milliseconds(ordered, 0.50),
        p95_ms=_milliseconds(ordered, 0.95),
        p99_ms=_milliseconds(ordered, 0.99),
        extra=extra,
    )
    print(
        f"  {name:<44} {result.per_second:>8.1f}/s  p50 {result.p50_ms:>7.2f} ms  "
        f"p99 {result.p99_ms:>7.2f} ms  errors {sum(errors.values())}  {extra}",
        flush=True,
    )
    return result


def _milliseconds(ordered: list[float], fraction: float) -> float:
    value = percentile_ms(ordered, fraction)
    return float("nan") if value is None else value


def bearer(tokens: list[str], index: int) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[index % len(tokens)]}"}


def summarize(results: list[Result]) -> list[dict[str, Any]]:
    """Per scenario, in first-seen order: the median of each figure over the rounds."""
    by_name: dict[str, list[Result]] = {}
    for result in results:
        by_name.setdefault(result.scenario, []).append(result)
    return [
        {
            "scenario": name,
            "per_second": round(statistics.median(r.per_second for r in runs), 1),
            "p50_ms": round(statistics.median(r.p50_ms for r in runs), 2),
            "p99_ms": round(statistics.median(r.p99_ms for r in runs), 2),
            "errors": sum(sum(r.errors.values()) for r in runs),
            "rounds": len(runs),
        }
        for name, runs in by_name.items()
    ]


def balance_reads(tokens: list[str], accounts: list[str]) -> Any:
    def make(base: str) -> Any:
        async def request(session: aiohttp.ClientSession, rng: random.Random, index: int) -> str:
            account = rng.choice(accounts)
            async with session.get(
                f"{base}/api/v1/accounts/{account}/balance", headers=bearer(tokens, index)
            ) as response:
                await response.read()
                return "ok" if response.status == 200 else str(response.status)

        return request

    return make


def transfers(tokens: list[str], accounts: list[str]) -> Any:
    def make(base: str) -> Any:
        async def request(session: aiohttp.ClientSession, rng: random.Random, index: int) -> str:
            source, destination = rng.sample(accounts, 2)
            body = {
                "source_account_id": source,
                "destination_account_id": destination,
                "amount": f"{rng.randint(1, 1000) / 100:.2f}",
                "currency": "USD",
            }
            async with session.post(
                f"{base}/api/v1/transactions/transfer", json=body, headers=bearer(tokens, index)
            ) as response:
                payload = await response.read()
                if response.status == 200:
                    return "ok"
                try:
                    return str(json.loads(payload)["error"]["code"])
                except (ValueError, KeyError):
                    return str(response.status)

        return request

    return make


async def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("bench-results/redis-latest.json"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", default="", help="run only scenarios whose name contains this")
    args = parser.parse_args()
    try:
        pg_url = os.environ["BANKING_PG_URL"]
        admin_dsn = os.environ["BANKING_PG_ADMIN_DSN"]
        redis_url = os.environ["BANKING_REDIS_URL"]
    except KeyError as missing:
        print(f"{missing} is not set: start the services with scripts/services/*.sh")
        return 2

    database_url = await prepare_database(admin_dsn, pg_url)
    jwt_secret = secrets.token_urlsafe(48)
    settings = Settings(
        database_url=database_url, jwt_secret=SecretStr(jwt_secret), rate_limit_enabled=False
    )
    print(f"seeding {DATABASE} ...", flush=True)
    data = await seed(settings, args.concurrency)
    base_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "RATE_LIMIT"))},
        "DATABASE_URL": database_url,
        "JWT_SECRET": jwt_secret,
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_ENABLED": "false",
        "DATA_DIR": str(args.out.parent / "data"),
    }
    base_env.pop("BALANCE_CACHE_ENABLED", None)
    base_env.pop("ACCOUNT_LOCKS", None)
    log_dir = args.out.parent / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    run = {"concurrency": args.concurrency, "duration": args.duration, "log_dir": log_dir}

    reads = balance_reads(data.tokens, data.read_accounts)
    read_scenarios = [
        ("balance read, no cache", {"BALANCE_CACHE_ENABLED": "false"}),
        ("balance read, in-memory cache", {}),
        ("balance read, Redis cache", {"REDIS_URL": redis_url}),
        (
            "balance read, Redis cache + Redis rate limiter",
            {
                "REDIS_URL": redis_url,
                "RATE_LIMIT_ENABLED": "true",
                "RATE_LIMIT_DEFAULT": "1000/second",  # per user; each client is one user
            },
        ),
    ]
    transfer_scenarios = [
        (f"transfer, {SPREAD_ACCOUNTS} accounts, lock guard off", data.spread_accounts, "none"),
        (f"transfer, {SPREAD_ACCOUNTS} accounts, lock guard on", data.spread_accounts, "redis"),
        (f"transfer, {HOT_ACCOUNTS} hot accounts, lock guard off", data.hot_accounts, "none"),
        (f"transfer, {HOT_ACCOUNTS} hot accounts, lock guard on", data.hot_accounts, "redis"),
    ]
    read_scenarios = [item for item in read_scenarios if args.only in item[0]]
    transfer_scenarios = [item for item in transfer_scenarios if args.only in item[0]]
    print(f"{args.concurrency} clients, {args.duration:g} s each (+{WARMUP_SECONDS:g} s warm-up)")
    results: list[Result] = []
    # Rounds interleave the scenarios, so a noisy minute on the machine hits all of them.
    for round_number in range(1, args.rounds + 1):
        print(f"round {round_number}/{args.rounds}", flush=True)
        for name, extra in read_scenarios:
            results.append(await run_scenario(name, extra, base_env, make_request=reads, **run))
        for name, accounts, locks in transfer_scenarios:
            extra = {"REDIS_URL": redis_url, "ACCOUNT_LOCKS": locks}
            make = transfers(data.tokens, accounts)
            results.append(await run_scenario(name, extra, base_env, make_request=make, **run))
    summary = summarize(results)
    print(f"median of {args.rounds} rounds:")
    for row in summary:
        print(
            f"  {row['scenario']:<48} {row['per_second']:>8.1f}/s  p50 {row['p50_ms']:>7.2f} ms"
            f"  p99 {row['p99_ms']:>7.2f} ms  errors {row['errors']}"
        )

    container = build_container(settings)
    try:
        report = await reconcile(container.unit_of_work)
    finally:
        await container.close()
    print(f"reconcile: {'clean' if report.clean else report.problems}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "at": datetime.now(UTC).isoformat(),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "concurrency": args.concurrency,
                "duration_seconds": args.duration,
                "reconcile_clean": report.clean,
                "rounds": args.rounds,
                "summary": summary,
                "results": [asdict(result) for result in results],
            },
            indent=2,
        )
    )
    print(f"figures written to {args.out}")
    return 0 if report.clean else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
