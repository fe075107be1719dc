"""The ``grpc.aio`` server: the ``banking.v1`` services on the same container as REST, with the
interceptors, the standard health service, server reflection (``grpc.reflection.v1`` and
``v1alpha``) and graceful shutdown.

Two ways to run it: ``banking grpc`` (``serve_grpc``: gRPC alone, one process) and
``banking serve`` with one worker (``banking.bootstrap.serve_rest_and_grpc``: REST and gRPC in
one process, on one event loop and one container).
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass
from typing import Final

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from banking.container import Container
from banking.grpc.gen import (
    accounts_pb2,
    accounts_pb2_grpc,
    holds_pb2,
    holds_pb2_grpc,
    transactions_pb2,
    transactions_pb2_grpc,
)
from banking.grpc.holds import HoldServicer
from banking.grpc.interceptors import AuthInterceptor, ErrorInterceptor, RequestContextInterceptor
from banking.grpc.reflection import enable_server_reflection
from banking.grpc.servicers import AccountServicer, TransactionServicer
from banking.observability.logging import get_logger

log = get_logger("banking.grpc")

SHUTDOWN_GRACE_SECONDS: Final = 10.0
SERVICE_NAMES: Final = (
    transactions_pb2.DESCRIPTOR.services_by_name["TransactionService"].full_name,
    accounts_pb2.DESCRIPTOR.services_by_name["AccountService"].full_name,
    holds_pb2.DESCRIPTOR.services_by_name["HoldService"].full_name,
)
_SHUTDOWN_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)
_STOP_POLL_SECONDS: Final = 0.1


@dataclass
class GrpcServer:
    """A started server and the port it listens on."""

    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int

    async def stop(self, grace_seconds: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Report NOT_SERVING, refuse new calls, let calls in flight finish for up to
        ``grace_seconds``, then cancel what is left."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_seconds)


def build_server(container: Container) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """A server with every service registered, not yet bound to a port."""
    settings = container.settings
    metrics = container.metrics if settings.metrics_enabled else None
    server = grpc.aio.server(
        interceptors=[
            RequestContextInterceptor(metrics),
            ErrorInterceptor(metrics),
            AuthInterceptor(container.tokens, container.cache.rate_limiter),
        ],
        options=[
            # The same bound on a request as REST's body limits (larger: RESOURCE_EXHAUSTED):
            # one per server, so the larger of the single calls' and BatchMovements'.
            (
                "grpc.max_receive_message_length",
                max(settings.request_body_bytes_max, settings.batch_body_bytes_max),
            ),
            # Fail loudly when the port is taken instead of sharing it with another process.
            ("grpc.so_reuseport", 0),
        ],
    )
    transactions_pb2_grpc.add_TransactionServiceServicer_to_server(
        TransactionServicer(container), server
    )
    accounts_pb2_grpc.add_AccountServiceServicer_to_server(AccountServicer(container), server)
    holds_pb2_grpc.add_HoldServiceServicer_to_server(HoldServicer(container), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME), server)
    return server, health_servicer


async def start_server(container: Container, *, host: str, port: int) -> GrpcServer:
    """Build, bind (port 0 picks a free one) and start the server; report every service
    SERVING."""
    server, health_servicer = build_server(container)
    address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    try:
        bound_port = server.add_insecure_port(address)
    except RuntimeError as error:
        raise OSError(f"cannot listen for gRPC on {address}: {error}") from error
    await server.start()
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("grpc_started", address=address, port=bound_port)
    return GrpcServer(server, health_servicer, bound_port)


async def serve_grpc(
    container: Container,
    *,
    host: str,
    port: int,
    grace_seconds: float = SHUTDOWN_GRACE_SECONDS,
) -> None:
    """Serve gRPC until SIGINT or SIGTERM, then shut down gracefully and close the container."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in _SHUTDOWN_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        server = await start_server(container, host=host, port=port)
        await stop.wait()
        log.info("grpc_stopping", grace_seconds=grace_seconds)
        await server.stop(grace_seconds)
    finally:
        for sig in _SHUTDOWN_SIGNALS:
            loop.remove_signal_handler(sig)
        await container.close()
