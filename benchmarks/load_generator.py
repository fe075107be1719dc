"""The load generator of ``banking bench``: a separate process (``python -m
benchmarks.load_generator --load PLAN --result FILE``) so that it shares no event loop with the
server nor with the orchestrating process.

``plan.concurrency`` workers on aiohttp (uvloop when present), one request at a time each, send
a mixed money-moving workload for a warm-up and then a measured window; the figures of the
measured requests, with the CPU accounting over the same window, go back as JSON.

The workload: 70 % transfers between two accounts of one customer (with the customer's token),
15 % debits by the owner, 15 % credits by the teller; 20 % of each touch a hot account; amounts
from "1.00" to "9.99"; every request has its own ``reference_id``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp

from benchmarks.accounting import CpuFigures, cpu_figures, cpu_per_operation_ms, cpu_snapshot
from benchmarks.config import EXIT_INTERRUPTED, EXIT_OK
from benchmarks.processes import run_load_module
from benchmarks.seeding import CURRENCY, Customer, HotAccount
from benchmarks.stats import (
    KIND_CREDIT,
    KIND_DEBIT,
    KIND_TRANSFER,
    OUTCOME_DECLINED,
    OUTCOME_ERROR,
    OUTCOME_OK,
    ApiFigures,
    Sample,
    summarize,
)

# Workload mix (probabilities, not money): the rest after transfers and debits are credits.
TRANSFER_SHARE = 0.70
DEBIT_SHARE = 0.15
HOT_SHARE = 0.20
AMOUNT_CENTS_MIN = 100  # "1.00"
AMOUNT_CENTS_MAX = 999  # "9.99"

REQUEST_TIMEOUT_SECONDS = 30.0
CONNECT_STAGGER_SECONDS = 0.02  # between the first requests of two load workers (warm-up)
LOAD_TIMEOUT_MARGIN_SECONDS = 90.0
INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"


@dataclass(frozen=True)
class LoadPlan:
    """Everything the load generator needs; passed to its process as a JSON file."""

    base_url: str
    concurrency: int
    warmup_seconds: float
    duration_seconds: int
    run_id: str
    teller_token: str
    customers: tuple[Customer, ...]
    hot_accounts: tuple[HotAccount, ...]
    server_pid: int
    postgres_pid: int | None

    def to_json(self) -> str:
        """The plan as the load generator reads it."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LoadPlan:
        """The plan written by ``to_json``."""
        data = json.loads(text)
        return cls(
            base_url=str(data["base_url"]),
            concurrency=int(data["concurrency"]),
            warmup_seconds=float(data["warmup_seconds"]),
            duration_seconds=int(data["duration_seconds"]),
            run_id=str(data["run_id"]),
            teller_token=str(data["teller_token"]),
            customers=tuple(
                Customer(str(c["token"]), tuple(c["account_ids"]), tuple(c["cold_account_ids"]))
                for c in data["customers"]
            ),
            hot_accounts=tuple(
                HotAccount(str(h["account_id"]), int(h["owner"])) for h in data["hot_accounts"]
            ),
            server_pid=int(data["server_pid"]),
            postgres_pid=None if data["postgres_pid"] is None else int(data["postgres_pid"]),
        )


class Operation(NamedTuple):
    """One request to send."""

    kind: str
    path: str
    headers: dict[str, str]
    body: dict[str, str]


@dataclass
class Window:
    """The measured interval (perf_counter seconds); requests started before it are warm-up."""

    start: float
    end: float
    last_finish: float = 0.0


def run_load_process(plan: LoadPlan) -> ApiFigures:
    """Run the load generator in its own process (``python -m benchmarks.load_generator``) so
    it shares no event loop with the server nor with the orchestrating process."""
    result = run_load_module(
        "benchmarks.load_generator",
        plan.to_json(),
        timeout_seconds=plan.warmup_seconds + plan.duration_seconds + LOAD_TIMEOUT_MARGIN_SECONDS,
        what="the load generator",
    )
    return ApiFigures(**json.loads(result))


def generate_load(plan: LoadPlan) -> ApiFigures:
    """Drive the server for warm-up plus duration with ``plan.concurrency`` workers."""
    return _event_loop_runner()(_generate(plan))


def _event_loop_runner() -> Callable[[Any], ApiFigures]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.run

    def run(coroutine: Any) -> ApiFigures:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result: ApiFigures = runner.run(coroutine)
            return result

    return run


async def _generate(plan: LoadPlan) -> ApiFigures:
    connector = aiohttp.TCPConnector(limit=plan.concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(
        plan.base_url, connector=connector, timeout=timeout
    ) as session:
        start = time.perf_counter() + plan.warmup_seconds
        window = Window(start, start + plan.duration_seconds)
        per_worker: list[list[Sample]] = [[] for _ in range(plan.concurrency)]
        cpu: CpuFigures = {}
        await asyncio.gather(
            _measure_cpu(plan, window, cpu),
            *(
                _worker(session, plan, index, window, samples)
                for index, samples in enumerate(per_worker)
            ),
        )
    samples = [sample for worker in per_worker for sample in worker]
    figures = summarize(plan.concurrency, samples, max(window.last_finish, window.end) - start)
    figures.cpu.update(cpu)
    figures.cpu.update(cpu_per_operation_ms(cpu, figures.requests_per_second, "request"))
    return figures


async def _measure_cpu(plan: LoadPlan, window: Window, cpu: CpuFigures) -> None:
    await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
    before = cpu_snapshot(plan.server_pid, plan.postgres_pid)
    await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
    cpu.update(cpu_figures(before, cpu_snapshot(plan.server_pid, plan.postgres_pid)))


async def _worker(
    session: aiohttp.ClientSession,
    plan: LoadPlan,
    worker_index: int,
    window: Window,
    samples: list[Sample],
) -> None:
    rng = random.Random(f"{plan.run_id}-{worker_index}")  # noqa: S311 - workload, not secrets
    # Connect one by one: a burst of simultaneous connects is accepted by whichever server
    # worker wakes first, leaving the other workers idle for the whole run.
    await asyncio.sleep(worker_index * CONNECT_STAGGER_SECONDS)
    sequence = 0
    while (started := time.perf_counter()) < window.end:
        reference_id = f"bench-{plan.run_id}-{worker_index}-{sequence}"
        sequence += 1
        operation = choose_operation(plan, rng, reference_id)
        outcome, detail = await _send(session, operation)
        finished = time.perf_counter()
        if started >= window.start:
            samples.append(Sample(operation.kind, finished - started, outcome, detail))
            window.last_finish = max(window.last_finish, finished)


async def _send(session: aiohttp.ClientSession, operation: Operation) -> tuple[str, str]:
    try:
        async with session.post(
            operation.path, json=operation.body, headers=operation.headers
        ) as response:
            status = response.status
            body = await response.read()
    except (aiohttp.ClientError, TimeoutError) as error:
        return OUTCOME_ERROR, f"client {type(error).__name__}"
    if 200 <= status < 300:
        return OUTCOME_OK, str(status)
    code = _error_code(body)
    if status == 422 and code == INSUFFICIENT_FUNDS:
        return OUTCOME_DECLINED, code
    return OUTCOME_ERROR, f"{status} {code}"


def _error_code(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "unparsable body"


def choose_operation(plan: LoadPlan, rng: random.Random, reference_id: str) -> Operation:
    """70 % transfers between two accounts of one customer (with the customer's token), 15 %
    debits by the owner, 15 % credits by the teller; 20 % of each touch a hot account."""
    roll = rng.random()
    hot = rng.random() < HOT_SHARE
    amount = _random_amount(rng)
    if roll < TRANSFER_SHARE:
        return _transfer(plan, rng, hot, amount, reference_id)
    owner, account_id = _pick_account(plan, rng, hot)
    body = {
        "account_id": account_id,
        "amount": amount,
        "currency": CURRENCY,
        "reference_id": reference_id,
    }
    if roll < TRANSFER_SHARE + DEBIT_SHARE:
        customer = plan.customers[owner]
        return Operation(KIND_DEBIT, "/api/v1/transactions/debit", _auth(customer.token), body)
    return Operation(KIND_CREDIT, "/api/v1/transactions/credit", _auth(plan.teller_token), body)


def _transfer(
    plan: LoadPlan, rng: random.Random, hot: bool, amount: str, reference_id: str
) -> Operation:
    if hot:
        hot_account = rng.choice(plan.hot_accounts)
        owner = hot_account.owner
        other = rng.choice(plan.customers[owner].cold_account_ids)
        pair = [hot_account.account_id, other]
        rng.shuffle(pair)
        source, destination = pair
    else:
        owner = rng.randrange(len(plan.customers))
        source, destination = rng.sample(plan.customers[owner].cold_account_ids, 2)
    body = {
        "source_account_id": source,
        "destination_account_id": destination,
        "amount": amount,
        "currency": CURRENCY,
        "reference_id": reference_id,
    }
    return Operation(
        KIND_TRANSFER, "/api/v1/transactions/transfer", _auth(plan.customers[owner].token), body
    )


def _pick_account(plan: LoadPlan, rng: random.Random, hot: bool) -> tuple[int, str]:
    if hot:
        hot_account = rng.choice(plan.hot_accounts)
        return hot_account.owner, hot_account.account_id
    owner = rng.randrange(len(plan.customers))
    return owner, rng.choice(plan.customers[owner].cold_account_ids)


def _random_amount(rng: random.Random) -> str:
    cents = rng.randint(AMOUNT_CENTS_MIN, AMOUNT_CENTS_MAX)
    return f"{cents // 100}.{cents % 100:02d}"


_AUTH_HEADERS: dict[str, dict[str, str]] = {}


def _auth(token: str) -> dict[str, str]:
    headers = _AUTH_HEADERS.get(token)
    if headers is None:
        headers = _AUTH_HEADERS[token] = {"Authorization": f"Bearer {token}"}
    return headers


def main(arguments: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.load_generator --load PLAN --result FILE``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load_generator",
        description="The load generator of `banking bench` (started by it; not for direct use).",
    )
    parser.add_argument("--load", type=Path, required=True, help="the plan (JSON) to run")
    parser.add_argument("--result", type=Path, required=True, help="where to write figures")
    options = parser.parse_args(arguments)
    plan = LoadPlan.from_json(options.load.read_text())
    try:
        figures = generate_load(plan)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED  # the orchestrating process reports and cleans up
    options.result.write_text(json.dumps(asdict(figures)))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
