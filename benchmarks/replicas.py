"""Read replicas under the benchmark's mixed load (issue 16): the share of reads the replicas
serve, and the primary's CPU with and without them, in one run (docs/replicas.md).

One run, on the PostgreSQL named by ``BANKING_PG_ADMIN_DSN`` with its two streaming replicas
(``scripts/services/postgres.sh start-replicas``, whose URLs ``BANKING_PG_REPLICA_URLS``
gives): a fresh database ``bench_replicas``, seeded like ``banking bench``; then the same
bounded mixed load twice against ``banking serve`` (one process; the balance cache off, so that
balance reads are routable), first without ``DATABASE_REPLICA_URLS``, then with both replicas.
The load: ``--concurrency`` clients for ``--seconds`` each, every request one of a debit by a
"writer" customer (30 %), a balance read (35 %) or a history read (35 %) of a random customer's
own account; half the customers write, half only read (a reader is never sticky, a writer is
for ``REPLICA_STICKY_SECONDS`` after each debit). Reported per round: requests and reads per
second, errors, the reads served by replicas (``banking_db_reads_total`` from ``/metrics``) and
the primary's CPU seconds per 1,000 requests (utime + stime of the postmaster and its children
from /proc, before and after; the replicas are other postmasters and are not counted, their
WAL senders on the primary are). Everything listens on 127.0.0.1; every wait is bounded.

    .venv/bin/python -m benchmarks.replicas [--concurrency 16] [--seconds 15] [--output FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy.engine import make_url

from banking.storage.migrate import upgrade
from benchmarks.accounting import cpu_snapshot
from benchmarks.config import EXIT_FAILED, EXIT_OK, EXIT_UNUSABLE, LOCAL_HOSTS, say
from benchmarks.databases import drop_databases, recreate_databases
from benchmarks.processes import ServerSettings, free_port, start_server, stop_server
from benchmarks.seeding import JWT_SECRET_LENGTH, SeededBank, check_books, seed_bank

DATABASE = "bench_replicas"
DEFAULT_OUTPUT = Path("bench-results/replicas.json")
CONCURRENCY_DEFAULT = 16
SECONDS_DEFAULT = 15.0
SECONDS_MAX = 600.0
CONCURRENCY_MAX = 128
WRITE_SHARE = 0.30
BALANCE_SHARE = 0.35  # the rest are history reads
REQUEST_TIMEOUT_SECONDS = 10.0
DEBIT_AMOUNT = "0.01"


@dataclass(frozen=True)
class ReplicaServerSettings(ServerSettings):
    """``banking serve`` with (or without) read replicas and without the balance cache."""

    replica_urls: tuple[str, ...] = ()

    def environment(self) -> dict[str, str]:
        environment = {**super().environment(), "BALANCE_CACHE_ENABLED": "false"}
        environment.pop("DATABASE_REPLICA_URLS", None)
        if self.replica_urls:
            environment["DATABASE_REPLICA_URLS"] = json.dumps(list(self.replica_urls))
        return environment


@dataclass
class Round:
    requests: int = 0
    reads: int = 0
    errors: int = 0
    wall_seconds: float = 0.0
    reads_on_replicas: float = 0.0
    reads_counted: float = 0.0
    primary_cpu_seconds: float = 0.0

    def figures(self) -> dict[str, Any]:
        counted = self.reads_counted or 1.0
        return {
            "requests": self.requests,
            "errors": self.errors,
            "requests_per_second": round(self.requests / self.wall_seconds, 1),
            "reads_per_second": round(self.reads / self.wall_seconds, 1),
            "reads_on_replicas_share": round(self.reads_on_replicas / counted, 3),
            "primary_cpu_seconds": round(self.primary_cpu_seconds, 2),
            "primary_cpu_seconds_per_1000_requests": round(
                1000 * self.primary_cpu_seconds / max(self.requests, 1), 3
            ),
        }


async def _reads_by_target(session: aiohttp.ClientSession, base_url: str) -> dict[str, float]:
    async with session.get(f"{base_url}/metrics") as response:
        text = await response.text()
    found = re.findall(r'^banking_db_reads_total\{target="(\w+)"\} (\S+)$', text, re.MULTILINE)
    return {target: float(value) for target, value in found}


async def _load(base_url: str, bank: SeededBank, concurrency: int, seconds: float) -> Round:
    result = Round()
    writers = bank.customers[: len(bank.customers) // 2]
    deadline = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)

    async def client(session: aiohttp.ClientSession, seed: int) -> None:
        chance = random.Random(seed)  # noqa: S311 - a workload mix, not a secret
        while time.monotonic() < deadline:
            draw = chance.random()
            customer = chance.choice(writers if draw < WRITE_SHARE else bank.customers)
            account_id = chance.choice(customer.account_ids)
            headers = {"Authorization": f"Bearer {customer.token}"}
            if draw < WRITE_SHARE:
                body = {"account_id": account_id, "amount": DEBIT_AMOUNT, "currency": "USD"}
                call = session.post(
                    f"{base_url}/api/v1/transactions/debit", json=body, headers=headers
                )
            elif draw < WRITE_SHARE + BALANCE_SHARE:
                call = session.get(
                    f"{base_url}/api/v1/accounts/{account_id}/balance", headers=headers
                )
            else:
                call = session.get(
                    f"{base_url}/api/v1/accounts/{account_id}/transactions?page_size=20",
                    headers=headers,
                )
            try:
                async with call as response:
                    await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            result.requests += 1
            result.reads += draw >= WRITE_SHARE
            result.errors += not ok

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        before = await _reads_by_target(session, base_url)
        started = time.perf_counter()
        await asyncio.gather(*(client(session, seed) for seed in range(concurrency)))
        result.wall_seconds = time.perf_counter() - started
        after = await _reads_by_target(session, base_url)
    result.reads_on_replicas = after.get("replica", 0.0) - before.get("replica", 0.0)
    result.reads_counted = sum(after.values()) - sum(before.values())
    return result


def _round(
    settings: ReplicaServerSettings,
    bank: SeededBank,
    postmaster_pid: int,
    concurrency: int,
    seconds: float,
    log_dir: Path,
) -> Round:
    server = start_server(settings, log_dir)
    try:
        before = cpu_snapshot(server.pid, postmaster_pid)
        result = asyncio.run(_load(server.base_url, bank, concurrency, seconds))
        after = cpu_snapshot(server.pid, postmaster_pid)
    finally:
        stop_server(server)
    result.primary_cpu_seconds = (after.postgres_seconds or 0.0) - (before.postgres_seconds or 0.0)
    return result


def run_replica_benchmark(
    output: Path = DEFAULT_OUTPUT,
    *,
    concurrency: int = CONCURRENCY_DEFAULT,
    seconds: float = SECONDS_DEFAULT,
) -> int:
    """Both rounds and the JSON figures; the exit code (0 ok, 1 failed, 2 could not start)."""
    admin_dsn = os.environ.get("BANKING_PG_ADMIN_DSN", "")
    replica_urls = json.loads(os.environ.get("BANKING_PG_REPLICA_URLS", "[]") or "[]")
    if not admin_dsn or len(replica_urls) < 2:
        say(
            "bench: --replicas needs BANKING_PG_ADMIN_DSN and two BANKING_PG_REPLICA_URLS: "
            'eval "$(scripts/services/all.sh start postgres postgres-replicas)"'
        )
        return EXIT_UNUSABLE
    admin_url = make_url(admin_dsn)
    if admin_url.host not in LOCAL_HOSTS:
        say(f"bench: benchmarks only target 127.0.0.1, not {admin_url.host!r}")
        return EXIT_UNUSABLE
    if not (1 <= concurrency <= CONCURRENCY_MAX and 0 < seconds <= SECONDS_MAX):
        say(f"bench: concurrency 1..{CONCURRENCY_MAX}, seconds up to {SECONDS_MAX}")
        return EXIT_UNUSABLE
    database_url = admin_url.set(drivername="postgresql+asyncpg", database=DATABASE)
    api_url = database_url.render_as_string(hide_password=False)
    replicas = tuple(f"{url.rpartition('/')[0]}/{DATABASE}" for url in replica_urls[:2])
    jwt_secret = secrets.token_urlsafe(JWT_SECRET_LENGTH)[:JWT_SECRET_LENGTH]
    try:
        facts = asyncio.run(recreate_databases(admin_url, [DATABASE]))
        if facts.postmaster_pid is None:
            say("bench: the primary's postmaster is not a process on this machine")
            return EXIT_UNUSABLE
        upgrade(api_url)
        say(f"bench: seeding {DATABASE}")
        bank = asyncio.run(seed_bank(api_url, jwt_secret))
        time.sleep(1.0)  # the replicas replay the seeding
        rounds = {}
        for name, urls in (("without_replicas", ()), ("with_replicas", replicas)):
            settings = ReplicaServerSettings(
                api_url, jwt_secret, 1, 20, free_port(), replica_urls=urls
            )
            say(f"bench: {name}: {concurrency} clients for {seconds:g} s")
            rounds[name] = _round(
                settings, bank, facts.postmaster_pid, concurrency, seconds, output.parent
            ).figures()
            say(f"bench: {name}: {rounds[name]}")
        books = asyncio.run(check_books(api_url))
    finally:
        asyncio.run(drop_databases(admin_url, [DATABASE]))
    report = {
        "benchmark": "replicas",
        "concurrency": concurrency,
        "seconds": seconds,
        "mix": {
            "debit": WRITE_SHARE,
            "balance": BALANCE_SHARE,
            "history": 1 - WRITE_SHARE - BALANCE_SHARE,
        },
        "books_clean": books.clean,
        "rounds": rounds,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    say(f"bench: figures in {output}")
    failed = not books.clean or any(r["errors"] for r in rounds.values())
    return EXIT_FAILED if failed else EXIT_OK


def main(arguments: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.replicas", description=__doc__)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY_DEFAULT)
    parser.add_argument("--seconds", type=float, default=SECONDS_DEFAULT)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    options = parser.parse_args(arguments)
    return run_replica_benchmark(
        options.output, concurrency=options.concurrency, seconds=options.seconds
    )


if __name__ == "__main__":
    raise SystemExit(main())
