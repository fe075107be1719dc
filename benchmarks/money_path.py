"""``banking bench --money-path``: the money path's scenarios of issue 14 in one run, each next
to pgbench on the same PostgreSQL server (docs/benchmarks.md, "The money path").

One run, on fresh databases of its own: random 1.00 transfers among ``ACCOUNTS_DEFAULT`` funded
accounts (by a teller, so any pair is allowed) at one concurrency (32, or ``BENCH_CONCURRENCY``),
with the default mode's duration settings, through

1. REST single transfers, group commit off;
2. REST batches of ``BATCH_ITEMS`` transfers (``POST /api/v1/transactions/batch``), same server;
3. gRPC single transfers (``TransferBetweenAccounts``), ``BENCH_WORKERS`` ``banking grpc``
   processes on ports of their own, the clients spread over them;
4. gRPC batches of ``BATCH_ITEMS`` (``BatchMovements``), same processes;
5. REST single transfers with group commit on (the server restarted with ``GROUP_COMMIT=true``);
6. pgbench TPC-B-like at the same concurrency;
7. the embedded default: ``banking serve`` on SQLite (no ``DATABASE_URL``, a ``DATA_DIR`` of its
   own, one process), REST single transfers.

Each reports transfers/s, requests/s, p50/p95/p99 latency per request, errors, declines, CPU
and each server process's peak RSS (``VmHWM``, reset before the scenario), the ratio
transfers/s / pgbench tps and the issue's target next to it (never an assertion). The books are
reconciled after every scenario; books that do not reconcile, or errors in a scenario whose
endpoint exists, fail the run (exit 1). A scenario whose endpoint is missing (every request
404 or UNIMPLEMENTED) is reported as not available with its error count.

The load runs in a process of its own (``python -m benchmarks.money_path --load PLAN --result
FILE``), as in the default mode.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import random
import secrets
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import aiohttp
import grpc

from banking.domain.roles import Role
from banking.grpc.gen import transactions_pb2, transactions_pb2_grpc
from benchmarks.accounting import cpu_figures, cpu_snapshot, machine_busy_cores
from benchmarks.config import (
    CONCURRENCY_MAX,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    BenchConfig,
    BenchFailed,
    BenchUnusable,
    exit_code_of,
    read_config,
    say,
)
from benchmarks.databases import PostgresFacts, drop_databases, recreate_databases
from benchmarks.pgbench import PGBENCH_SCALE, PgbenchTarget
from benchmarks.processes import (
    SERVER_READY_TIMEOUT_SECONDS,
    SERVER_STOP_TIMEOUT_SECONDS,
    Server,
    ServerSettings,
    Service,
    free_port,
    run_load_module,
    start_server,
    stop_server,
)
from benchmarks.stats import ERROR_DETAILS_MAX, percentile_ms

# The load process imports only what it sends with: the service's composition root (through
# ``benchmarks.seeding``, ``benchmarks.load_generator`` and ``benchmarks.report``) takes seconds
# to import on a busy machine, so the orchestrator imports those where it uses them and these
# few are the load generator's own values, not imported from it.
CURRENCY = "USD"
REQUEST_TIMEOUT_SECONDS = 30.0
CONNECT_STAGGER_SECONDS = 0.02  # between the first requests of two clients (warm-up)
ACCOUNTS_PER_CUSTOMER = 5
JWT_SECRET_LENGTH = 48
RECONCILE_PROBLEMS_REPORTED_MAX = 20

DEFAULT_OUTPUT = Path("bench-results/money-path.json")
CONCURRENCY_DEFAULT = 32
ACCOUNTS_DEFAULT = 100
ACCOUNTS_MIN = 2
ACCOUNTS_MAX = 10_000
BATCH_ITEMS = 100
TRANSFER_AMOUNT = "1.00"
LOAD_TIMEOUT_MARGIN_SECONDS = 120.0
IDLE_CHECK_SECONDS = 2.0
IDLE_CHECK_CORES_MAX = 0.25
SQLITE_WORKERS = 1  # the embedded default: `banking serve` without --workers
BYTES_PER_MB = 1024 * 1024
GRPC_POLL_SECONDS = 0.2
WARMUP_SECONDS_MAX = 60.0

DOOR_REST = "rest"
DOOR_GRPC = "grpc"
REST_TRANSFER_PATH = "/api/v1/transactions/transfer"
REST_BATCH_PATH = "/api/v1/transactions/batch"
INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
ITEM_COMPLETED = "completed"
ITEM_FAILED = "failed"  # a decline stored as a failed leg
NOT_AVAILABLE_STATUSES = ("404 ", "405 ")  # REST: no such route (yet)
GRPC_UNIMPLEMENTED = "UNIMPLEMENTED"

# The targets (figures to read next to the results, never assertions).
TARGET_REST_SINGLE_RATIO_MIN = 0.3
TARGET_GROUP_COMMIT_RATIO_MIN = 0.6
TARGET_BATCH_RATIO_MIN = 3.0
TARGET_P99_MS_MAX = 50.0
TARGET_GRPC_TO_REST_MIN = 1.2
TARGET_PEAK_RSS_MB_MAX = 200.0

SCENARIO_REST_SINGLE = "rest_single"
SCENARIO_REST_GROUP_COMMIT = "rest_single_group_commit"
SCENARIO_REST_BATCH = "rest_batch"
SCENARIO_GRPC_SINGLE = "grpc_single"
SCENARIO_GRPC_BATCH = "grpc_batch"
SCENARIO_SQLITE_SINGLE = "sqlite_rest_single"
SCENARIO_PGBENCH = "pgbench"
SCENARIOS = (
    SCENARIO_REST_SINGLE,
    SCENARIO_REST_GROUP_COMMIT,
    SCENARIO_REST_BATCH,
    SCENARIO_GRPC_SINGLE,
    SCENARIO_GRPC_BATCH,
    SCENARIO_SQLITE_SINGLE,
    SCENARIO_PGBENCH,
)


@dataclass(frozen=True)
class MoneyPathOptions:
    """The sizes of one run: the default mode's settings plus the concurrency and accounts."""

    config: BenchConfig
    concurrency: int
    accounts: int

    @property
    def workers(self) -> int:
        """REST workers, and gRPC processes, on PostgreSQL."""
        return self.config.workers


# --- the load generator (a process of its own) ---------------------------------------------


@dataclass(frozen=True)
class MoneyPathPlan:
    """One scenario's load; passed to the load process as JSON."""

    door: str  # DOOR_REST or DOOR_GRPC
    batch_items: int  # 1: single transfers
    targets: tuple[str, ...]  # REST base URLs or gRPC host:port; clients spread over them
    concurrency: int
    warmup_seconds: float
    duration_seconds: float
    run_id: str
    token: str
    account_ids: tuple[str, ...]
    server_pids: tuple[int, ...]
    postgres_pid: int | None

    def to_json(self) -> str:
        """The plan as the load process reads it."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> MoneyPathPlan:
        """The plan written by ``to_json``."""
        data = json.loads(text)
        return cls(
            door=str(data["door"]),
            batch_items=int(data["batch_items"]),
            targets=tuple(str(t) for t in data["targets"]),
            concurrency=int(data["concurrency"]),
            warmup_seconds=float(data["warmup_seconds"]),
            duration_seconds=float(data["duration_seconds"]),
            run_id=str(data["run_id"]),
            token=str(data["token"]),
            account_ids=tuple(str(a) for a in data["account_ids"]),
            server_pids=tuple(int(p) for p in data["server_pids"]),
            postgres_pid=None if data["postgres_pid"] is None else int(data["postgres_pid"]),
        )


@dataclass
class Window:
    """The measured interval (perf_counter seconds); requests started before it are warm-up."""

    start: float
    end: float
    last_finish: float = 0.0


@dataclass(frozen=True)
class Outcome:
    """One request's result: its transfers by outcome, and what went wrong (None: answered)."""

    completed: int = 0
    declined: int = 0
    failed_items: int = 0
    error: str | None = None


@dataclass(frozen=True)
class RequestSample:
    """One measured request."""

    latency_seconds: float
    outcome: Outcome


@dataclass
class LoadFigures:
    """What the load process measured over the window."""

    concurrency: int
    batch_items: int
    measured_seconds: float
    requests: int
    requests_per_second: float
    transfers: int
    transfers_per_second: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    errors: int
    error_requests: int
    declined: int
    error_details: dict[str, int]
    cpu: dict[str, Any] = field(default_factory=dict)


def summarize_requests(
    plan: MoneyPathPlan, samples: Sequence[RequestSample], measured_seconds: float
) -> LoadFigures:
    """Rates (per request and per transfer), latency per request (answered requests only),
    errors: failed requests plus items a batch rejected."""
    seconds = max(measured_seconds, 1e-9)
    answered = sorted(s.latency_seconds for s in samples if s.outcome.error is None)
    errors = Counter(s.outcome.error for s in samples if s.outcome.error is not None)
    failed_items = sum(s.outcome.failed_items for s in samples)
    if failed_items:
        errors["batch item rejected"] += failed_items
    transfers = sum(s.outcome.completed for s in samples)
    return LoadFigures(
        concurrency=plan.concurrency,
        batch_items=plan.batch_items,
        measured_seconds=round(measured_seconds, 3),
        requests=len(samples),
        requests_per_second=round(len(samples) / seconds, 1),
        transfers=transfers,
        transfers_per_second=round(transfers / seconds, 1),
        p50_ms=percentile_ms(answered, 0.50),
        p95_ms=percentile_ms(answered, 0.95),
        p99_ms=percentile_ms(answered, 0.99),
        errors=sum(errors.values()),
        error_requests=sum(1 for s in samples if s.outcome.error is not None),
        declined=sum(s.outcome.declined for s in samples),
        error_details={str(k): v for k, v in errors.most_common(ERROR_DETAILS_MAX)},
    )


Send = Callable[[list[dict[str, str]]], Awaitable[Outcome]]


def transfer_items(
    plan: MoneyPathPlan, rng: random.Random, reference: str, count: int
) -> list[dict[str, str]]:
    """``count`` transfers of 1.00 between two distinct random accounts of the plan."""
    items = []
    for index in range(count):
        source, destination = rng.sample(plan.account_ids, 2)
        items.append(
            {
                "source_account_id": source,
                "destination_account_id": destination,
                "amount": TRANSFER_AMOUNT,
                "currency": CURRENCY,
                "reference_id": f"{reference}-{index}",
            }
        )
    return items


async def generate_money_path_load(plan: MoneyPathPlan) -> LoadFigures:
    """Drive the targets for warm-up plus duration with ``plan.concurrency`` clients."""
    start = time.perf_counter() + plan.warmup_seconds
    window = Window(start, start + plan.duration_seconds)
    per_client: list[list[RequestSample]] = [[] for _ in range(plan.concurrency)]
    cpu: dict[str, Any] = {}
    async with contextlib.AsyncExitStack() as stack:
        senders = [
            await stack.enter_async_context(_sender(plan, index))
            for index in range(plan.concurrency)
        ]
        await asyncio.gather(
            _measure_cpu(plan, window, cpu),
            *(
                _client(plan, index, senders[index], window, samples)
                for index, samples in enumerate(per_client)
            ),
        )
    samples = [sample for client in per_client for sample in client]
    figures = summarize_requests(plan, samples, max(window.last_finish, window.end) - start)
    figures.cpu = _with_cpu_per_transfer(cpu, figures.transfers_per_second)
    return figures


async def _client(
    plan: MoneyPathPlan, index: int, send: Send, window: Window, samples: list[RequestSample]
) -> None:
    rng = random.Random(f"{plan.run_id}-{index}")  # noqa: S311 - workload, not secrets
    await asyncio.sleep(index * CONNECT_STAGGER_SECONDS)  # see load_generator._worker
    sequence = 0
    while (started := time.perf_counter()) < window.end:
        reference = f"mp-{plan.run_id}-{index}-{sequence}"
        sequence += 1
        outcome = await send(transfer_items(plan, rng, reference, plan.batch_items))
        finished = time.perf_counter()
        if started >= window.start:
            samples.append(RequestSample(finished - started, outcome))
            window.last_finish = max(window.last_finish, finished)


async def _measure_cpu(plan: MoneyPathPlan, window: Window, cpu: dict[str, Any]) -> None:
    await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
    before = [cpu_snapshot(pid, plan.postgres_pid) for pid in plan.server_pids]
    await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
    after = [cpu_snapshot(pid, plan.postgres_pid) for pid in plan.server_pids]
    figures = [cpu_figures(first, last) for first, last in zip(before, after, strict=True)]
    if not figures:
        return
    cpu.update(figures[0])
    servers = [f.get("server_cores") for f in figures]
    # Several gRPC processes: each is a tree of its own; the server's share is their sum.
    cpu["server_cores"] = (
        round(sum(s for s in servers if isinstance(s, float)), 2)
        if all(isinstance(s, float) for s in servers)
        else None
    )
    per_process: list[float] = []
    for figure in figures:
        values = figure.get("server_process_cores")
        if isinstance(values, list):
            per_process.extend(values)
    cpu["server_process_cores"] = per_process
    parts = [cpu.get(f"{party}_cores") for party in ("server", "postgres", "client")]
    machine = cpu.get("machine_cores")
    if isinstance(machine, float) and all(isinstance(part, float) for part in parts):
        cpu["other_cores"] = round(max(0.0, machine - sum(p for p in parts if p)), 2)


def _with_cpu_per_transfer(cpu: dict[str, Any], transfers_per_second: float) -> dict[str, Any]:
    figures = dict(cpu)
    for party in ("server", "postgres"):
        cores = cpu.get(f"{party}_cores")
        if isinstance(cores, float) and transfers_per_second > 0:
            figures[f"{party}_cpu_ms_per_transfer"] = round(1000 * cores / transfers_per_second, 3)
    return figures


@contextlib.asynccontextmanager
async def _sender(plan: MoneyPathPlan, index: int) -> Any:
    target = plan.targets[index % len(plan.targets)]
    if plan.door == DOOR_REST:
        async with _rest_sender(plan, target) as send:
            yield send
    else:
        async with _grpc_sender(plan, target) as send:
            yield send


@contextlib.asynccontextmanager
async def _rest_sender(plan: MoneyPathPlan, base_url: str) -> Any:
    headers = {"Authorization": f"Bearer {plan.token}"}
    connector = aiohttp.TCPConnector(limit=1)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(base_url, connector=connector, timeout=timeout) as session:

        async def send(items: list[dict[str, str]]) -> Outcome:
            if plan.batch_items == 1:
                return await _rest_single(session, headers, items[0])
            return await _rest_batch(session, headers, items)

        yield send


async def _rest_single(
    session: aiohttp.ClientSession, headers: dict[str, str], item: dict[str, str]
) -> Outcome:
    try:
        async with session.post(REST_TRANSFER_PATH, json=item, headers=headers) as response:
            status, body = response.status, await response.read()
    except (aiohttp.ClientError, TimeoutError) as error:
        return Outcome(error=f"client {type(error).__name__}")
    if 200 <= status < 300:
        return Outcome(completed=1)
    code = _rest_error_code(body)
    if status == 422 and code == INSUFFICIENT_FUNDS:
        return Outcome(declined=1)
    return Outcome(error=f"{status} {code}")


async def _rest_batch(
    session: aiohttp.ClientSession, headers: dict[str, str], items: list[dict[str, str]]
) -> Outcome:
    body = {"atomic": False, "items": [{"type": "transfer", **item} for item in items]}
    try:
        async with session.post(REST_BATCH_PATH, json=body, headers=headers) as response:
            status, answer = response.status, await response.read()
    except (aiohttp.ClientError, TimeoutError) as error:
        return Outcome(error=f"client {type(error).__name__}")
    if status != 200:
        return Outcome(error=f"{status} {_rest_error_code(answer)}")
    try:
        statuses = [str(item["status"]) for item in json.loads(answer)["items"]]
    except (ValueError, KeyError, TypeError):
        return Outcome(error="200 unparsable batch answer")
    return _batch_outcome(statuses, len(items))


def _batch_outcome(statuses: Sequence[str], sent: int) -> Outcome:
    """Completed items are transfers; failed ones declines; rejected (or missing) ones errors."""
    completed = sum(1 for s in statuses if s == ITEM_COMPLETED)
    declined = sum(1 for s in statuses if s == ITEM_FAILED)
    return Outcome(completed=completed, declined=declined, failed_items=sent - completed - declined)


def _rest_error_code(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "unparsable body"


@contextlib.asynccontextmanager
async def _grpc_sender(plan: MoneyPathPlan, address: str) -> Any:
    metadata = (("authorization", f"Bearer {plan.token}"),)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = transactions_pb2_grpc.TransactionServiceStub(channel)

        async def send(items: list[dict[str, str]]) -> Outcome:
            try:
                if plan.batch_items == 1:
                    await stub.TransferBetweenAccounts(
                        _grpc_transfer(items[0]),
                        metadata=metadata,
                        timeout=REQUEST_TIMEOUT_SECONDS,
                    )
                    return Outcome(completed=1)
                return await _grpc_batch(stub, metadata, items)
            except grpc.aio.AioRpcError as error:
                code = _grpc_error_code(error)
                if plan.batch_items == 1 and code == INSUFFICIENT_FUNDS:
                    return Outcome(declined=1)
                return Outcome(error=error.code().name if code is None else code)

        yield send


async def _grpc_batch(
    stub: transactions_pb2_grpc.TransactionServiceAsyncStub,
    metadata: tuple[tuple[str, str], ...],
    items: list[dict[str, str]],
) -> Outcome:
    request = transactions_pb2.BatchMovementsRequest(
        atomic=False,
        items=[transactions_pb2.BatchItem(transfer=_grpc_transfer(item)) for item in items],
    )
    answer = await stub.BatchMovements(request, metadata=metadata, timeout=REQUEST_TIMEOUT_SECONDS)
    return _batch_outcome([item.status for item in answer.items], len(items))


def _grpc_transfer(item: dict[str, str]) -> transactions_pb2.TransferRequest:
    """A ``transfer_items`` item as the gRPC TransferRequest (its fields are the message's)."""
    fields: dict[str, Any] = dict(item)
    return transactions_pb2.TransferRequest(**fields)


def _grpc_error_code(error: Any) -> str | None:
    for key, value in error.trailing_metadata() or ():
        if key == "error-code":
            return str(value)
    return None


def run_load_process(plan: MoneyPathPlan) -> LoadFigures:
    """The load in its own process, so it shares no event loop with the servers nor this one."""
    result = run_load_module(
        "benchmarks.money_path",
        plan.to_json(),
        timeout_seconds=plan.warmup_seconds + plan.duration_seconds + LOAD_TIMEOUT_MARGIN_SECONDS,
        what="the load process",
    )
    return LoadFigures(**json.loads(result))


def _run_load_main(plan_path: Path, result_path: Path) -> int:
    plan = MoneyPathPlan.from_json(plan_path.read_text())
    try:
        figures = _event_loop_run(generate_money_path_load(plan))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    result_path.write_text(json.dumps(asdict(figures)))
    return EXIT_OK


def _event_loop_run(coroutine: Awaitable[LoadFigures]) -> LoadFigures:
    async def main() -> LoadFigures:
        return await coroutine

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


# --- peak RSS --------------------------------------------------------------------------------


def process_tree(root_pid: int) -> list[int]:
    """The process and its descendants (a ``--workers N`` master's workers included), from
    /proc; empty when it is gone."""
    parents: dict[int, int] = {}
    with contextlib.suppress(OSError):
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    stat = (entry / "stat").read_text()
                    parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    if root_pid not in parents:
        return []
    tree, frontier = [root_pid], [root_pid]
    while frontier:
        parent = frontier.pop()
        children = sorted(pid for pid, ppid in parents.items() if ppid == parent)
        tree.extend(children)
        frontier.extend(children)
    return tree


def reset_peak_rss(root_pids: Sequence[int]) -> bool:
    """Reset ``VmHWM`` to the current RSS (``5`` to ``/proc/PID/clear_refs``) so that a
    scenario's peak is its own; False when the kernel does not allow it."""
    done = True
    for root in root_pids:
        for pid in process_tree(root):
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                done = False
    return done


def peak_rss(root_pids: Sequence[int]) -> list[dict[str, Any]]:
    """Each process's peak resident memory (``VmHWM``, MB) under each root: role ``main`` for a
    root, ``worker`` for its children (uvicorn's workers; helpers such as multiprocessing's
    resource tracker are ``helper``)."""
    processes: list[dict[str, Any]] = []
    for root in root_pids:
        for pid in process_tree(root):
            kilobytes = _status_kilobytes(pid, "VmHWM")
            if kilobytes is None:
                continue
            processes.append(
                {
                    "pid": pid,
                    "role": _role(pid, root),
                    "peak_rss_mb": round(kilobytes * 1024 / BYTES_PER_MB, 1),
                }
            )
    return processes


def _role(pid: int, root_pid: int) -> str:
    if pid == root_pid:
        return "main"
    with contextlib.suppress(OSError):
        if b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return "helper"
    return "worker"


def _status_kilobytes(pid: int, key: str) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    return None


# --- the orchestrator ------------------------------------------------------------------------


@dataclass(frozen=True)
class Bank:
    """The seeded accounts and the teller's token (a teller may move any account's money)."""

    teller_token: str
    account_ids: tuple[str, ...]


async def seed_accounts(database_url: str, jwt_secret: str, accounts: int) -> Bank:
    """A teller and customers with ``accounts`` funded USD accounts in all, through the core."""
    from banking.bootstrap import build_container
    from benchmarks.seeding import create_user, open_funded_account, settings_for, token

    container = build_container(settings_for(database_url, jwt_secret))
    try:
        teller = await create_user(container, "bench-teller", Role.TELLER)
        account_ids: list[UUID] = []
        for index in range(-(-accounts // ACCOUNTS_PER_CUSTOMER)):
            customer = await create_user(container, f"bench-customer-{index:03d}", Role.CUSTOMER)
            for _ in range(min(ACCOUNTS_PER_CUSTOMER, accounts - len(account_ids))):
                account_ids.append(await open_funded_account(container, teller, customer.user_id))
        return Bank(token(container, teller), tuple(str(a) for a in account_ids))
    finally:
        await container.close()


@dataclass
class Scenario:
    """One scenario's result as the report holds it."""

    name: str
    door: str
    database: str
    batch_items: int
    processes: int
    group_commit: bool
    available: bool = True
    note: str = ""
    load: LoadFigures | None = None
    peak_rss: list[dict[str, Any]] = field(default_factory=list)
    peak_rss_reset: bool = False
    books_clean: bool | None = None
    books_problems: list[str] = field(default_factory=list)


@dataclass
class Run:
    """What the run has found so far."""

    options: MoneyPathOptions
    jwt_secret: str
    log_dir: Path
    postgres: PostgresFacts | None = None
    scenarios: dict[str, Scenario] = field(default_factory=dict)
    pgbench_tps: float | None = None


def run_money_path_benchmark(
    output: Path,
    *,
    concurrency: int | None = None,
    accounts: int = ACCOUNTS_DEFAULT,
    warmup_seconds: float | None = None,
) -> int:
    """The whole run; the JSON figures go to ``output``; the exit code (0 ok, 1 failed, 2 could
    not start, 130 interrupted)."""
    return exit_code_of(
        lambda: _run(_options(output, concurrency, accounts, warmup_seconds)),
        stopped="servers stopped and bench databases dropped",
    )


def _options(
    output: Path, concurrency: int | None, accounts: int, warmup_seconds: float | None
) -> MoneyPathOptions:
    config = read_config(output)
    if warmup_seconds is not None:
        if not 0 <= warmup_seconds <= WARMUP_SECONDS_MAX:
            raise BenchUnusable(f"the warm-up must be from 0 to {WARMUP_SECONDS_MAX:g} seconds")
        config = dataclasses.replace(config, warmup_seconds=warmup_seconds)
    if concurrency is None:
        # BENCH_CONCURRENCY as in the default mode (its largest value), else 32.
        configured = os.environ.get("BENCH_CONCURRENCY", "").strip()
        concurrency = max(config.concurrencies) if configured else CONCURRENCY_DEFAULT
    if not 1 <= concurrency <= CONCURRENCY_MAX:
        raise BenchUnusable(f"the concurrency must be from 1 to {CONCURRENCY_MAX}")
    if not ACCOUNTS_MIN <= accounts <= ACCOUNTS_MAX:
        raise BenchUnusable(f"the accounts must be from {ACCOUNTS_MIN} to {ACCOUNTS_MAX}")
    return MoneyPathOptions(config, concurrency, accounts)


def _run(options: MoneyPathOptions) -> int:
    config = options.config
    started_at = _now_iso()
    busy_before_cores = machine_busy_cores(IDLE_CHECK_SECONDS)
    if busy_before_cores is not None and busy_before_cores > IDLE_CHECK_CORES_MAX:
        say(
            f"bench: warning: the machine is not idle ({busy_before_cores:.2f} cores busy "
            "before the run); figures will be lower and noisier than on a quiet machine"
        )
    suffix = uuid4().hex[:8]
    api_database, pgbench_database = f"bench_mp_{suffix}", f"bench_mp_pgbench_{suffix}"
    run = Run(
        options,
        secrets.token_urlsafe(JWT_SECRET_LENGTH)[:JWT_SECRET_LENGTH],
        config.output.parent / "money-path-logs",
    )
    run.log_dir.mkdir(parents=True, exist_ok=True)
    created = False
    try:
        with tempfile.TemporaryDirectory(prefix="banking-money-path-sqlite-") as data_dir:
            run.postgres = asyncio.run(
                recreate_databases(config.admin_url, (api_database, pgbench_database))
            )
            created = True
            _postgres_scenarios(run, api_database, pgbench_database)
            _sqlite_scenario(run, Path(data_dir))
        report = build_money_path_report(run, started_at, busy_before_cores)
        _write(report, config.output)
        print_money_path_table(report)
        return _verdict(run, config.output)
    finally:
        if created:
            asyncio.run(drop_databases(config.admin_url, (api_database, pgbench_database)))


def _postgres_scenarios(run: Run, api_database: str, pgbench_database: str) -> None:
    from banking.storage.migrate import upgrade

    config, options = run.options.config, run.options
    api_url = config.database_url(api_database)
    pgbench = PgbenchTarget.of(config.admin_url, config.pgbench_bin, pgbench_database)
    say(f"bench: PostgreSQL {run.postgres.version if run.postgres else '?'}")
    say(f"bench: pgbench -i -s {PGBENCH_SCALE}; migrating and seeding {options.accounts} accounts")
    pgbench.initialize()
    upgrade(api_url)
    bank = asyncio.run(seed_accounts(api_url, run.jwt_secret, options.accounts))
    settings = _server_settings(run, api_url, options.workers, group_commit=False)
    with _rest_server(run, settings, "rest") as server:
        for name, batch in ((SCENARIO_REST_SINGLE, 1), (SCENARIO_REST_BATCH, BATCH_ITEMS)):
            scenario = Scenario(name, DOOR_REST, "postgresql", batch, options.workers, False)
            _measure(run, scenario, bank, (server.base_url,), (server.pid,), api_url)
    with _grpc_servers(run, settings) as (addresses, pids):
        single = Scenario(SCENARIO_GRPC_SINGLE, DOOR_GRPC, "postgresql", 1, len(pids), False)
        _measure(run, single, bank, addresses, pids, api_url)
        batches = Scenario(
            SCENARIO_GRPC_BATCH, DOOR_GRPC, "postgresql", BATCH_ITEMS, len(pids), False
        )
        _measure(run, batches, bank, addresses, pids, api_url)
    grouped = _server_settings(run, api_url, options.workers, group_commit=True)
    with _rest_server(run, grouped, "rest-group-commit") as server:
        scenario = Scenario(
            SCENARIO_REST_GROUP_COMMIT, DOOR_REST, "postgresql", 1, options.workers, True
        )
        _measure(run, scenario, bank, (server.base_url,), (server.pid,), api_url)
    say(f"bench: pgbench -c {options.concurrency} -T {config.duration_seconds}")
    run.pgbench_tps = pgbench.tps(options.concurrency, config.duration_seconds)
    say(f"bench:   pgbench {run.pgbench_tps:.1f} tps")


def _sqlite_scenario(run: Run, data_dir: Path) -> None:
    from banking.storage.migrate import upgrade

    database_url = f"sqlite+aiosqlite:///{(data_dir / 'banking.db').as_posix()}"
    say(f"bench: the embedded default (SQLite in {data_dir}): migrating and seeding")
    upgrade(database_url)
    bank = asyncio.run(seed_accounts(database_url, run.jwt_secret, run.options.accounts))
    settings = ServerSettings(
        database_url="",
        jwt_secret=run.jwt_secret,
        workers=SQLITE_WORKERS,
        pool_size=run.options.concurrency,
        port=free_port(),
        grpc_port=free_port(),
        extra_environment=(
            ("BANKING_ENV", "development"),
            ("DATABASE_URL", ""),
            ("DATA_DIR", str(data_dir)),
        ),
    )
    with _rest_server(run, settings, "sqlite") as server:
        scenario = Scenario(
            SCENARIO_SQLITE_SINGLE, DOOR_REST, "sqlite", 1, SQLITE_WORKERS, group_commit=False
        )
        _measure(run, scenario, bank, (server.base_url,), (server.pid,), database_url)


def _server_settings(run: Run, api_url: str, workers: int, *, group_commit: bool) -> ServerSettings:
    return ServerSettings(
        api_url,
        run.jwt_secret,
        workers,
        run.options.concurrency,
        free_port(),
        grpc_port=free_port(),
        extra_environment=(("GROUP_COMMIT", str(group_commit).lower()),),
    )


@contextlib.contextmanager
def _rest_server(run: Run, settings: ServerSettings, name: str) -> Any:
    server: Server = start_server(settings, run.log_dir / name)
    say(f"bench: {name} server ready at {server.base_url} ({settings.workers} workers)")
    try:
        yield server
    finally:
        stop_server(server)


@contextlib.contextmanager
def _grpc_servers(run: Run, settings: ServerSettings) -> Any:
    """``settings.workers`` ``banking grpc`` processes, each on a port of its own (the gRPC
    server refuses to share one), with the REST server's environment."""
    services: list[Service] = []
    addresses: list[str] = []
    try:
        for index in range(settings.workers):
            port = free_port()
            command = [
                sys.executable,
                "-c",
                "from banking.cli import main; main()",
                "grpc",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-migrate",
            ]
            service = Service.start(
                f"gRPC server {index}",
                command,
                environment=settings.environment(),
                log_path=run.log_dir / f"grpc-{index}.log",
            )
            services.append(service)
            addresses.append(f"127.0.0.1:{port}")
        for service, address in zip(services, addresses, strict=True):  # they start together
            _wait_for_port(service, int(address.rpartition(":")[2]))
        say(f"bench: {len(services)} gRPC servers ready at {', '.join(addresses)}")
        yield tuple(addresses), tuple(service.pid for service in services)
    finally:
        for service in services:
            service.stop(SERVER_STOP_TIMEOUT_SECONDS)


def _wait_for_port(service: Service, port: int) -> None:
    deadline = time.monotonic() + SERVER_READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        process = service.executor.process
        if process is not None and process.poll() is not None:
            raise BenchFailed(
                f"{service.name} exited with {process.returncode}:\n{service.log_tail()}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1.0):
            return
        time.sleep(GRPC_POLL_SECONDS)
    raise BenchFailed(f"{service.name} did not listen on {port}:\n{service.log_tail()}")


def _measure(
    run: Run,
    scenario: Scenario,
    bank: Bank,
    targets: Sequence[str],
    pids: Sequence[int],
    database_url: str,
) -> None:
    config = run.options.config
    say(
        f"bench: {scenario.name}: {run.options.concurrency} clients, "
        f"{config.warmup_seconds:g} s warm-up, {config.duration_seconds} s measured"
    )
    scenario.peak_rss_reset = reset_peak_rss(pids)
    on_postgres = run.postgres is not None and scenario.database == "postgresql"
    postgres_pid = run.postgres.postmaster_pid if run.postgres and on_postgres else None
    plan = MoneyPathPlan(
        door=scenario.door,
        batch_items=scenario.batch_items,
        targets=tuple(targets),
        concurrency=run.options.concurrency,
        warmup_seconds=config.warmup_seconds,
        duration_seconds=config.duration_seconds,
        run_id=uuid4().hex[:12],
        token=bank.teller_token,
        account_ids=bank.account_ids,
        server_pids=tuple(pids),
        postgres_pid=postgres_pid,
    )
    load = run_load_process(plan)
    scenario.load = load
    scenario.peak_rss = peak_rss(pids)
    scenario.note = not_available_note(load)
    scenario.available = not scenario.note
    from benchmarks.seeding import check_books

    books = asyncio.run(check_books(database_url))
    scenario.books_clean = books.clean
    scenario.books_problems = books.problems[:RECONCILE_PROBLEMS_REPORTED_MAX]
    run.scenarios[scenario.name] = scenario
    say(
        f"bench:   {load.transfers_per_second:.1f} transfers/s, {load.requests_per_second:.1f} "
        f"requests/s, {load.errors} errors, books {'clean' if books.clean else 'NOT CLEAN'}"
        + (f" ({scenario.note})" if scenario.note else "")
    )


def not_available_note(load: LoadFigures) -> str:
    """Why the scenario's endpoint is missing (every request answered 404 or 405, or gRPC
    UNIMPLEMENTED: not built or not merged yet); empty when it exists."""
    details = set(load.error_details)
    missing = all(
        detail.startswith(NOT_AVAILABLE_STATUSES) or detail == GRPC_UNIMPLEMENTED
        for detail in details
    )
    if not load.requests or load.error_requests != load.requests or not missing:
        return ""
    return f"not available: every request answered {', '.join(sorted(details))}"


# --- the report ------------------------------------------------------------------------------


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 4)


def _targets(name: str) -> dict[str, float]:
    targets: dict[str, dict[str, float]] = {
        SCENARIO_REST_SINGLE: {
            "ratio_to_pgbench_min": TARGET_REST_SINGLE_RATIO_MIN,
            "p99_ms_max": TARGET_P99_MS_MAX,
        },
        SCENARIO_REST_GROUP_COMMIT: {
            "ratio_to_pgbench_min": TARGET_GROUP_COMMIT_RATIO_MIN,
            "p99_ms_max": TARGET_P99_MS_MAX,
        },
        SCENARIO_REST_BATCH: {"ratio_to_pgbench_min": TARGET_BATCH_RATIO_MIN},
        SCENARIO_GRPC_SINGLE: {"ratio_to_rest_single_min": TARGET_GRPC_TO_REST_MIN},
    }
    return {**targets.get(name, {}), "peak_rss_mb_per_worker_max": TARGET_PEAK_RSS_MB_MAX}


def _scenario_report(scenario: Scenario, run: Run) -> dict[str, Any]:
    load = scenario.load
    transfers_per_second = None if load is None else load.transfers_per_second
    ratio = _ratio(transfers_per_second, run.pgbench_tps)
    workers_rss = [p["peak_rss_mb"] for p in scenario.peak_rss if p["role"] != "helper"]
    peak_worker = max(workers_rss) if workers_rss else None
    target = _targets(scenario.name)
    report: dict[str, Any] = {
        "door": scenario.door,
        "database": scenario.database,
        "available": scenario.available,
        "note": scenario.note,
        "batch_items": scenario.batch_items,
        "server_processes": scenario.processes,
        "group_commit": scenario.group_commit,
        "transfers_per_second": transfers_per_second,
        "requests_per_second": None if load is None else load.requests_per_second,
        "latency_ms_per_request": {
            "p50": None if load is None else load.p50_ms,
            "p95": None if load is None else load.p95_ms,
            "p99": None if load is None else load.p99_ms,
        },
        "errors": None if load is None else load.errors,
        "declined": None if load is None else load.declined,
        "load": None if load is None else asdict(load),
        "peak_rss_mb": {
            "processes": scenario.peak_rss,
            "max_per_process": peak_worker,
            "since": "scenario start" if scenario.peak_rss_reset else "process start",
        },
        "ratio_to_pgbench": ratio,
        "target": target,
        "meets_target": _meets(scenario, run, ratio, peak_worker, target),
        "books_clean": scenario.books_clean,
        "books_problems": scenario.books_problems,
    }
    if scenario.name == SCENARIO_GRPC_SINGLE:
        rest = run.scenarios.get(SCENARIO_REST_SINGLE)
        rest_rate = None if rest is None or rest.load is None else rest.load.transfers_per_second
        report["ratio_to_rest_single"] = _ratio(transfers_per_second, rest_rate)
    return report


def _meets(
    scenario: Scenario,
    run: Run,
    ratio: float | None,
    peak_worker: float | None,
    target: dict[str, float],
) -> dict[str, bool | None]:
    """Each target's verdict (information for the reader; the exit code ignores it)."""
    load = scenario.load
    verdicts: dict[str, bool | None] = {}
    if "ratio_to_pgbench_min" in target:
        verdicts["ratio_to_pgbench_min"] = (
            None if ratio is None else ratio >= target["ratio_to_pgbench_min"]
        )
    if "p99_ms_max" in target:
        p99 = None if load is None else load.p99_ms
        verdicts["p99_ms_max"] = None if p99 is None else p99 < target["p99_ms_max"]
    if "ratio_to_rest_single_min" in target:
        rest = run.scenarios.get(SCENARIO_REST_SINGLE)
        grpc_ratio = _ratio(
            None if load is None else load.transfers_per_second,
            None if rest is None or rest.load is None else rest.load.transfers_per_second,
        )
        verdicts["ratio_to_rest_single_min"] = (
            None if grpc_ratio is None else grpc_ratio >= target["ratio_to_rest_single_min"]
        )
    verdicts["peak_rss_mb_per_worker_max"] = (
        None if peak_worker is None else peak_worker < target["peak_rss_mb_per_worker_max"]
    )
    return verdicts


def build_money_path_report(
    run: Run, started_at: str, busy_before_cores: float | None
) -> dict[str, Any]:
    """The JSON document of one run."""
    config, options = run.options.config, run.options
    scenarios = {
        name: _scenario_report(run.scenarios[name], run)
        for name in SCENARIOS
        if name in run.scenarios
    }
    scenarios[SCENARIO_PGBENCH] = {
        "transactions_per_second": None if run.pgbench_tps is None else round(run.pgbench_tps, 1),
        "concurrency": options.concurrency,
        "scale": PGBENCH_SCALE,
        "duration_seconds": config.duration_seconds,
    }
    return {
        "schema_version": 1,
        "mode": "money-path",
        "started_at": started_at,
        "finished_at": _now_iso(),
        "machine": {
            "nproc": len(os.sched_getaffinity(0)),
            "postgresql": None if run.postgres is None else run.postgres.version,
            "busy_cores_before_run": busy_before_cores,
        },
        "settings": {
            "concurrency": options.concurrency,
            "accounts": options.accounts,
            "amount": TRANSFER_AMOUNT,
            "batch_items": BATCH_ITEMS,
            "workers": options.workers,
            "sqlite_workers": SQLITE_WORKERS,
            "duration_seconds": config.duration_seconds,
            "warmup_seconds": config.warmup_seconds,
        },
        "scenarios": scenarios,
        "reconcile_clean": all(s.books_clean for s in run.scenarios.values() if s.load),
    }


def _now_iso() -> str:
    from benchmarks.report import now_iso

    return now_iso()


def _write(report: dict[str, Any], output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")


def print_money_path_table(report: dict[str, Any]) -> None:
    """The figures as a fixed-width table."""
    header = (
        f"{'scenario':<26} {'xfer/s':>9} {'req/s':>8} {'p50/p95/p99 ms':>20} {'err':>6} "
        f"{'x pgbench':>9} {'target':>7} {'RSS MB':>7} {'books':>6}"
    )
    say("")
    say(header)
    say("-" * len(header))
    for name, figures in report["scenarios"].items():
        if name == SCENARIO_PGBENCH:
            say(f"{name:<26} {_num(figures['transactions_per_second']):>9}")
            continue
        latency = figures["latency_ms_per_request"]
        triple = "/".join(_num(latency[k]) for k in ("p50", "p95", "p99"))
        target = figures["target"].get("ratio_to_pgbench_min")
        books = {True: "clean", False: "DIRTY", None: "-"}[figures["books_clean"]]
        say(
            f"{name:<26} {_num(figures['transfers_per_second']):>9} "
            f"{_num(figures['requests_per_second']):>8} {triple:>20} "
            f"{_num(figures['errors']):>6} {_num(figures['ratio_to_pgbench'], 3):>9} "
            f"{_num(target, 1):>7} {_num(figures['peak_rss_mb']['max_per_process']):>7} "
            f"{books:>6}" + ("" if figures["available"] else "  (not available)")
        )
    grpc = report["scenarios"].get(SCENARIO_GRPC_SINGLE)
    if grpc is not None:
        say(
            f"gRPC single / REST single: {_num(grpc.get('ratio_to_rest_single'), 3)} "
            f"(target {TARGET_GRPC_TO_REST_MIN}); peak RSS target < {TARGET_PEAK_RSS_MB_MAX:g} MB"
        )
    say("")


def _num(value: object, digits: int = 1) -> str:
    if isinstance(value, bool) or value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _verdict(run: Run, output: Path) -> int:
    failed = False
    for scenario in run.scenarios.values():
        if scenario.books_clean is False:
            say(f"bench: FAILED: the books do not reconcile after {scenario.name}:")
            for problem in scenario.books_problems:
                say(f"    {problem}")
            failed = True
        if scenario.available and scenario.load is not None and scenario.load.errors:
            say(f"bench: FAILED: {scenario.load.errors} errors in {scenario.name} (see {output})")
            failed = True
        if scenario.load is not None and scenario.load.declined:
            say(
                f"bench: warning: {scenario.load.declined} transfers declined in "
                f"{scenario.name} although every account holds far more than the load moves"
            )
    if failed:
        return EXIT_FAILED
    say(f"bench: books reconcile after every scenario; figures written to {output}")
    return EXIT_OK


def main(arguments: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.money_path [--concurrency N] [--accounts N] [--warmup-seconds S]
    [--output FILE]`` (the duration and workers come from the default mode's settings);
    ``--load PLAN --result FILE`` is the load process the run starts."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.money_path",
        description="The money path's scenarios of issue 14 next to pgbench (docs/benchmarks.md).",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--concurrency", type=int, default=None, help="default 32")
    parser.add_argument("--accounts", type=int, default=ACCOUNTS_DEFAULT)
    parser.add_argument(
        "--warmup-seconds", type=float, default=None, help="default: the default mode's (3)"
    )
    parser.add_argument("--load", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    options = parser.parse_args(arguments)
    if options.load is not None and options.result is not None:
        return _run_load_main(options.load, options.result)
    return run_money_path_benchmark(
        options.output,
        concurrency=options.concurrency,
        accounts=options.accounts,
        warmup_seconds=options.warmup_seconds,
    )


if __name__ == "__main__":
    sys.exit(main())
