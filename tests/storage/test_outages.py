"""The database restarting is an outage everywhere, never a 500: on a private PostgreSQL cluster
(its own data dir and port, started by ``scripts/services/postgres.sh``; never the shared one,
which other tests use), a real ``banking serve`` (REST and gRPC in one process) is sent debits
while the cluster is in a smart shutdown (a held session keeps it half-up: new connections are
refused with SQLSTATE 57P03), fully down, and restarted abruptly (``pg_ctl -m immediate``).

Every answer is a business answer (200, 422) or 503 with ``Retry-After`` (gRPC ``UNAVAILABLE``),
no traceback is logged, and afterwards every unknown outcome retried with its key settles:
the balances are exactly the acknowledged debits, the books reconcile. The workers wait out an
outage: a command is applied once the database is back, and an outage never spends a dead
letter's retries nor parks it in the permanent DLQ.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from banking.bootstrap import build_container
from banking.container import Container
from banking.domain.records import DebitOrCredit, TransactionStatus, TransactionType
from banking.domain.roles import Actor, Role
from banking.events import topics
from banking.events.outbox import EVENT_TRANSACTION_SUBMITTED
from banking.events.relay import message_of
from banking.events.serialization import EventFormat
from banking.events.transport import InProcessBus, Message
from banking.grpc.client import BankingClient, BankingClientError
from banking.ledger.reconcile import reconcile
from banking.storage import database as database_module
from banking.storage import repositories as repo
from banking.storage.database import (
    Database,
    DatabaseUnavailable,
    create_engine,
    is_outage,
    sqlstate_of,
)
from banking.storage.migrate import upgrade
from banking.workers.dead_letter_handler import DeadLetterHandler
from banking.workers.dead_letters import DeadLetters
from banking.workers.processor import CommandProcessor
from tests.conftest import make_settings
from tests.support.processes import ServerProcess, free_port

pytestmark = pytest.mark.postgres

REPO_ROOT = Path(__file__).resolve().parents[2]
POSTGRES_SCRIPT = REPO_ROOT / "scripts" / "services" / "postgres.sh"
PG_BIN = Path(os.environ.get("BANKING_PG_BIN", "/usr/lib/postgresql/15/bin"))
SCRIPT_TIMEOUT_SECONDS = 60
WAIT_SECONDS_MAX = 15.0  # any single wait of this file (a state of the server, a recovery)
# Longer than the unit of work's whole retry budget (5 retries, at most 1 s each), so requests
# that arrive while the server is down run out of retries and must answer 503.
DOWN_SECONDS = 3.5
FUNDED = Decimal("1000.00")
POOR_FUNDED = Decimal("3.00")  # 2.00 debits on it: one succeeds, the rest are declined
TOKEN_SECRET = "outage-test-secret-that-is-long-enough-0123456789"


class PrivatePostgres:
    """A PostgreSQL cluster of this module only, in a temporary directory on a free port."""

    def __init__(self) -> None:
        # Under /tmp and world-readable: the server runs as the OS user postgres, which must
        # reach the data dir (pytest's own tmp dirs are private to the user running the tests).
        self.root = Path(tempfile.mkdtemp(prefix="banking-outage-", dir="/tmp"))
        self.root.chmod(0o755)
        self.port = free_port()
        self.env = {
            **os.environ,
            "BANKING_SERVICES_DIR": str(self.root),
            "BANKING_PG_PORT": str(self.port),
        }
        self.data_dir = self.root / "postgres" / "data"
        self.log_file = self.root / "postgres" / "postgres.log"
        self.url = f"postgresql+asyncpg://banking:banking@127.0.0.1:{self.port}/banking_test"
        self.dsn = f"postgresql://banking:banking@127.0.0.1:{self.port}/banking_test"

    def script(self, command: str) -> None:
        result = subprocess.run(
            ["bash", str(POSTGRES_SCRIPT), command],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT_SECONDS,
            check=False,
        )
        assert result.returncode == 0, f"postgres.sh {command}: {result.stderr}"

    def pg_ctl(self, *arguments: str, check: bool = True) -> int:
        """``pg_ctl -D <data dir> ARGS`` as the cluster's owner (postgres when we are root)."""
        command = [str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), *arguments]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_SECONDS, check=False
        )
        if check:
            assert result.returncode == 0, f"pg_ctl {arguments}: {result.stdout}{result.stderr}"
        return result.returncode

    def smart_stop(self) -> None:
        """Ask for a smart shutdown and return at once: the server refuses new connections
        until every session has ended."""
        self.pg_ctl("-m", "smart", "-W", "stop")

    def immediate_stop(self) -> None:
        self.pg_ctl("-m", "immediate", "-w", "-t", "30", "stop")

    def start(self) -> None:
        self.pg_ctl("-l", str(self.log_file), "-w", "-t", "30", "start")

    def is_running(self) -> bool:
        return self.pg_ctl("status", check=False) == 0

    def remove(self) -> None:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            self.script("clean")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.script("start")
        upgrade(server.url)
        yield server
    finally:
        server.remove()


@pytest.fixture
def running_postgres(private_postgres: PrivatePostgres) -> PrivatePostgres:
    """The private cluster, started again if a test before left it stopped."""
    if not private_postgres.is_running():
        private_postgres.start()
    return private_postgres


async def wait_until(check: Any, what: str, timeout_seconds: float = WAIT_SECONDS_MAX) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def refuses_new_connections(dsn: str) -> bool:
    try:
        connection = await asyncpg.connect(dsn, timeout=2)
    except asyncpg.CannotConnectNowError:
        return True
    await connection.close()
    return False


# --- the classification itself, on real errors ------------------------------------------------


async def test_classification_of_real_database_errors(running_postgres: PrivatePostgres) -> None:
    database = Database(create_engine(make_settings(running_postgres.url)))
    try:
        with pytest.raises(DBAPIError) as syntax:
            async with database.read() as connection:
                await connection.execute(text("SELEC 1"))
        assert not is_outage(syntax.value)  # a bug is a 500, not a 503

        with pytest.raises(DBAPIError) as unique:
            async with database.unit_of_work() as connection:
                await connection.execute(text("CREATE TEMP TABLE t (k int PRIMARY KEY)"))
                await connection.execute(text("INSERT INTO t VALUES (1), (1)"))
        assert not is_outage(unique.value)
    finally:
        await database.dispose()

    # Every pooled connection busy past the pool timeout: an outage (503), not retried in place
    # (the request already waited its whole timeout).
    engine = create_async_engine(
        running_postgres.url, pool_size=1, max_overflow=0, pool_timeout=0.2
    )
    busy = Database(engine)
    retries: list[int] = []
    busy.on_retry = lambda: retries.append(1)
    try:
        async with busy.read():

            async def nothing(_connection: AsyncConnection) -> None:
                return None

            with pytest.raises(DatabaseUnavailable) as exhausted:
                await busy.run_in_transaction(nothing)
        assert is_outage(exhausted.value) and exhausted.value.timed_out
        assert retries == []
    finally:
        await busy.dispose()

    # Nothing listens on a free port: the refused connection is one outage type.
    nowhere = Database(
        create_engine(
            make_settings(f"postgresql+asyncpg://banking:banking@127.0.0.1:{free_port()}/x")
        )
    )
    try:
        with pytest.raises(DatabaseUnavailable) as refused:
            async with nowhere.read():
                pass
        assert is_outage(refused.value)
        assert isinstance(refused.value.__cause__, ConnectionRefusedError)
    finally:
        await nowhere.dispose()


async def test_classification_of_real_sqlite_errors(tmp_path: Path) -> None:
    # A directory where the database file should be: SQLite cannot open it (an outage).
    unopenable = Database(create_engine(make_settings(f"sqlite+aiosqlite:///{tmp_path}")))
    try:
        with pytest.raises(DBAPIError) as cannot_open:
            async with unopenable.read() as connection:
                await connection.execute(text("SELECT 1"))
        assert is_outage(cannot_open.value)
    finally:
        await unopenable.dispose()

    database = Database(create_engine(make_settings(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}")))
    try:
        with pytest.raises(DBAPIError) as missing:
            async with database.read() as connection:
                await connection.execute(text("SELECT * FROM no_such_table"))
        assert not is_outage(missing.value)  # a bug, not an outage
    finally:
        await database.dispose()


# --- the doors during a restart -----------------------------------------------------------------


@dataclass
class Outcome:
    """One attempt to debit: which door, which key, what it answered."""

    door: str
    account_id: str
    amount: Decimal
    reference_id: str
    result: str  # ok, declined, unavailable, or "bad: ..." for anything else
    phase: str


@dataclass
class Api:
    """The real ``banking serve`` on the private cluster, and a customer who owns accounts."""

    server: ServerProcess
    base: str
    grpc_target: str
    customer: dict[str, str]
    token: str
    accounts: list[str]
    poor_account: str
    container: Container
    outcomes: list[Outcome] = field(default_factory=list)

    def funded(self, account_id: str) -> Decimal:
        return POOR_FUNDED if account_id == self.poor_account else FUNDED

    def amount_for(self, account_id: str) -> Decimal:
        return Decimal("2.00") if account_id == self.poor_account else Decimal("1.00")


def rest_result(response: httpx.Response) -> str:
    if response.status_code == 200:
        return "ok"
    if response.status_code == 422 and response.json()["error"]["code"] == "INSUFFICIENT_FUNDS":
        return "declined"
    if (
        response.status_code == 503
        and response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
        and int(response.headers["Retry-After"]) >= 1
    ):
        return "unavailable"
    return f"bad: {response.status_code} {response.headers} {response.text[:500]}"


async def rest_debit(
    api: Api, client: httpx.AsyncClient, account_id: str, reference_id: str, phase: str
) -> Outcome:
    amount = api.amount_for(account_id)
    response = await client.post(
        "/api/v1/transactions/debit",
        json={
            "account_id": account_id,
            "amount": str(amount),
            "currency": "USD",
            "reference_id": reference_id,
        },
        headers=api.customer,
    )
    outcome = Outcome("rest", account_id, amount, reference_id, rest_result(response), phase)
    api.outcomes.append(outcome)
    return outcome


async def grpc_debit(
    api: Api, client: BankingClient, account_id: str, reference_id: str, phase: str
) -> Outcome:
    amount = api.amount_for(account_id)
    try:
        await client.debit(account_id, amount, "USD", reference_id=reference_id)
        result = "ok"
    except BankingClientError as error:
        result = {
            grpc.StatusCode.FAILED_PRECONDITION: "declined",
            grpc.StatusCode.UNAVAILABLE: "unavailable",
        }.get(error.status, f"bad: {error.status.name} {error.message}")
    outcome = Outcome("grpc", account_id, amount, reference_id, result, phase)
    api.outcomes.append(outcome)
    return outcome


async def burst(
    api: Api, rest: httpx.AsyncClient, grpc_client: BankingClient, *, count: int, phase: str
) -> list[Outcome]:
    """``count`` concurrent debits, one in six through gRPC, spread over the accounts."""
    calls = []
    for index in range(count):
        account_id = [*api.accounts, api.poor_account][index % (len(api.accounts) + 1)]
        key = f"{phase}-{index}-{uuid.uuid4().hex[:8]}"
        if index % 6 == 5:
            calls.append(grpc_debit(api, grpc_client, account_id, key, phase))
        else:
            calls.append(rest_debit(api, rest, account_id, key, phase))
    return list(await asyncio.gather(*calls))


@pytest.fixture
async def api(running_postgres: PrivatePostgres, tmp_path: Path) -> AsyncIterator[Api]:
    settings = make_settings(running_postgres.url, jwt_secret=TOKEN_SECRET)
    container = build_container(settings)
    teller = await container.users.create(
        None,
        username=f"teller-{uuid.uuid4().hex[:8]}",
        email=f"teller-{uuid.uuid4().hex[:8]}@example.com",
        password="correct-horse-battery",
        role=Role.TELLER,
    )
    customer = await container.users.create(
        None,
        username=f"carol-{uuid.uuid4().hex[:8]}",
        email=f"carol-{uuid.uuid4().hex[:8]}@example.com",
        password="correct-horse-battery",
        role=Role.CUSTOMER,
    )
    token = container.tokens.issue(customer.user_id, customer.username, Role.CUSTOMER)
    staff = {
        "Authorization": "Bearer "
        + container.tokens.issue(teller.user_id, teller.username, Role.TELLER)
    }
    port, grpc_port = free_port(), free_port()
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if k not in {"BANKING_ENV", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"}
        },
        "DATABASE_URL": running_postgres.url,
        "JWT_SECRET": TOKEN_SECRET,
        "DATA_DIR": str(tmp_path / "data"),
        "LOG_LEVEL": "INFO",
        # A small pool: the smart-shutdown window must need new connections to serve the burst.
        "DATABASE_POOL_SIZE": "3",
        "DATABASE_POOL_OVERFLOW": "20",
        "RATE_LIMIT_DEFAULT": "100000/second",
    }
    base = f"http://127.0.0.1:{port}"
    server = ServerProcess(
        [
            *(sys.executable, "-m", "banking.cli", "serve", "--no-migrate"),
            *("--port", str(port), "--grpc-port", str(grpc_port)),
        ],
        env=env,
        log_path=tmp_path / "serve.log",
        ready=f"{base}/ready",
        timeout=60,
    ).start()
    try:
        accounts = []
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            for funded in (FUNDED, FUNDED, FUNDED, POOR_FUNDED):
                opened = await client.post(
                    "/api/v1/accounts",
                    json={
                        "account_type": "checking",
                        "currency": "USD",
                        "customer_id": str(customer.user_id),
                    },
                    headers=staff,
                )
                assert opened.status_code == 201, opened.text
                account_id = opened.json()["account_id"]
                credited = await client.post(
                    "/api/v1/transactions/credit",
                    json={"account_id": account_id, "amount": str(funded), "currency": "USD"},
                    headers=staff,
                )
                assert credited.status_code == 200, credited.text
                accounts.append(account_id)
        yield Api(
            server=server,
            base=base,
            grpc_target=f"127.0.0.1:{grpc_port}",
            customer={"Authorization": f"Bearer {token}"},
            token=token,
            accounts=accounts[:3],
            poor_account=accounts[3],
            container=container,
        )
    finally:
        server.stop()
        await container.close()


def assert_only_business_or_outage(outcomes: list[Outcome]) -> None:
    bad = [o for o in outcomes if o.result not in {"ok", "declined", "unavailable"}]
    assert not bad, bad[:5]


async def test_debits_get_503_or_unavailable_while_postgres_restarts(
    api: Api, running_postgres: PrivatePostgres
) -> None:
    pg = running_postgres
    started = time.monotonic()
    async with (
        httpx.AsyncClient(base_url=api.base, timeout=30) as rest,
        BankingClient(api.grpc_target, api.token, timeout_seconds=30) as grpc_client,
    ):
        warm = await burst(api, rest, grpc_client, count=12, phase="before")
        assert {o.result for o in warm} <= {"ok", "declined"}, warm

        # Smart shutdown: one session (pg_sleep) keeps the server up, new connections get 57P03.
        control = await asyncpg.connect(pg.dsn)
        sleeper = await asyncpg.connect(pg.dsn)
        sleeper_pid = sleeper.get_server_pid()
        sleeping = asyncio.create_task(sleeper.execute("SELECT pg_sleep(60)"))
        try:
            pg.smart_stop()
            await wait_until(lambda: refuses_new_connections(pg.dsn), "the smart shutdown")
            fresh = Database(create_engine(make_settings(pg.url)))
            with pytest.raises(DBAPIError) as cannot_connect_now:
                async with fresh.read():
                    pass
            await fresh.dispose()
            assert sqlstate_of(cannot_connect_now.value) == "57P03"  # the issue's error ...
            assert is_outage(cannot_connect_now.value)  # ... is an outage

            # The API's pooled connections still work, new ones are refused: a mix.
            mixed = await burst(api, rest, grpc_client, count=60, phase="smart")
            assert_only_business_or_outage(mixed)

            # End the API's sessions: now no request can get a connection at all.
            await control.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                " AND pid <> $1",
                sleeper_pid,
            )
            refused = await burst(api, rest, grpc_client, count=24, phase="smart-no-sessions")
            assert {(o.door, o.result) for o in refused} == {
                ("rest", "unavailable"),
                ("grpc", "unavailable"),
            }, refused
            balance = await rest.get(
                f"/api/v1/accounts/{api.accounts[0]}/balance", headers=api.customer
            )
            assert rest_result(balance) == "unavailable"
        finally:
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await control.execute("SELECT pg_cancel_backend($1)", sleeper_pid)
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await sleeping
            await sleeper.close()
            await control.close()

        # The last session ended: the server shuts down. Connections are refused outright.
        async def stopped() -> bool:
            return not pg.is_running()

        await wait_until(stopped, "the smart shutdown to finish")
        down = await burst(api, rest, grpc_client, count=12, phase="down")
        assert {o.result for o in down} == {"unavailable"}, down
        pg.start()

        async def debits_again() -> bool:
            outcome = await rest_debit(api, rest, api.accounts[0], f"up-{uuid.uuid4()}", "up")
            return outcome.result == "ok"

        await wait_until(debits_again, "debits after the restart")

        # An abrupt restart under load: every pooled connection dies at once.
        stop_load = asyncio.Event()
        key_numbers = iter(range(1_000_000))

        async def load(door: str, account_id: str) -> None:
            while not stop_load.is_set():
                key = f"load-{door}-{next(key_numbers)}-{uuid.uuid4().hex[:8]}"
                if door == "rest":
                    await rest_debit(api, rest, account_id, key, "immediate")
                else:
                    await grpc_debit(api, grpc_client, account_id, key, "immediate")
                await asyncio.sleep(0.01)

        loaders = [
            asyncio.create_task(load(door, account_id))
            for door in ("rest", "rest", "grpc")
            for account_id in (*api.accounts, api.poor_account)
        ]
        try:
            await asyncio.sleep(0.5)
            pg.immediate_stop()
            await asyncio.sleep(DOWN_SECONDS)
            pg.start()
            restarted = len(api.outcomes)

            async def recovered() -> bool:
                after = api.outcomes[restarted:]
                return sum(o.result == "ok" for o in after) >= 20

            await wait_until(recovered, "the load to recover after the abrupt restart")
        finally:
            stop_load.set()
            await asyncio.gather(*loaders)
        abrupt = [o for o in api.outcomes if o.phase == "immediate"]
        assert_only_business_or_outage(abrupt)
        assert {o.door for o in abrupt if o.result == "unavailable"} == {"rest", "grpc"}

        # Every unknown outcome, retried with its key, settles as a business answer.
        unknown = [o for o in api.outcomes if o.result == "unavailable"]
        for outcome in unknown:
            if outcome.door == "rest":
                retried = await rest_debit(
                    api, rest, outcome.account_id, outcome.reference_id, "resolve"
                )
            else:
                retried = await grpc_debit(
                    api, grpc_client, outcome.account_id, outcome.reference_id, "resolve"
                )
            assert retried.result in {"ok", "declined"}, retried

        final: dict[tuple[str, str], Outcome] = {}
        for outcome in api.outcomes:
            final[(outcome.account_id, outcome.reference_id)] = outcome
        for account_id in (*api.accounts, api.poor_account):
            debited = sum(
                (
                    o.amount
                    for o in final.values()
                    if o.account_id == account_id and o.result == "ok"
                ),
                Decimal(0),
            )
            response = await rest.get(
                f"/api/v1/accounts/{account_id}/balance", headers=api.customer
            )
            assert response.status_code == 200, response.text
            assert Decimal(response.json()["available_balance"]) == api.funded(account_id) - debited

    await api.container.database.dispose()  # its pooled connections died with the server
    report = await reconcile(api.container.unit_of_work)
    assert report.clean, report.problems
    output = api.server.output()
    assert "Traceback" not in output
    assert "unhandled_error" not in output  # REST's and gRPC's last-resort handlers
    assert "dependency_unavailable" in output and "grpc_dependency_unavailable" in output
    counts = Counter((o.phase, o.result) for o in api.outcomes)
    print(f"outcomes {sorted(counts.items())}; took {time.monotonic() - started:.1f} s")


# --- the workers -------------------------------------------------------------------------------


@dataclass
class Captured:
    """The dead letters a worker sent, by topic (an in-process bus stands in for Kafka)."""

    bus: InProcessBus = field(default_factory=InProcessBus)
    messages: dict[str, list[Message]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for topic in (topics.TRANSACTIONS_DLQ, topics.TRANSACTIONS_PERMANENT_DLQ):
            self.messages[topic] = []
            self.bus.subscribe(topic, self._keep(topic))

    def _keep(self, topic: str) -> Any:
        async def keep(message: Message) -> None:
            self.messages[topic].append(message)

        return keep


async def submitted_command(
    container: Container, customer: Actor, account_id: uuid.UUID, amount: str
) -> tuple[uuid.UUID, Message]:
    """A debit accepted for asynchronous processing, and its command message as the relay
    would publish it."""
    accepted = await container.movements.submit(
        customer,
        TransactionType.DEBIT,
        DebitOrCredit(account_id, Decimal(amount), "USD", None, f"async-{uuid.uuid4()}"),
    )
    async with container.database.read() as connection:
        # Every unpublished row: earlier tests on this server leave many (no relay runs here).
        rows = await repo.fetch_unpublished(connection, 1_000_000)
    (row,) = [
        r
        for r in rows
        if r.event_type == EVENT_TRANSACTION_SUBMITTED
        and str(accepted.transaction.transaction_id) in r.payload
    ]
    return accepted.transaction.transaction_id, message_of(row, EventFormat.JSON)


async def leg_status(container: Container, customer: Actor, leg_id: uuid.UUID) -> TransactionStatus:
    return (await container.movements.get_transaction(customer, leg_id)).status


async def test_workers_wait_out_an_outage_and_never_park_it(
    running_postgres: PrivatePostgres,
) -> None:
    pg = running_postgres
    # One retry per unit of work: the waits under test are the workers' own.
    container = build_container(make_settings(pg.url, transaction_retries_max=1))
    try:
        teller_user = await container.users.create(
            None,
            username=f"teller-{uuid.uuid4().hex[:8]}",
            email=f"teller-{uuid.uuid4().hex[:8]}@example.com",
            password="correct-horse-battery",
            role=Role.TELLER,
        )
        customer_user = await container.users.create(
            None,
            username=f"dave-{uuid.uuid4().hex[:8]}",
            email=f"dave-{uuid.uuid4().hex[:8]}@example.com",
            password="correct-horse-battery",
            role=Role.CUSTOMER,
        )
        teller = Actor(teller_user.user_id, teller_user.username, Role.TELLER)
        customer = Actor(customer_user.user_id, customer_user.username, Role.CUSTOMER)
        account, _ = await container.accounts.open(
            teller, account_type="checking", currency="USD", customer_id=customer.user_id
        )
        await container.movements.credit(
            teller, DebitOrCredit(account.account_id, Decimal("100.00"), "USD", None, None)
        )
        captured = Captured()
        dead_letters = DeadLetters(captured.bus)

        # The processor waits while the database restarts, then applies the command once.
        first_leg, first = await submitted_command(container, customer, account.account_id, "10.00")
        processor = CommandProcessor(container.movements, dead_letters, outage_wait_seconds_max=30)
        pg.immediate_stop()
        handling = asyncio.create_task(processor.handle(first))
        await asyncio.sleep(2.0)
        assert not handling.done()  # waiting, not dead-lettered
        pg.start()
        await asyncio.wait_for(handling, timeout=WAIT_SECONDS_MAX)
        assert await leg_status(container, customer, first_leg) == TransactionStatus.COMPLETED
        assert captured.messages == {
            topics.TRANSACTIONS_DLQ: [],
            topics.TRANSACTIONS_PERMANENT_DLQ: [],
        }

        # A longer outage: the processor hands the command to the retry DLQ after its wait;
        # the DLQ handler's rounds during the outage spend no retry (retries_max=1 would park a
        # technical failure after one) and never reach the permanent DLQ.
        second_leg, second = await submitted_command(
            container, customer, account.account_id, "5.00"
        )
        short_wait = CommandProcessor(
            container.movements, dead_letters, outage_wait_seconds_max=0.5
        )
        handler = DeadLetterHandler(
            short_wait, dead_letters, retries_max=1, backoff_base_seconds=0.01
        )
        pg.immediate_stop()
        await short_wait.handle(second)
        retries = captured.messages[topics.TRANSACTIONS_DLQ]
        assert [m.headers["attempts"] for m in retries] == ["1"]
        for _ in range(3):
            await handler.handle(retries[-1])
        assert [m.headers["attempts"] for m in retries] == ["1", "1", "1", "1"]
        assert captured.messages[topics.TRANSACTIONS_PERMANENT_DLQ] == []
        pg.start()
        await handler.handle(retries[-1])
        assert len(retries) == 4  # applied: not sent back
        assert await leg_status(container, customer, second_leg) == TransactionStatus.COMPLETED
        assert captured.messages[topics.TRANSACTIONS_PERMANENT_DLQ] == []
        balance = await container.accounts.balance(customer, account.account_id)
        assert balance.available_balance == Decimal("85.00")
        report = await reconcile(container.unit_of_work)
        assert report.clean, report.problems
    finally:
        await container.close()
        if not pg.is_running():
            pg.start()


@pytest.mark.postgres
async def test_a_connection_that_sat_idle_through_a_restart_is_replaced_not_failed(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process with no traffic while the database restarted answers its first read after it
    (a read outside the unit of work, which is not retried): the idle pooled connection is
    pinged and replaced. Found by the fault suite (a 503 long after PostgreSQL was back)."""
    monkeypatch.setattr(database_module, "IDLE_PING_SECONDS", 0.2)
    database = Database(create_engine(make_settings(postgres_url)))
    try:
        async with database.read() as connection:
            server_pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar()
        # The server side of the pooled connection goes, as in a restart.
        admin = create_async_engine(postgres_url)
        async with admin.connect() as connection:
            assert (
                await connection.execute(
                    text("SELECT pg_terminate_backend(:pid)"), {"pid": server_pid}
                )
            ).scalar()
        await admin.dispose()
        await asyncio.sleep(0.5)  # idle for longer than IDLE_PING_SECONDS
        async with database.read() as connection:
            assert (await connection.execute(text("SELECT 1"))).scalar() == 1
            assert (await connection.execute(text("SELECT pg_backend_pid()"))).scalar() != (
                server_pid
            )
    finally:
        await database.dispose()
