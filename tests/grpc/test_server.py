"""The server around the services: metrics, message limits, an unavailable database, graceful
shutdown, the status table, and the `banking grpc` / `banking serve` processes."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from banking.bootstrap import build_container, create_rest_app
from banking.domain.errors import BankingError, BatchItemFailed
from banking.domain.roles import Role
from banking.grpc.client import BankingClient, BankingClientError
from banking.grpc.gen import accounts_pb2, accounts_pb2_grpc
from banking.grpc.interceptors import GRPC_STATUS_BY_CODE, rich_status
from banking.grpc.server import start_server
from tests.conftest import make_settings
from tests.grpc.conftest import GrpcBank
from tests.grpc.details import rich_error
from tests.support.processes import ServerProcess, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
BANKING = Path(sys.executable).with_name("banking")
PROCESS_START_SECONDS = 30.0


async def test_calls_are_counted_by_method_and_status_on_metrics(grpc_bank: GrpcBank) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("10.00")
    client = grpc_bank.client(customer)
    await client.debit(account_id, "1.00", "USD")
    with pytest.raises(BankingClientError):
        await client.debit(account_id, "100.00", "USD")

    exposition = (await grpc_bank.bank.client.get("/metrics")).text

    method = 'method="/banking.v1.TransactionService/DebitAccount"'
    assert f'banking_grpc_requests_total{{code="OK",{method}}} 1.0' in exposition
    assert f'banking_grpc_requests_total{{code="FAILED_PRECONDITION",{method}}} 1.0' in exposition
    assert f"banking_grpc_request_duration_seconds_count{{{method}}} 2.0" in exposition


async def test_a_request_above_the_size_limit_is_resource_exhausted(grpc_bank: GrpcBank) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("10.00")
    settings = grpc_bank.bank.container.settings
    # one limit for every method: the larger one, which batches need
    limit = max(settings.request_body_bytes_max, settings.batch_body_bytes_max)
    before = await grpc_bank.bank.snapshot()

    with pytest.raises(BankingClientError) as raised:
        await grpc_bank.client(customer).debit(
            account_id, "1.00", "USD", description="x" * (limit + 1)
        )

    assert raised.value.status is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await grpc_bank.bank.snapshot() == before


async def test_an_unreachable_database_is_unavailable() -> None:
    closed_port = free_port()
    container = build_container(
        make_settings(f"postgresql+asyncpg://banking:banking@127.0.0.1:{closed_port}/nowhere")
    )
    server = await start_server(container, host="127.0.0.1", port=0)
    token = container.tokens.issue(uuid.uuid4(), "someone", Role.CUSTOMER)
    try:
        async with BankingClient(f"127.0.0.1:{server.port}", token) as client:
            with pytest.raises(BankingClientError) as raised:
                await client.get_balance(uuid.uuid4())
    finally:
        await server.stop(0)
        await container.close()

    assert raised.value.status is grpc.StatusCode.UNAVAILABLE
    assert raised.value.code == "SERVICE_UNAVAILABLE"
    assert raised.value.message == "service is temporarily unavailable"
    assert raised.value.retry_delay == timedelta(seconds=1)  # RetryInfo: a retry can succeed


async def test_past_the_rate_limit_calls_are_resource_exhausted_in_a_budget_shared_with_rest(
    database_url: str,
) -> None:
    container = build_container(make_settings(database_url, rate_limit_default="3/minute"))
    server = await start_server(container, host="127.0.0.1", port=0)
    user = await container.users.create(
        None,
        username="someone",
        email="someone@example.com",
        password="correct-horse-battery",
        role=Role.CUSTOMER,
    )
    account_id = uuid.uuid4()
    token = container.tokens.issue(user.user_id, "someone", Role.CUSTOMER)
    transport = httpx.ASGITransport(app=create_rest_app(container, dispose_on_shutdown=False))
    try:
        async with (
            BankingClient(f"127.0.0.1:{server.port}", token) as client,
            httpx.AsyncClient(transport=transport, base_url="http://testserver") as rest,
            grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
        ):
            for _ in range(2):
                with pytest.raises(BankingClientError) as not_found:
                    await client.get_balance(account_id)
                assert not_found.value.status is grpc.StatusCode.NOT_FOUND
            over_rest = await rest.get(
                f"/api/v1/accounts/{account_id}/balance",
                headers={"Authorization": f"Bearer {token}"},
            )
            assert over_rest.status_code == 404
            call = accounts_pb2_grpc.AccountServiceStub(channel).GetBalance(
                accounts_pb2.GetBalanceRequest(account_id=str(account_id)),
                metadata=(("authorization", f"Bearer {token}"),),
            )
            with pytest.raises(grpc.aio.AioRpcError) as limited:
                await call
    finally:
        await server.stop(0)
        await container.close()

    assert limited.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert limited.value.details() == "too many requests; retry later"
    details = rich_error(limited.value)
    assert details.info.reason == "RATE_LIMITED"
    assert details.retry is not None and details.retry.retry_delay.seconds >= 1


async def test_graceful_shutdown_lets_calls_in_flight_finish_and_refuses_new_ones(
    grpc_bank: GrpcBank,
) -> None:
    _, customer, account_id = await grpc_bank.customer_with_account("10.00")
    bank = grpc_bank.bank
    # A second server on the same container, stopped by this test.
    server = await start_server(bank.container, host="127.0.0.1", port=0)
    client = BankingClient(f"127.0.0.1:{server.port}", customer["Authorization"][7:])
    stream = client.watch_balance(account_id)
    try:
        assert (await anext(stream)).available_balance == Decimal("10.00")

        stopping = asyncio.create_task(server.stop(grace_seconds=3))
        await asyncio.sleep(0.2)
        debited = await bank.client.post(
            "/api/v1/transactions/debit",
            json={"account_id": str(account_id), "amount": "4.00", "currency": "USD"},
            headers=customer,
        )
        assert debited.status_code == 200
        update = await asyncio.wait_for(anext(stream), timeout=2.5)
        assert update.available_balance == Decimal("6.00")  # still served during the grace

        with pytest.raises(BankingClientError) as refused:
            await client.get_balance(account_id)
        assert refused.value.status is grpc.StatusCode.UNAVAILABLE
        await stopping
    finally:
        await stream.aclose()
        await client.close()


def test_every_domain_error_code_has_a_grpc_status() -> None:
    def codes(cls: type[BankingError]) -> set[str]:
        # BatchItemFailed is a wrapper: the door answers its failing item's error (and index)
        own = set() if cls is BatchItemFailed else {cls.code}
        return own.union(*(codes(sub) for sub in cls.__subclasses__()))

    assert codes(BankingError) <= set(GRPC_STATUS_BY_CODE)
    assert GRPC_STATUS_BY_CODE["INSUFFICIENT_FUNDS"] is grpc.StatusCode.FAILED_PRECONDITION
    assert GRPC_STATUS_BY_CODE["IDEMPOTENCY_CONFLICT"] is grpc.StatusCode.ALREADY_EXISTS
    assert GRPC_STATUS_BY_CODE["FORBIDDEN"] is grpc.StatusCode.PERMISSION_DENIED
    assert GRPC_STATUS_BY_CODE["RATE_LIMITED"] is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_every_domain_error_has_a_rich_status_with_its_code_as_the_reason() -> None:
    def classes(cls: type[BankingError]) -> set[type[BankingError]]:
        own = set() if cls is BatchItemFailed else {cls}  # a wrapper, never on the wire
        return own.union(*(classes(sub) for sub in cls.__subclasses__()))

    for cls in classes(BankingError):
        try:
            error = cls("it failed")
        except TypeError:  # the retryable ones say when to retry
            error = cls("it failed", retry_after_seconds=3)  # type: ignore[call-arg]
        status = rich_status(error, "it failed")
        info = error_details_pb2.ErrorInfo()
        assert status.details[0].Unpack(info), cls
        assert (status.code, status.message) == (
            GRPC_STATUS_BY_CODE[cls.code].value[0],
            "it failed",
        )
        assert (info.reason, info.domain) == (cls.code, "banking.v1")
        retry = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
        retryable = cls.code in ("RATE_LIMITED", "ACCOUNT_BUSY", "SERVICE_UNAVAILABLE")
        assert len(retry) == (1 if retryable else 0), cls


# --- the processes ----------------------------------------------------------------------------


def _start(arguments: list[str], tmp_path: Path, ready: Callable[[], bool]) -> ServerProcess:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "GRPC_PORT", "PORT")
    }
    env |= {"DATA_DIR": str(tmp_path / "data"), "LOG_JSON": "true"}
    return ServerProcess(
        [str(BANKING), *arguments],
        cwd=tmp_path,
        env=env,
        log_path=tmp_path / "server.log",
        ready=ready,
        timeout=PROCESS_START_SECONDS,
    )


def _grpc_serving(port: int) -> bool:
    async def check() -> bool:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="banking.v1.TransactionService"),
                timeout=1,
            )
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    try:
        return asyncio.run(check())
    except grpc.aio.AioRpcError:
        return False


def test_banking_grpc_serves_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    process = _start(["grpc", "--port", str(port)], tmp_path, lambda: _grpc_serving(port))
    try:
        process.start()
    finally:
        code = process.stop()

    assert code == 0, (tmp_path / "server.log").read_text()
    assert '"grpc_stopping"' in (tmp_path / "server.log").read_text()


def test_banking_serve_runs_rest_and_grpc_in_one_process(tmp_path: Path) -> None:
    rest_port, grpc_port = free_port(), free_port()

    def both_up() -> bool:
        try:
            rest_ok = httpx.get(f"http://127.0.0.1:{rest_port}/health").status_code == 200
        except httpx.HTTPError:
            return False
        return rest_ok and _grpc_serving(grpc_port)

    process = _start(
        ["serve", "--port", str(rest_port), "--grpc-port", str(grpc_port)], tmp_path, both_up
    )
    try:
        process.start()
    finally:
        code = process.stop()

    assert code == 0, (tmp_path / "server.log").read_text()
    log = (tmp_path / "server.log").read_text()
    assert '"grpc_stopping"' in log
    assert "Application shutdown complete" in log
