"""``/health`` (liveness), ``/ready`` (dependencies) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

import asyncio
import os

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from sqlalchemy import text

from banking.observability.logging import get_logger
from banking.rest.dependencies import ContainerDep

router = APIRouter(tags=["system"])
log = get_logger(__name__)
READY_CHECK_TIMEOUT_SECONDS = 2.0


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "healthy"}


@router.get("/ready", responses={503: {"description": "a dependency is not ready"}})
async def ready(container: ContainerDep) -> JSONResponse:
    """Readiness: the database answers (and Kafka/Redis once configured)."""
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(READY_CHECK_TIMEOUT_SECONDS):
            async with container.database.read() as connection:
                await connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as error:  # noqa: BLE001 - any failure means "not ready"
        log.warning("ready_check_failed", dependency="database", error_type=type(error).__name__)
        checks["database"] = "unavailable"
    redis = await container.cache.readiness()
    if redis is not None:
        # Degraded Redis stays 200: cache bypassed, limits fail open, money still moves.
        checks["redis"] = redis
    healthy = all(value in ("ok", "degraded") for value in checks.values())
    status = "ready" if all(value == "ok" for value in checks.values()) else "degraded"
    return JSONResponse(
        {"status": status if healthy else "unavailable", "checks": checks},
        status_code=200 if healthy else 503,
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(container: ContainerDep) -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        payload = generate_latest(registry)
    else:
        payload = generate_latest(container.metrics.registry)
    return Response(payload, media_type=CONTENT_TYPE_LATEST)
