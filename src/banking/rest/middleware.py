"""Pure ASGI middleware: request/trace ids, security headers, body limit, metrics, access log.

Written as plain ASGI (not BaseHTTPMiddleware) because it wraps every request on the hot path.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from opentelemetry.trace import SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from banking.observability import context
from banking.observability.logging import get_logger
from banking.observability.metrics import Metrics

log = get_logger("banking.http")
_PROPAGATOR = TraceContextTextMapPropagator()

SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"strict-transport-security", b"max-age=31536000; includeSubDomains"),
    (b"content-security-policy", b"default-src 'self'"),
    (b"cache-control", b"no-store"),
]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _trace_id_from(scope: Scope) -> str | None:
    traceparent = _header(scope, b"traceparent")
    if traceparent:
        parts = traceparent.split("-")
        if len(parts) == 4 and len(parts[1]) == 32:
            return parts[1]
    return _header(scope, b"x-trace-id")


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics | None,
        body_bytes_max: int,
        tracer: Tracer | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.body_bytes_max = body_bytes_max
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.tracer is None or scope["type"] != "http":
            await self._serve(scope, receive, send)
            return
        carrier = {
            key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
        }
        with self.tracer.start_as_current_span(
            f"HTTP {scope.get('method', '')}",
            context=_PROPAGATOR.extract(carrier),
            kind=SpanKind.SERVER,
        ) as span:
            # The span's trace id is the request's trace id (continued or new).
            trace_id = format(span.get_span_context().trace_id, "032x")
            scope.setdefault("state", {})["otel_trace_id"] = trace_id
            await self._serve(scope, receive, send)
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            span.update_name(f"{scope.get('method', '')} {route}")
            span.set_attribute("http.request.method", scope.get("method", ""))
            span.set_attribute("http.route", route)
            status = scope["state"].get("status_code")
            if status is not None:
                span.set_attribute("http.response.status_code", status)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = context.accept_or_new_id(_header(scope, b"x-request-id"))
        trace_id = scope.get("state", {}).get("otel_trace_id") or context.accept_or_new_id(
            _trace_id_from(scope)
        )
        context.clear()
        context.bind(request_id=request_id, trace_id=trace_id)
        state = scope.setdefault("state", {})
        state["request_id"], state["trace_id"] = request_id, trace_id
        status_code = 500
        id_headers = [
            (b"x-request-id", request_id.encode()),
            (b"x-trace-id", trace_id.encode()),
        ]

        async def send_wrapper(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                state["status_code"] = status_code
                headers = list(message.get("headers", []))
                present = {key.lower() for key, _ in headers}
                headers.extend(id_headers)
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                message["headers"] = headers
            await send(message)

        received_bytes = 0

        async def receive_wrapper() -> Message:
            nonlocal received_bytes
            message = await receive()
            if message["type"] == "http.request":
                received_bytes += len(message.get("body", b""))
                if received_bytes > self.body_bytes_max:
                    # FastAPI re-raises HTTPException from body reading; the handler answers 413.
                    raise HTTPException(
                        413, f"request body is larger than {self.body_bytes_max} bytes"
                    )
            return message

        if self.metrics is not None:
            self.metrics.http_in_flight.inc()
        try:
            declared = _header(scope, b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.body_bytes_max:
                await self._too_large(send_wrapper)
            else:
                await self.app(scope, receive_wrapper, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            if self.metrics is not None:
                self.metrics.http_in_flight.dec()
                self.metrics.http_requests.labels(method, template, str(status_code)).inc()
                self.metrics.http_latency.labels(method, template).observe(elapsed)
            log.info(
                "http_request",
                method=method,
                route=template,
                path=scope.get("path"),
                status=status_code,
                duration_ms=round(elapsed * 1000, 2),
            )
            context.clear()

    async def _too_large(self, send: Send) -> None:
        body = json.dumps(
            {
                "error": {
                    "code": "PAYLOAD_TOO_LARGE",
                    "message": f"request body is larger than {self.body_bytes_max} bytes",
                    "trace_id": context.current("trace_id") or "",
                    "request_id": context.current("request_id") or "",
                    "timestamp": datetime.now(UTC).isoformat(),
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
