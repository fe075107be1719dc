"""The composition root: builds every service once, wraps the movement service with its
cross-cutting concerns, and wires the doors together for each way the service runs.

Nothing below this module imports it; it imports everything (``tests/test_layers.py``).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, Final

from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider

from banking.audit.keys import KEY_COMMANDS, KEY_TOKENS, record_key_rotations
from banking.audit.service import AuditService
from banking.auth.current_users import CurrentUsers
from banking.auth.keys import KeyRing
from banking.auth.passwords import Passwords
from banking.auth.tokens import TokenService
from banking.auth.users import UserService
from banking.cache.invalidation import InvalidatingMovements
from banking.cache.locks import LockedMovements
from banking.cache.services import build_cache_services
from banking.cache.sticky import RecordingWriters, build_recent_writers
from banking.config import Settings
from banking.container import Container
from banking.events.outbox import outbox_rows
from banking.grpc.server import SHUTDOWN_GRACE_SECONDS, start_server
from banking.ledger.accounts import AccountService
from banking.ledger.groups import GroupCommit
from banking.ledger.history import HistoryService
from banking.ledger.holds import HoldService
from banking.ledger.movements import MovementService
from banking.ledger.ports import Movements
from banking.ledger.review import ReviewService
from banking.ledger.statements import StatementService
from banking.notifications.webhooks import WebhookService
from banking.observability.logging import get_logger
from banking.observability.metrics import Metrics
from banking.observability.movements import MeasuredMovements
from banking.rest.app import create_app
from banking.storage.database import Database, create_engine
from banking.storage.ledger_store import SqlUnitOfWork
from banking.storage.replicas import ReplicaReads, build_replica_router
from banking.workers.runtime import EmbeddedEvents

log = get_logger("banking")

_SHUTDOWN_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)
_STOP_POLL_SECONDS: Final = 0.1


def build_container(settings: Settings, *, metrics: Metrics | None = None) -> Container:
    """Every service of one process, on one database engine, one metrics registry and one
    set of cache services."""
    database = Database(create_engine(settings), retries_max=settings.transaction_retries_max)
    unit_of_work = SqlUnitOfWork(database, outbox_rows)
    metrics = metrics or Metrics()
    if settings.metrics_enabled:
        metrics.watch_database(database)
    tokens = TokenService(
        keys=KeyRing.of(settings.token_keys()),
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        expire_minutes=settings.jwt_expire_minutes,
        current_users=CurrentUsers(
            unit_of_work, recheck_seconds=settings.token_user_recheck_seconds
        ),
    )
    cache = build_cache_services(settings, metrics)
    # Read replicas (docs/replicas.md): reads that may lag go there, except a caller's own
    # within the sticky window after their write, which RecordingWriters marks.
    recent_writers = build_recent_writers(settings, cache.redis)
    router = build_replica_router(settings, database, metrics)
    replicas = None if router is None else ReplicaReads(router, recent_writers)
    unit_of_work.replicas = replicas
    # Innermost first: the core; the cache drops changed balances right after each commit;
    # metrics count each outcome; the optional per-account lock (ACCOUNT_LOCKS) is outermost,
    # so a request that waited for it is measured once it runs.
    group_commit = None
    if settings.group_commit:
        group_commit = GroupCommit(
            unit_of_work,
            window_seconds=settings.group_commit_window_seconds,
            max_items=settings.group_commit_items_max,
            in_flight_max=settings.group_commit_in_flight_max,
            on_group=metrics.group_commit_items.observe,
        )
    movements: Movements = MovementService(unit_of_work, group_commit=group_commit)
    if replicas is not None:
        movements = RecordingWriters(movements, recent_writers)
    if cache.balances is not None:
        movements = InvalidatingMovements(movements, cache.balances)
    movements = MeasuredMovements(movements, metrics)
    if cache.account_locks is not None:
        movements = LockedMovements(movements, cache.account_locks)
    return Container(
        settings=settings,
        database=database,
        unit_of_work=unit_of_work,
        metrics=metrics,
        tokens=tokens,
        users=UserService(
            database,
            tokens,
            Passwords(
                time_cost=settings.password_hash_time_cost,
                memory_cost_kib=settings.password_hash_memory_kib,
            ),
            key_retention_hours=settings.idempotency_key_retention_hours,
        ),
        accounts=AccountService(
            unit_of_work,
            cache.balances,
            key_retention_hours=settings.idempotency_key_retention_hours,
            page_size_max=settings.page_size_max,
        ),
        movements=movements,
        history=HistoryService(
            unit_of_work,
            page_size_default=settings.page_size_default,
            page_size_max=settings.page_size_max,
        ),
        statements=StatementService(
            unit_of_work,
            page_size_default=settings.page_size_default,
            page_size_max=settings.page_size_max,
            statement_legs_max=settings.statement_legs_max,
        ),
        review=ReviewService(unit_of_work, page_size_max=settings.page_size_max),
        cache=cache,
        webhooks=WebhookService(database, settings),
        audit=AuditService(
            database,
            page_size_default=settings.page_size_default,
            page_size_max=settings.page_size_max,
        ),
        holds=HoldService(
            unit_of_work,
            duration_max_hours=settings.hold_duration_max_hours,
            page_size_default=settings.page_size_default,
            page_size_max=settings.page_size_max,
            balances=cache.balances,
            on_expired=metrics.holds_expired.inc,
        ),
        replicas=replicas,
    )


def create_rest_app(
    container: Container,
    *,
    dispose_on_shutdown: bool = True,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """The REST app; in the embedded shape (no Kafka) the outbox relay and the consumers run
    inside it, started and stopped with the app."""
    background = [] if container.settings.uses_kafka else [EmbeddedEvents(container)]
    return create_app(
        container,
        background=background,
        dispose_on_shutdown=dispose_on_shutdown,
        tracer_provider=tracer_provider,
    )


def app_factory() -> FastAPI:
    """Uvicorn factory (``banking.bootstrap:app_factory``, for ``banking serve --workers N``):
    settings from the environment."""
    from banking.config import load_settings
    from banking.observability.logging import configure_logging

    settings = load_settings()
    configure_logging(level=settings.log_level, json_output=settings.log_json)
    return create_rest_app(build_container(settings))


async def serve_rest_and_grpc(
    container: Container,
    *,
    host: str,
    port: int,
    grpc_port: int,
    grace_seconds: float = SHUTDOWN_GRACE_SECONDS,
) -> None:
    """REST (uvicorn) and gRPC in one process on one event loop, around one container. A
    SIGINT or SIGTERM stops both: uvicorn drains its requests while gRPC drains its calls."""
    import uvicorn

    config = uvicorn.Config(
        create_rest_app(container, dispose_on_shutdown=False),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
    )
    rest = uvicorn.Server(config)
    await record_signing_keys(container)
    grpc_server = await start_server(container, host=host, port=grpc_port)

    async def stop_grpc_with_rest() -> None:
        while not rest.should_exit:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
            await asyncio.sleep(_STOP_POLL_SECONDS)
        log.info("grpc_stopping", grace_seconds=grace_seconds)
        await grpc_server.stop(grace_seconds)

    stopper = asyncio.create_task(stop_grpc_with_rest())
    try:
        with _survive_reraised_signals():
            await rest.serve()
    finally:
        rest.should_exit = True  # also when REST failed to start
        await stopper
        await container.close()


async def record_signing_keys(container: Container) -> int:
    """Audit a signing key rotation (``staff.key_rotated``, key ids only) when this start's
    token or command signing key id is not the last one recorded."""
    settings = container.settings
    return await record_key_rotations(
        container.database,
        {
            KEY_TOKENS: settings.token_keys().signing_kid,
            KEY_COMMANDS: settings.command_keys().signing_kid,
        },
    )


@contextmanager
def _survive_reraised_signals() -> Iterator[None]:
    """uvicorn captures SIGINT/SIGTERM while it serves and raises the signal again once it
    has shut down. With the default handlers that would end the process before gRPC has
    drained; these handlers let the shutdown finish instead."""

    def note(sig: int, _frame: FrameType | None) -> None:
        log.info("shutdown_signal", signal=signal.Signals(sig).name)

    previous: dict[int, Any] = {sig: signal.signal(sig, note) for sig in _SHUTDOWN_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
