"""Pure ASGI middleware: the client behind a trusted proxy, request/trace ids, the serving
instance, security headers, body limit, metrics, access log.

Written as plain ASGI (not BaseHTTPMiddleware) because it wraps every request on the hot path.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Mapping, Sequence
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

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# At most this many X-Forwarded-For entries are read (from the right): a longer chain is
# either an attack or a misconfiguration, and the hops beyond it are never believed anyway.
FORWARDED_HOPS_MAX = 16
_SCHEMES = frozenset({"http", "https"})

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


def _parse_address(text: str) -> IPAddress | None:
    """An address as a proxy writes it: ``1.2.3.4``, ``1.2.3.4:5678``, ``::1``, ``[::1]:5678``."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _is_trusted(address: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == network.version and address in network for network in trusted)


def _split(values: list[str]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def forwarded_client(
    peer: str, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork]
) -> tuple[str, int | None]:
    """The client address of a request whose direct peer is ``peer`` and whose
    X-Forwarded-For entries are ``forwarded_for`` (left to right), and the index of the entry
    it came from (None: the peer itself).

    The headers are believed only from a trusted peer; then the chain is read from the right,
    each trusted hop vouching for the entry to its left, and the client is the right-most
    address that is not a trusted proxy. Entries left of it were written by the client and are
    ignored, so no header can choose the key of the per-IP rate limit. An entry that is not an
    address stops the walk at the last hop that vouched for it.
    """
    peer_address = _parse_address(peer)
    if peer_address is None or not _is_trusted(peer_address, trusted):
        return peer, None
    chosen, index = peer, None
    first = max(0, len(forwarded_for) - FORWARDED_HOPS_MAX)
    for position in range(len(forwarded_for) - 1, first - 1, -1):
        address = _parse_address(forwarded_for[position])
        if address is None:
            return chosen, index
        chosen, index = str(address), position
        if not _is_trusted(address, trusted):
            return chosen, index
    return chosen, index  # every hop is a trusted proxy: the left-most one read


class ProxyHeadersMiddleware:
    """Behind a trusted load balancer, the client is the address X-Forwarded-For names and the
    scheme the one X-Forwarded-Proto names (``forwarded_client``); from any other peer both
    headers are ignored. Rewrites the ASGI scope's ``client`` and ``scheme`` for everything
    inside (rate limits, logs, redirects)."""

    def __init__(self, app: ASGIApp, *, trusted: Sequence[IPNetwork]) -> None:
        self.app = app
        self.trusted = tuple(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.trusted:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        peer = str(client[0]) if client else ""
        headers = scope.get("headers", ())
        forwarded_for = _split([v.decode("latin-1") for k, v in headers if k == b"x-forwarded-for"])
        address, index = forwarded_client(peer, forwarded_for, self.trusted)
        if index is None:
            await self.app(scope, receive, send)
            return
        scope = {**scope, "client": (address, 0)}
        protos = _split([v.decode("latin-1") for k, v in headers if k == b"x-forwarded-proto"])
        # One value: the edge's; one per hop: the one written by the proxy the client reached.
        proto = protos[0] if len(protos) == 1 else None
        if len(protos) == len(forwarded_for):
            proto = protos[index]
        if proto is not None and proto.lower() in _SCHEMES:
            websocket = scope["type"] == "websocket"
            scope["scheme"] = (
                {"http": "ws", "https": "wss"}[proto.lower()] if websocket else proto.lower()
            )
        await self.app(scope, receive, send)


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics | None,
        body_bytes_max: int,
        body_bytes_max_by_path: Mapping[str, int] | None = None,
        tracer: Tracer | None = None,
        served_by: str = "",
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.body_bytes_max = body_bytes_max
        # Routes with a limit of their own (the batch route: BATCH_BODY_BYTES_MAX), by path.
        self.body_bytes_max_by_path = dict(body_bytes_max_by_path or {})
        self.tracer = tracer
        # INSTANCE_NAME, in X-Served-By on every response (none when empty).
        self.served_by = [(b"x-served-by", served_by.encode())] if served_by else []

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
            *self.served_by,
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
        body_bytes_max = self._body_bytes_max(scope)

        async def receive_wrapper() -> Message:
            nonlocal received_bytes
            message = await receive()
            if message["type"] == "http.request":
                received_bytes += len(message.get("body", b""))
                if received_bytes > body_bytes_max:
                    # FastAPI re-raises HTTPException from body reading; the handler answers 413.
                    raise HTTPException(413, f"request body is larger than {body_bytes_max} bytes")
            return message

        if self.metrics is not None:
            self.metrics.http_in_flight.inc()
        try:
            declared = _header(scope, b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > body_bytes_max:
                await self._too_large(send_wrapper, body_bytes_max)
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

    def _body_bytes_max(self, scope: Scope) -> int:
        if not self.body_bytes_max_by_path:
            return self.body_bytes_max
        path: str = scope.get("path", "")
        root_path: str = scope.get("root_path", "")
        if root_path and path.startswith(root_path):  # behind a proxy's prefix
            path = path[len(root_path) :]
        return self.body_bytes_max_by_path.get(path, self.body_bytes_max)

    async def _too_large(self, send: Send, body_bytes_max: int) -> None:
        body = json.dumps(
            {
                "error": {
                    "code": "PAYLOAD_TOO_LARGE",
                    "message": f"request body is larger than {body_bytes_max} bytes",
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
