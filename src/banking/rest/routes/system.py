"""``/health`` (liveness), ``/ready`` (dependencies) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

import asyncio
import os

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from banking.observability.logging import get_logger
from banking.rest.dependencies import ContainerDep
from banking.rest.openapi import responses
from banking.rest.routes import Route
from banking.rest.schemas import HealthRead, ReadyRead
from banking.storage.migrate import schema_revision

router = APIRouter(tags=["system"], route_class=Route)
log = get_logger(__name__)
READY_CHECK_TIMEOUT_SECONDS = 2.0


@router.get("/health", response_model=HealthRead)
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "healthy"}


@router.get(
    "/ready",
    response_model=ReadyRead,
    responses=responses(
        success={
            503: {
                "model": ReadyRead,
                "description": "Not ready: the database is unavailable or its schema is "
                "behind this version (`details` says what to run).",
            }
        }
    ),
)
async def ready(container: ContainerDep) -> JSONResponse:
    """Readiness: the database answers and its schema is the one this version needs (and
    Redis once configured)."""
    checks: dict[str, str] = {}
    details: dict[str, str] = {}
    try:
        async with asyncio.timeout(READY_CHECK_TIMEOUT_SECONDS):
            async with container.database.read() as connection:
                revision = await schema_revision(connection)
        # Reachable but behind this version: every request would fail on a missing table.
        checks["database"] = "behind" if revision.is_behind else "ok"
        if not revision.is_current:
            details["database"] = revision.describe()
    except Exception as error:  # noqa: BLE001 - any failure means "not ready"
        log.warning("ready_check_failed", dependency="database", error_type=type(error).__name__)
        checks["database"] = "unavailable"
    redis = await container.cache.readiness()
    if redis is not None:
        # Degraded Redis stays 200: cache bypassed, limits fail open, money still moves.
        checks["redis"] = redis
    healthy = all(value in ("ok", "degraded") for value in checks.values())
    status = "ready" if all(value == "ok" for value in checks.values()) else "degraded"
    body: dict[str, object] = {"status": status if healthy else "unavailable", "checks": checks}
    if details:
        body["details"] = details
    return JSONResponse(body, status_code=200 if healthy else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics(container: ContainerDep) -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        payload = generate_latest(registry)
    else:
        payload = generate_latest(container.metrics.registry)
    return Response(payload, media_type=CONTENT_TYPE_LATEST)
