"""The FastAPI application: routers, middleware, error envelope and docs, around one container."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

import banking
from banking.container import Container
from banking.observability.tracing import build_tracer_provider
from banking.rest.docs import install_docs
from banking.rest.errors import install_error_handlers
from banking.rest.middleware import ProxyHeadersMiddleware, RequestContextMiddleware
from banking.rest.openapi import install_openapi, operation_id
from banking.rest.ratelimit import RateLimitMiddleware
from banking.rest.routes import (
    accounts,
    audit,
    holds,
    methods_by_path,
    system,
    transactions,
    users,
    webhooks,
)

DESCRIPTION = """
Core-banking transaction service: accounts, balances, debits, credits and transfers with
strong consistency. Amounts are exact decimal strings. Every money-moving request is
idempotent by `reference_id` (or the `Idempotency-Key` header).
"""


class Background(Protocol):
    """Work that runs as long as the app does (the embedded shape's event workers)."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


def create_app(
    container: Container,
    *,
    background: Sequence[Background] = (),
    dispose_on_shutdown: bool = True,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """Build the REST app around ``container`` (the composition root owns the container)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        for task in background:
            await task.start()
        try:
            yield
        finally:
            for task in reversed(background):
                await task.stop()
            if tracer_provider is not None:
                tracer_provider.shutdown()  # flushes the spans still queued
            if dispose_on_shutdown:
                await container.close()

    if tracer_provider is None:
        tracer_provider = build_tracer_provider(
            endpoint=container.settings.otel_exporter_otlp_endpoint,
            service_name=container.settings.otel_service_name,
        )
    app = FastAPI(
        title="Banking API",
        version=banking.__version__,
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
    )
    app.state.container = container
    app.state.metrics = container.metrics if container.settings.metrics_enabled else None

    install_error_handlers(app)
    routers = (
        users.router,
        accounts.router,
        transactions.router,
        holds.router,
        webhooks.router,
        audit.router,
        system.router,
    )
    for router in routers:
        app.include_router(router)
    app.include_router(users.well_known_router)
    install_docs(app)
    # Every method of each path, for Allow on a 405 and for literal paths before parameters
    # (banking.rest.routes.Route).
    app.state.methods_by_path = methods_by_path(
        route for router in routers for route in router.routes
    )
    install_openapi(
        app,
        rate_limited=container.cache.rate_limiter is not None,
        parameter_maxima={"page_size": container.settings.page_size_max},
    )

    settings = container.settings
    # Added innermost first: the request-context middleware is outermost, so even a request
    # refused by TrustedHost carries request and trace ids and the security headers.
    app.add_middleware(GZipMiddleware, minimum_size=1000)
    if container.cache.rate_limiter is not None:
        # Inside CORS (a refusal still carries CORS headers; preflights are never counted).
        app.add_middleware(
            RateLimitMiddleware,
            limiter=container.cache.rate_limiter,
            tokens=container.tokens,
            metrics=app.state.metrics,
        )
    if settings.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_credentials=False,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Idempotency-Key",
                "X-Request-ID",
                "Prefer",
                "If-None-Match",
            ],
            expose_headers=[
                "X-Request-ID",
                "X-Trace-ID",
                "ETag",
                "Idempotent-Replayed",
                "Location",
                "X-Next-Cursor",
                "Retry-After",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
            ],
        )
    if "*" not in settings.trusted_hosts:  # "*" accepts every host: no middleware needed
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.trusted_hosts)
    app.add_middleware(
        RequestContextMiddleware,
        metrics=app.state.metrics,
        body_bytes_max=settings.request_body_bytes_max,
        body_bytes_max_by_path={transactions.BATCH_PATH: settings.batch_body_bytes_max},
        tracer=tracer_provider.get_tracer("banking") if tracer_provider else None,
        served_by=settings.instance_name,
    )
    trusted_proxies = settings.trusted_proxy_networks()
    if trusted_proxies:
        # Outermost: the rate limits and the access log see the client behind the proxy.
        app.add_middleware(ProxyHeadersMiddleware, trusted=trusted_proxies)
    return app
