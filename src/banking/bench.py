"""``banking bench``: the REST API under a mixed money-moving load, next to ``pgbench`` on the
same PostgreSQL server (DESIGN.md section 12).

One run: fresh databases ``bench_api`` and ``bench_pgbench`` on the server named by
``BANKING_PG_ADMIN_DSN``; ``bench_api`` is migrated and seeded through the core services; the
real server (``banking serve``) runs as a subprocess; a separate load-generator process
(``python -m banking.bench --load PLAN --result FILE``) drives it with aiohttp at each
concurrency; ``pgbench`` runs at the same concurrency while the API is idle; the ledger is
reconciled at the end. Figures go to a JSON file and one line of ``history.jsonl`` next to it.

Settings (environment): ``BENCH_DURATION_SECONDS`` (20), ``BENCH_CONCURRENCY`` ("8,32"),
``BENCH_WORKERS`` (2), ``PGBENCH_BIN`` (``/usr/lib/postgresql/15/bin/pgbench``).
Exit codes: 0 ok, 1 the run failed (errors, books not clean, server or pgbench failure),
2 the run could not start (configuration, PostgreSQL unreachable), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from http.client import HTTPConnection
from pathlib import Path
from typing import IO, Any, NamedTuple
from uuid import UUID, uuid4

import aiohttp
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from banking.config import Environment, Settings
from banking.container import Container, build_container
from banking.domain.records import DebitOrCredit
from banking.domain.roles import Actor, Role
from banking.ledger.reconcile import ReconcileReport, reconcile
from banking.storage.migrate import upgrade

# --- what a run does -----------------------------------------------------------------------

DURATION_SECONDS_DEFAULT = 20
CONCURRENCIES_DEFAULT = "8,32"
WORKERS_DEFAULT = 2
WARMUP_SECONDS = 3.0
CONCURRENCY_MAX = 256
WORKERS_MAX = 64
DURATION_SECONDS_MAX = 3600

API_DATABASE = "bench_api"
PGBENCH_DATABASE = "bench_pgbench"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})

CUSTOMERS_COUNT = 20
ACCOUNTS_PER_CUSTOMER = 5
HOT_ACCOUNTS_COUNT = 4  # the first account of the first customers
CURRENCY = "USD"
FUNDING_AMOUNT = Decimal("1000000.00")
SEED_POOL_SIZE = 2  # seeding and reconciling run one statement at a time
AMOUNT_CENTS_MIN = 100  # "1.00"
AMOUNT_CENTS_MAX = 999  # "9.99"

# Workload mix (probabilities, not money): the rest after transfers and debits are credits.
TRANSFER_SHARE = 0.70
DEBIT_SHARE = 0.15
HOT_SHARE = 0.20

# BENCH_INSTRUMENTATION=full runs the server with per-request JSON logs (INFO) and metrics,
# =off with neither; the default is how an operator runs it (WARNING logs, metrics on).
_INSTRUMENTATION = os.environ.get("BENCH_INSTRUMENTATION", "default")
SERVER_LOG_LEVEL = "INFO" if _INSTRUMENTATION == "full" else "WARNING"
SERVER_LOG_JSON = True
SERVER_METRICS_ENABLED = _INSTRUMENTATION != "off"
SERVER_POOL_OVERFLOW = 4
# The limiter stays on (its cost is part of every request) but never refuses the benchmark's
# 21 users, each sending far more than a person would (the default is 100/second per user).
SERVER_RATE_LIMIT_DEFAULT = "1000000/second"
SERVER_READY_TIMEOUT_SECONDS = 60.0
SERVER_READY_POLL_SECONDS = 0.2
SERVER_STOP_TIMEOUT_SECONDS = 20.0
SERVER_LOG_TAIL_LINES = 30
JWT_SECRET_LENGTH = 48
TOKEN_LIFETIME_MINUTES = 24 * 60

IDLE_CHECK_SECONDS = 2.0
IDLE_CHECK_CORES_MAX = 0.25
REQUEST_TIMEOUT_SECONDS = 30.0
CONNECT_STAGGER_SECONDS = 0.02  # between the first requests of two load workers (warm-up)
LOAD_TIMEOUT_MARGIN_SECONDS = 90.0
ERROR_DETAILS_MAX = 10
RECONCILE_PROBLEMS_REPORTED_MAX = 20

PGBENCH_BIN_DEFAULT = "/usr/lib/postgresql/15/bin/pgbench"
PGBENCH_SCALE = 10
PGBENCH_THREADS_MAX = 2
PGBENCH_INIT_TIMEOUT_SECONDS = 600.0
PGBENCH_TIMEOUT_MARGIN_SECONDS = 120.0
CpuFigures = dict[str, float | list[float] | None]
_PGBENCH_TPS = re.compile(r"tps = ([0-9.]+) \(without initial connection time\)")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNUSABLE = 2
EXIT_INTERRUPTED = 130

OUTCOME_OK = "ok"
OUTCOME_DECLINED = "declined"
OUTCOME_ERROR = "error"
KIND_TRANSFER = "transfer"
KIND_DEBIT = "debit"
KIND_CREDIT = "credit"
INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"


class BenchUnusable(Exception):
    """The benchmark cannot start: configuration or environment (exit code 2)."""


class BenchFailed(Exception):
    """The benchmark started but a part of it failed (exit code 1)."""


@dataclass(frozen=True)
class BenchConfig:
    admin_url: URL
    pgbench_bin: str
    duration_seconds: int
    warmup_seconds: float
    concurrencies: tuple[int, ...]
    workers: int
    output: Path

    @property
    def pool_size(self) -> int:
        """Per worker: enough for every client connection to land on one worker."""
        return max(self.concurrencies)

    def database_url(self, name: str) -> str:
        """An asyncpg URL of database ``name`` on the admin DSN's server."""
        url = self.admin_url.set(drivername="postgresql+asyncpg", database=name)
        return url.render_as_string(hide_password=False)


# --- entry point -------------------------------------------------------------------------


def run_benchmark(output: Path) -> int:
    """Run the whole benchmark, write the JSON figures to ``output`` and return the exit code.

    0 when every request succeeded and the books reconcile; 1 when the run failed; 2 when it
    could not start (for example ``BANKING_PG_ADMIN_DSN`` is not set); 130 on Ctrl-C.
    """
    try:
        config = read_config(output)
        return _run(config)
    except BenchUnusable as error:
        _say(f"bench: cannot run: {error}")
        return EXIT_UNUSABLE
    except BenchFailed as error:
        _say(f"bench: FAILED: {error}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        _say("bench: interrupted; server stopped and bench databases dropped")
        return EXIT_INTERRUPTED


def read_config(output: Path) -> BenchConfig:
    """The run's settings from the environment; ``BenchUnusable`` when one is not valid."""
    dsn = os.environ.get("BANKING_PG_ADMIN_DSN", "").strip()
    if not dsn:
        raise BenchUnusable(
            "BANKING_PG_ADMIN_DSN is not set. Start PostgreSQL and export its settings with\n"
            '    eval "$(bash scripts/services/postgres.sh start)"'
        )
    try:
        admin_url = make_url(dsn)
    except (ArgumentError, ValueError) as error:
        raise BenchUnusable(f"BANKING_PG_ADMIN_DSN is not a valid URL: {error}") from error
    if admin_url.host not in LOCAL_HOSTS:
        raise BenchUnusable(f"benchmarks only target 127.0.0.1, not {admin_url.host!r}")
    return BenchConfig(
        admin_url=admin_url,
        pgbench_bin=_pgbench_binary(),
        duration_seconds=_int_env("BENCH_DURATION_SECONDS", DURATION_SECONDS_DEFAULT,
                                  DURATION_SECONDS_MAX),
        warmup_seconds=WARMUP_SECONDS,
        concurrencies=_concurrencies(os.environ.get("BENCH_CONCURRENCY", CONCURRENCIES_DEFAULT)),
        workers=_int_env("BENCH_WORKERS", WORKERS_DEFAULT, WORKERS_MAX),
        output=output,
    )


def _int_env(name: str, default: int, maximum: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or not 1 <= int(text) <= maximum:
        raise BenchUnusable(f"{name} must be an integer from 1 to {maximum}, not {text!r}")
    return int(text)


def _concurrencies(text: str) -> tuple[int, ...]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or not all(p.isdigit() and 1 <= int(p) <= CONCURRENCY_MAX for p in parts):
        raise BenchUnusable(
            f"BENCH_CONCURRENCY must be a comma-separated list of integers from 1 to "
            f"{CONCURRENCY_MAX}, not {text!r}"
        )
    return tuple(dict.fromkeys(int(part) for part in parts))


def _pgbench_binary() -> str:
    candidate = os.environ.get("PGBENCH_BIN") or PGBENCH_BIN_DEFAULT
    if os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("pgbench")
    if found is None:
        raise BenchUnusable(
            f"pgbench not found at {candidate} nor on PATH; set PGBENCH_BIN "
            "(scripts/services/postgres.sh env prints it)"
        )
    return found


def _say(message: str) -> None:
    """The benchmark's report on the terminal (its output, not a log)."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


# --- the run -----------------------------------------------------------------------------


@dataclass
class RoundFigures:
    """One concurrency: the API's figures and pgbench's rate."""

    api: ApiFigures
    pgbench_tps: float
    pgbench_cpu: CpuFigures

    def as_dict(self) -> dict[str, Any]:
        """The figures as written to the JSON report, with both ratios API / pgbench."""
        tps = self.pgbench_tps
        return {
            "api": asdict(self.api),
            "pgbench_tps": round(tps, 1),
            "pgbench_cpu": self.pgbench_cpu,
            "ratio_api_to_pgbench": {
                "transfers_per_second": _ratio(self.api.transfers_per_second, tps),
                "requests_per_second": _ratio(self.api.requests_per_second, tps),
            },
        }


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 4) if denominator > 0 else None


def _run(config: BenchConfig) -> int:
    started_at = _now_iso()
    busy_before_cores = machine_busy_cores(IDLE_CHECK_SECONDS)
    if busy_before_cores is not None and busy_before_cores > IDLE_CHECK_CORES_MAX:
        _say(f"bench: warning: the machine is not idle ({busy_before_cores:.2f} cores busy "
             "before the run); figures will be lower and noisier than on a quiet machine")
    jwt_secret = secrets.token_urlsafe(JWT_SECRET_LENGTH)[:JWT_SECRET_LENGTH]
    api_url = config.database_url(API_DATABASE)
    pgbench = PgbenchTarget.of(config.admin_url, config.pgbench_bin, PGBENCH_DATABASE)
    server: Server | None = None
    databases_created = False
    try:
        postgres = asyncio.run(_recreate_databases(config.admin_url))
        databases_created = True
        _say(f"bench: PostgreSQL {postgres.version}; pgbench -i -s {PGBENCH_SCALE}")
        pgbench.initialize()
        _say(f"bench: migrating and seeding {API_DATABASE}")
        upgrade(api_url)
        bank = asyncio.run(seed_bank(api_url, jwt_secret))
        server = start_server(_server_settings(config, api_url, jwt_secret), config.output.parent)
        _say(f"bench: server ready at {server.base_url} ({config.workers} workers)")
        rounds = {
            c: _round(config, server, bank, pgbench, postgres, c) for c in config.concurrencies
        }
        stop_server(server)
        server = None
        books = asyncio.run(check_books(api_url))
        report = build_report(config, started_at, postgres.version, rounds, books)
        report["machine"]["busy_cores_before_run"] = busy_before_cores
        write_report(report, config.output)
        print_table(rounds)
        return _verdict(rounds, books, config.output)
    finally:
        if server is not None:
            stop_server(server)
        if databases_created:
            asyncio.run(_drop_databases(config.admin_url))


def _round(
    config: BenchConfig, server: Server, bank: SeededBank, pgbench: PgbenchTarget,
    postgres: PostgresFacts, concurrency: int,
) -> RoundFigures:
    _say(f"bench: API at concurrency {concurrency}: {config.warmup_seconds:g} s warm-up, "
         f"{config.duration_seconds} s measured")
    plan = LoadPlan(
        base_url=server.base_url,
        concurrency=concurrency,
        warmup_seconds=config.warmup_seconds,
        duration_seconds=config.duration_seconds,
        run_id=uuid4().hex[:12],
        teller_token=bank.teller_token,
        customers=bank.customers,
        hot_accounts=bank.hot_accounts,
        server_pid=server.process.pid,
        postgres_pid=postgres.postmaster_pid,
    )
    api = run_load_process(plan)
    _say(f"bench:   {api.transfers_per_second:.1f} transfers/s, {api.requests_per_second:.1f} "
         f"requests/s, {api.errors} errors; pgbench -c {concurrency}")
    before = cpu_snapshot(server.process.pid, postgres.postmaster_pid, resource.RUSAGE_CHILDREN)
    tps = pgbench.tps(concurrency, config.duration_seconds)
    after = cpu_snapshot(server.process.pid, postgres.postmaster_pid, resource.RUSAGE_CHILDREN)
    _say(f"bench:   pgbench {tps:.1f} tps")
    cpu = cpu_figures(before, after)
    cpu.pop("server_process_cores", None)  # the API server is idle meanwhile
    cpu.update(cpu_per_operation_ms(cpu, tps, "transaction", ("postgres",)))
    return RoundFigures(api, tps, cpu)


def _verdict(rounds: dict[int, RoundFigures], books: ReconcileReport, output: Path) -> int:
    errors = sum(figures.api.errors for figures in rounds.values())
    declined = sum(figures.api.declined for figures in rounds.values())
    if declined:
        _say(f"bench: warning: {declined} requests declined (INSUFFICIENT_FUNDS) although "
             "every account holds far more than the load moves")
    if not books.clean:
        _say("bench: FAILED: the books do not reconcile after the load:")
        for problem in books.problems[:RECONCILE_PROBLEMS_REPORTED_MAX]:
            _say(f"    {problem}")
        return EXIT_FAILED
    if errors:
        _say(f"bench: FAILED: {errors} requests failed (see error_details in {output})")
        return EXIT_FAILED
    _say(f"bench: books reconcile; figures written to {output}")
    return EXIT_OK


# --- databases -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _admin_connection(admin_url: URL) -> AsyncIterator[AsyncConnection]:
    """An autocommit connection to the admin database (CREATE/DROP DATABASE need one)."""
    url = admin_url.set(drivername="postgresql+asyncpg")
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        try:
            connection = await engine.connect()
        except (OSError, DBAPIError) as error:
            raise BenchUnusable(
                f"cannot connect to PostgreSQL at {admin_url.host}:{admin_url.port} "
                f"({type(error).__name__}: {str(error).splitlines()[0]}); is it running? "
                'eval "$(bash scripts/services/postgres.sh start)"'
            ) from error
        try:
            yield connection
        finally:
            await connection.close()
    finally:
        await engine.dispose()


@dataclass(frozen=True)
class PostgresFacts:
    version: str
    postmaster_pid: int | None  # None when the server is not a process on this machine


async def _recreate_databases(admin_url: URL) -> PostgresFacts:
    """Drop and create both bench databases; what the run records about the server."""
    async with _admin_connection(admin_url) as connection:
        for name in (API_DATABASE, PGBENCH_DATABASE):
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        version = await connection.scalar(text("SHOW server_version"))
        backend_pid = await connection.scalar(text("SELECT pg_backend_pid()"))
        return PostgresFacts(str(version), postmaster_pid_of(int(backend_pid)))


async def _drop_databases(admin_url: URL) -> None:
    try:
        async with _admin_connection(admin_url) as connection:
            for name in (API_DATABASE, PGBENCH_DATABASE):
                await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    except BenchUnusable as error:
        _say(f"bench: could not drop the bench databases: {error}")


def _settings_for(database_url: str, jwt_secret: str) -> Settings:
    return Settings(
        banking_env=Environment.PRODUCTION,
        database_url=database_url,
        jwt_secret=SecretStr(jwt_secret),
        jwt_expire_minutes=TOKEN_LIFETIME_MINUTES,
        database_pool_size=SEED_POOL_SIZE,
        log_level=SERVER_LOG_LEVEL,
    )


# --- seeding -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Customer:
    """A customer's token and accounts, as the load generator uses them."""

    token: str
    account_ids: tuple[str, ...]
    cold_account_ids: tuple[str, ...]


@dataclass(frozen=True)
class HotAccount:
    account_id: str
    owner: int  # index in the customers


@dataclass(frozen=True)
class SeededBank:
    teller_token: str
    customers: tuple[Customer, ...]
    hot_accounts: tuple[HotAccount, ...]


async def seed_bank(database_url: str, jwt_secret: str) -> SeededBank:
    """One teller and the customers with their funded accounts, made through the core."""
    container = build_container(_settings_for(database_url, jwt_secret))
    try:
        teller = await _create_user(container, "bench-teller", Role.TELLER)
        owned: list[tuple[Actor, list[UUID]]] = []
        for index in range(CUSTOMERS_COUNT):
            customer = await _create_user(container, f"bench-customer-{index:03d}", Role.CUSTOMER)
            owned.append((customer, await _open_funded_accounts(container, teller, customer)))
        return _bank_of(container, teller, owned)
    finally:
        await container.close()


async def _create_user(container: Container, username: str, role: Role) -> Actor:
    user = await container.users.create(
        None, username=username, email=f"{username}@bench.example.com",
        password=secrets.token_urlsafe(18), role=role,
    )
    return Actor(user.user_id, user.username, user.role)


async def _open_funded_accounts(
    container: Container, teller: Actor, customer: Actor
) -> list[UUID]:
    account_ids: list[UUID] = []
    for _ in range(ACCOUNTS_PER_CUSTOMER):
        account, _balance = await container.accounts.open(
            teller, account_type="checking", currency=CURRENCY, customer_id=customer.user_id
        )
        await container.movements.credit(
            teller,
            DebitOrCredit(account.account_id, FUNDING_AMOUNT, CURRENCY,
                          "bench funding", f"bench-funding-{account.account_id}"),
        )
        account_ids.append(account.account_id)
    return account_ids


def _bank_of(
    container: Container, teller: Actor, owned: list[tuple[Actor, list[UUID]]]
) -> SeededBank:
    hot = tuple(HotAccount(str(ids[0]), owner) for owner, (_, ids) in
                enumerate(owned[:HOT_ACCOUNTS_COUNT]))
    hot_ids = {account.account_id for account in hot}
    customers = tuple(
        Customer(
            token=_token(container, actor),
            account_ids=tuple(str(i) for i in ids),
            cold_account_ids=tuple(str(i) for i in ids if str(i) not in hot_ids),
        )
        for actor, ids in owned
    )
    return SeededBank(_token(container, teller), customers, hot)


def _token(container: Container, actor: Actor) -> str:
    return container.tokens.issue(actor.user_id, actor.username, actor.role)


async def check_books(database_url: str) -> ReconcileReport:
    """The ledger's reconcile on the bench database after the load."""
    container = build_container(_settings_for(database_url, "x" * JWT_SECRET_LENGTH))
    try:
        return await reconcile(container.database)
    finally:
        await container.close()


# --- the server --------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSettings:
    database_url: str
    jwt_secret: str
    workers: int
    pool_size: int
    port: int

    def environment(self) -> dict[str, str]:
        """The process environment: the caller's, plus the operator's production settings."""
        return {
            **os.environ,
            "BANKING_ENV": Environment.PRODUCTION.value,
            "DATABASE_URL": self.database_url,
            "JWT_SECRET": self.jwt_secret,
            "DATABASE_POOL_SIZE": str(self.pool_size),
            "DATABASE_POOL_OVERFLOW": str(SERVER_POOL_OVERFLOW),
            "LOG_LEVEL": SERVER_LOG_LEVEL,
            "LOG_JSON": str(SERVER_LOG_JSON).lower(),
            "METRICS_ENABLED": str(SERVER_METRICS_ENABLED).lower(),
            "RATE_LIMIT_DEFAULT": SERVER_RATE_LIMIT_DEFAULT,
        }

    def command(self) -> list[str]:
        """``banking serve`` by this interpreter (no reliance on PATH)."""
        return [
            sys.executable, "-c", "from banking.cli import main; main()",
            "serve", "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(self.workers), "--no-migrate",
        ]


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    log_file: IO[bytes]
    metrics_dir: Path


def _server_settings(config: BenchConfig, api_url: str, jwt_secret: str) -> ServerSettings:
    return ServerSettings(api_url, jwt_secret, config.workers, config.pool_size, _free_port())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_server(settings: ServerSettings, log_dir: Path) -> Server:
    """Start ``banking serve`` in its own session and wait until ``/ready`` answers 200."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "server.log"
    log_file = log_path.open("wb")
    # Our own Prometheus multiprocess directory, removed afterwards (`banking serve` would
    # make one under /tmp for several workers and leave it behind).
    metrics_dir = Path(tempfile.mkdtemp(prefix="banking-bench-metrics-"))
    environment = {**settings.environment(), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    try:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
            settings.command(), env=environment, stdin=subprocess.DEVNULL,
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
    except OSError:
        log_file.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        raise
    server = Server(process, f"http://127.0.0.1:{settings.port}", log_path, log_file,
                    metrics_dir)
    try:
        _wait_ready(server, settings.port)
    except BaseException:
        stop_server(server)
        raise
    return server


def _wait_ready(server: Server, port: int) -> None:
    deadline = time.monotonic() + SERVER_READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise BenchFailed(f"the server exited with {server.process.returncode} at start-up:\n"
                              + _log_tail(server.log_path))
        if _ready_status(port) == 200:
            return
        time.sleep(SERVER_READY_POLL_SECONDS)
    raise BenchFailed(f"the server was not ready after {SERVER_READY_TIMEOUT_SECONDS:g} s:\n"
                      + _log_tail(server.log_path))


def _ready_status(port: int) -> int | None:
    connection = HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/ready")
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def _log_tail(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-SERVER_LOG_TAIL_LINES:])
    return "(no server log)"


def stop_server(server: Server) -> None:
    """SIGTERM (uvicorn stops its workers), then SIGKILL to the server's own session if stuck."""
    process = server.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=SERVER_STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            _say("bench: the server did not stop on SIGTERM; killing its process group")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=SERVER_STOP_TIMEOUT_SECONDS)
    server.log_file.close()
    shutil.rmtree(server.metrics_dir, ignore_errors=True)


# --- pgbench -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PgbenchTarget:
    binary: str
    host: str
    port: int
    user: str
    password: str
    database: str

    @classmethod
    def of(cls, admin_url: URL, binary: str, database: str) -> PgbenchTarget:
        """pgbench against ``database`` on the admin DSN's server (password by environment)."""
        return cls(binary, admin_url.host or "127.0.0.1", admin_url.port or 5432,
                   admin_url.username or "postgres", admin_url.password or "", database)

    def initialize(self) -> None:
        """``pgbench -i -s 10``: the TPC-B-like tables."""
        self._run(["-i", "-s", str(PGBENCH_SCALE), "-q"], PGBENCH_INIT_TIMEOUT_SECONDS)

    def tps(self, concurrency: int, duration_seconds: int) -> float:
        """``pgbench -c C -j 2 -T S -n``: transactions per second without connection time."""
        threads = min(PGBENCH_THREADS_MAX, concurrency)
        output = self._run(
            ["-c", str(concurrency), "-j", str(threads), "-T", str(duration_seconds), "-n"],
            duration_seconds + PGBENCH_TIMEOUT_MARGIN_SECONDS,
        )
        found = _PGBENCH_TPS.search(output)
        if found is None:
            raise BenchFailed(f"no tps line in pgbench's output:\n{output}")
        return float(found.group(1))

    def _run(self, arguments: list[str], timeout_seconds: float) -> str:
        command = [self.binary, "-h", self.host, "-p", str(self.port), "-U", self.user,
                   *arguments, self.database]
        environment = {**os.environ, "PGPASSWORD": self.password}
        result = subprocess.run(  # noqa: S603 - the configured pgbench, fixed arguments
            command, env=environment, capture_output=True, text=True, timeout=timeout_seconds,
            check=False,
        )
        if result.returncode != 0:
            raise BenchFailed(f"pgbench {' '.join(arguments)} exited with {result.returncode}:\n"
                              f"{result.stderr.strip()}")
        return result.stdout + result.stderr


# --- the load generator (a separate process) ----------------------------------------------


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


@dataclass(frozen=True)
class ApiFigures:
    """One concurrency's API figures. ``p50_ms``..``p99_ms`` are of transfers; ``all_*`` of
    every measured request."""

    concurrency: int
    measured_seconds: float
    requests: int
    transfers: int
    requests_per_second: float
    transfers_per_second: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    all_p50_ms: float | None
    all_p95_ms: float | None
    all_p99_ms: float | None
    errors: int
    declined: int
    by_kind: dict[str, dict[str, int]]
    error_details: dict[str, int]
    cpu: CpuFigures = field(default_factory=dict)


class Operation(NamedTuple):
    kind: str
    path: str
    headers: dict[str, str]
    body: dict[str, str]


class Sample(NamedTuple):
    kind: str
    latency_seconds: float
    outcome: str
    detail: str


@dataclass
class Window:
    """The measured interval (perf_counter seconds); requests started before it are warm-up."""

    start: float
    end: float
    last_finish: float = 0.0


def run_load_process(plan: LoadPlan) -> ApiFigures:
    """Run the load generator in its own process (``python -m banking.bench --load``) so it
    shares no event loop with the server nor with the orchestrating process."""
    with tempfile.TemporaryDirectory(prefix="banking-bench-") as directory:
        plan_path, result_path = Path(directory, "plan.json"), Path(directory, "result.json")
        plan_path.write_text(plan.to_json())
        command = [sys.executable, "-m", "banking.bench", "--load", str(plan_path),
                   "--result", str(result_path)]
        completed = subprocess.run(  # noqa: S603 - our own interpreter and module
            command, timeout=plan.warmup_seconds + plan.duration_seconds
            + LOAD_TIMEOUT_MARGIN_SECONDS, check=False,
        )
        if completed.returncode != 0 or not result_path.exists():
            raise BenchFailed(f"the load generator exited with {completed.returncode}")
        return ApiFigures(**json.loads(result_path.read_text()))


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
    async with aiohttp.ClientSession(plan.base_url, connector=connector,
                                     timeout=timeout) as session:
        start = time.perf_counter() + plan.warmup_seconds
        window = Window(start, start + plan.duration_seconds)
        per_worker: list[list[Sample]] = [[] for _ in range(plan.concurrency)]
        cpu: CpuFigures = {}
        await asyncio.gather(
            _measure_cpu(plan, window, cpu),
            *(_worker(session, plan, index, window, samples)
              for index, samples in enumerate(per_worker)),
        )
    samples = [sample for worker in per_worker for sample in worker]
    figures = summarize(plan.concurrency, samples, max(window.last_finish, window.end) - start)
    figures.cpu.update(cpu)
    figures.cpu.update(cpu_per_operation_ms(cpu, figures.requests_per_second, "request"))
    return figures


def cpu_per_operation_ms(
    cpu: CpuFigures, operations_per_second: float, operation: str,
    parties: tuple[str, ...] = ("server", "postgres"),
) -> CpuFigures:
    """CPU milliseconds the server and PostgreSQL spend per request (or pgbench transaction):
    steadier from run to run than rates on a shared machine."""
    figures: CpuFigures = {}
    for party in parties:
        cores = cpu.get(f"{party}_cores")
        if isinstance(cores, float) and operations_per_second > 0:
            figures[f"{party}_cpu_ms_per_{operation}"] = round(
                1000 * cores / operations_per_second, 3
            )
    return figures


async def _measure_cpu(plan: LoadPlan, window: Window, cpu: CpuFigures) -> None:
    await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
    before = cpu_snapshot(plan.server_pid, plan.postgres_pid)
    await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
    cpu.update(cpu_figures(before, cpu_snapshot(plan.server_pid, plan.postgres_pid)))


async def _worker(
    session: aiohttp.ClientSession, plan: LoadPlan, worker_index: int, window: Window,
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
        async with session.post(operation.path, json=operation.body,
                                headers=operation.headers) as response:
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
    body = {"account_id": account_id, "amount": amount, "currency": CURRENCY,
            "reference_id": reference_id}
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
    body = {"source_account_id": source, "destination_account_id": destination,
            "amount": amount, "currency": CURRENCY, "reference_id": reference_id}
    return Operation(KIND_TRANSFER, "/api/v1/transactions/transfer",
                     _auth(plan.customers[owner].token), body)


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


# --- figures -----------------------------------------------------------------------------


def summarize(concurrency: int, samples: Sequence[Sample], measured_seconds: float) -> ApiFigures:
    """Rates, latency percentiles and outcome counts of the measured requests."""
    transfers = [s for s in samples if s.kind == KIND_TRANSFER]
    transfer_latencies = sorted(s.latency_seconds for s in transfers if s.outcome == OUTCOME_OK)
    all_latencies = sorted(s.latency_seconds for s in samples)
    seconds = max(measured_seconds, 1e-9)
    ok_transfers = len(transfer_latencies)
    errors = Counter(s.detail for s in samples if s.outcome == OUTCOME_ERROR)
    return ApiFigures(
        concurrency=concurrency,
        measured_seconds=round(measured_seconds, 3),
        requests=len(samples),
        transfers=ok_transfers,
        requests_per_second=round(len(samples) / seconds, 1),
        transfers_per_second=round(ok_transfers / seconds, 1),
        p50_ms=percentile_ms(transfer_latencies, 0.50),
        p95_ms=percentile_ms(transfer_latencies, 0.95),
        p99_ms=percentile_ms(transfer_latencies, 0.99),
        all_p50_ms=percentile_ms(all_latencies, 0.50),
        all_p95_ms=percentile_ms(all_latencies, 0.95),
        all_p99_ms=percentile_ms(all_latencies, 0.99),
        errors=sum(errors.values()),
        declined=sum(1 for s in samples if s.outcome == OUTCOME_DECLINED),
        by_kind=_by_kind(samples),
        error_details=dict(errors.most_common(ERROR_DETAILS_MAX)),
    )


def percentile_ms(sorted_seconds: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of sorted latencies in seconds, in milliseconds."""
    if not sorted_seconds:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_seconds)))
    return round(sorted_seconds[rank - 1] * 1000, 2)


def _by_kind(samples: Sequence[Sample]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for sample in samples:
        per_outcome = counts.setdefault(sample.kind, {})
        per_outcome[sample.outcome] = per_outcome.get(sample.outcome, 0) + 1
    return counts


# --- CPU accounting over the measured window (Linux /proc; None elsewhere) --------------


@dataclass(frozen=True)
class CpuSnapshot:
    """Cumulative CPU seconds at one instant: whole machine, server and PostgreSQL process
    trees, and the client (this process, or its waited-for children such as pgbench)."""

    wall_seconds: float
    machine_busy_seconds: float | None
    server_seconds: float | None
    server_process_seconds: dict[int, float]
    postgres_seconds: float | None
    client_seconds: float


def cpu_snapshot(
    server_pid: int, postgres_pid: int | None, client: int = resource.RUSAGE_SELF
) -> CpuSnapshot:
    """Read /proc once; a tree is the process and all its descendants. ``client`` is
    ``RUSAGE_SELF`` (the load generator) or ``RUSAGE_CHILDREN`` (pgbench, once waited for)."""
    stats = dict(_process_stats())
    usage = resource.getrusage(client)
    return CpuSnapshot(
        wall_seconds=time.perf_counter(),
        machine_busy_seconds=_machine_busy_seconds(),
        server_seconds=_tree_cpu_seconds(stats, server_pid),
        server_process_seconds=_per_process_seconds(stats, server_pid),
        postgres_seconds=None if postgres_pid is None else _tree_cpu_seconds(stats, postgres_pid),
        client_seconds=usage.ru_utime + usage.ru_stime,
    )


def cpu_figures(before: CpuSnapshot, after: CpuSnapshot) -> CpuFigures:
    """Average cores used by each party between two snapshots; ``other`` is everything else
    on the machine (other users' processes, the kernel); ``server_process_cores`` splits the
    server's share by process (the uvicorn master first, by pid, then its workers)."""
    wall = max(after.wall_seconds - before.wall_seconds, 1e-9)

    def cores(first: float | None, last: float | None) -> float | None:
        return None if first is None or last is None else round((last - first) / wall, 2)

    figures: dict[str, float | None] = {
        "machine_cores": cores(before.machine_busy_seconds, after.machine_busy_seconds),
        "server_cores": cores(before.server_seconds, after.server_seconds),
        "postgres_cores": cores(before.postgres_seconds, after.postgres_seconds),
        "client_cores": cores(before.client_seconds, after.client_seconds),
    }
    parts = [figures["server_cores"], figures["postgres_cores"], figures["client_cores"]]
    machine = figures["machine_cores"]
    figures["other_cores"] = (
        None if machine is None or None in parts
        else round(max(0.0, machine - sum(p for p in parts if p is not None)), 2)
    )
    per_process: list[float] = [
        round((last - before.server_process_seconds[pid]) / wall, 2)
        for pid, last in after.server_process_seconds.items()
        if pid in before.server_process_seconds
    ]
    return {**figures, "server_process_cores": per_process}


def _tree_cpu_seconds(stats: dict[int, tuple[int, int]], root_pid: int) -> float | None:
    if root_pid not in stats:
        return None
    return sum(_per_process_seconds(stats, root_pid).values())


def _per_process_seconds(stats: dict[int, tuple[int, int]], root_pid: int) -> dict[int, float]:
    """CPU seconds of each process of the tree under ``root_pid`` (itself included)."""
    pids, frontier = {root_pid}, [root_pid]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _) in stats.items() if ppid == parent]
        pids.update(children)
        frontier.extend(children)
    ticks_per_second = os.sysconf("SC_CLK_TCK")
    return {pid: stats[pid][1] / ticks_per_second for pid in sorted(pids) if pid in stats}


def _process_stats() -> Iterator[tuple[int, tuple[int, int]]]:
    """(pid, (parent pid, CPU clock ticks)) of every readable process."""
    with contextlib.suppress(OSError):
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            fields = text[text.rindex(")") + 2:].split()
            # utime + stime + the reaped children's cutime + cstime: a tree's sum stays
            # continuous when a child (a closed PostgreSQL backend) exits between snapshots.
            ticks = sum(int(value) for value in fields[11:15])
            yield int(entry.name), (int(fields[1]), ticks)


def machine_busy_cores(interval_seconds: float) -> float | None:
    """Average busy cores of the whole machine over the next ``interval_seconds``."""
    first = _machine_busy_seconds()
    time.sleep(interval_seconds)
    last = _machine_busy_seconds()
    if first is None or last is None:
        return None
    return round((last - first) / interval_seconds, 2)


def _machine_busy_seconds() -> float | None:
    """Busy (not idle, not I/O wait) CPU seconds of the whole machine since boot."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def postmaster_pid_of(backend_pid: int) -> int | None:
    """The PostgreSQL postmaster (parent of a backend) when it runs on this machine."""
    stats = dict(_process_stats())
    found = stats.get(backend_pid)
    return found[0] if found else None


# --- report ------------------------------------------------------------------------------


def build_report(
    config: BenchConfig, started_at: str, server_version: str,
    rounds: dict[int, RoundFigures], books: ReconcileReport,
) -> dict[str, Any]:
    """The JSON document of one run."""
    return {
        "schema_version": 1,
        "started_at": started_at,
        "finished_at": _now_iso(),
        "machine": _machine_info(server_version),
        "settings": _settings_info(config),
        "results": {str(c): figures.as_dict() for c, figures in rounds.items()},
        "reconcile_clean": books.clean,
        "reconcile_problems": books.problems[:RECONCILE_PROBLEMS_REPORTED_MAX],
    }


def _settings_info(config: BenchConfig) -> dict[str, Any]:
    return {
        "workers": config.workers,
        "duration_seconds": config.duration_seconds,
        "warmup_seconds": config.warmup_seconds,
        "concurrencies": list(config.concurrencies),
        "database_pool_size": config.pool_size,
        "database_pool_overflow": SERVER_POOL_OVERFLOW,
        "log_level": SERVER_LOG_LEVEL,
        "log_json": SERVER_LOG_JSON,
        "metrics_enabled": SERVER_METRICS_ENABLED,
        "rate_limit_default": SERVER_RATE_LIMIT_DEFAULT,
        "banking_env": Environment.PRODUCTION.value,
        "workload": {
            "customers": CUSTOMERS_COUNT,
            "accounts_per_customer": ACCOUNTS_PER_CUSTOMER,
            "hot_accounts": HOT_ACCOUNTS_COUNT,
            "funding_amount": str(FUNDING_AMOUNT),
            "transfer_share": TRANSFER_SHARE,
            "debit_share": DEBIT_SHARE,
            "credit_share": round(1 - TRANSFER_SHARE - DEBIT_SHARE, 2),
            "hot_share": HOT_SHARE,
            "amounts": f"{AMOUNT_CENTS_MIN / 100:.2f}-{AMOUNT_CENTS_MAX / 100:.2f}",
        },
        "pgbench": {"scale": PGBENCH_SCALE, "threads_max": PGBENCH_THREADS_MAX,
                    "options": "-n (no vacuum)"},
    }


def _machine_info(server_version: str) -> dict[str, Any]:
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "postgresql": server_version,
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def _git(*arguments: str) -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    try:
        result = subprocess.run(  # noqa: S603 - git with fixed arguments
            [git, *arguments], cwd=Path(__file__).resolve().parent, capture_output=True,
            text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def write_report(report: dict[str, Any], output: Path) -> None:
    """The JSON file, and the same document as one line of ``history.jsonl`` next to it."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    with (output.parent / "history.jsonl").open("a") as history:
        history.write(json.dumps(report, separators=(",", ":")) + "\n")


def print_table(rounds: dict[int, RoundFigures]) -> None:
    """The figures as a fixed-width table on standard output."""
    header = (f"{'conc':>4} {'req/s':>8} {'xfer/s':>8} {'xfer p50/p95/p99 ms':>22} "
              f"{'all p50/p95/p99 ms':>22} {'err':>5} {'decl':>5} {'pgbench':>8} "
              f"{'xfer/tps':>8} {'req/tps':>8}")
    _say("")
    _say(header)
    _say("-" * len(header))
    for concurrency, figures in rounds.items():
        api, ratios = figures.api, figures.as_dict()["ratio_api_to_pgbench"]
        _say(
            f"{concurrency:>4} {api.requests_per_second:>8.1f} {api.transfers_per_second:>8.1f} "
            f"{_triple(api.p50_ms, api.p95_ms, api.p99_ms):>22} "
            f"{_triple(api.all_p50_ms, api.all_p95_ms, api.all_p99_ms):>22} "
            f"{api.errors:>5} {api.declined:>5} {figures.pgbench_tps:>8.1f} "
            f"{_fixed(ratios['transfers_per_second']):>8} "
            f"{_fixed(ratios['requests_per_second']):>8}"
        )
    _say("")
    _say("average cores busy (server / postgres / client / anything else):")
    for concurrency, figures in rounds.items():
        _say(f"{concurrency:>4} API run: {_cores(figures.api.cpu)} (server by process: "
             f"{figures.api.cpu.get('server_process_cores')}); "
             f"pgbench run: {_cores(figures.pgbench_cpu)}")
    _say("CPU ms per API request (server + postgres) and per pgbench transaction (postgres):")
    for concurrency, figures in rounds.items():
        api_cpu, pgbench_cpu = figures.api.cpu, figures.pgbench_cpu
        _say(f"{concurrency:>4} API: {_number(api_cpu.get('server_cpu_ms_per_request'))} + "
             f"{_number(api_cpu.get('postgres_cpu_ms_per_request'))}; "
             f"pgbench: {_number(pgbench_cpu.get('postgres_cpu_ms_per_transaction'))}")
    _say("")


def _number(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, float) else "-"


def _cores(cpu: CpuFigures) -> str:
    keys = ("server_cores", "postgres_cores", "client_cores", "other_cores")
    return " / ".join(_number(cpu.get(key)) for key in keys)


def _triple(*values: float | None) -> str:
    return "/".join("-" if value is None else f"{value:.1f}" for value in values)


def _fixed(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- python -m banking.bench --load PLAN --result FILE ------------------------------------


def _load_main(arguments: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m banking.bench",
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
    sys.exit(_load_main())
