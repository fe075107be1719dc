"""Optional OpenTelemetry tracing: spans reach a real OTLP/HTTP receiver with the API's trace id."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from banking.bootstrap import build_container, create_rest_app
from banking.domain.roles import Role
from banking.observability.tracing import build_tracer_provider
from banking.storage.migrate import upgrade
from tests.conftest import make_settings


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        _Receiver.bodies.append((self.path, self.rfile.read(length)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Receiver.bodies = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_tracing_is_off_without_an_endpoint() -> None:
    assert build_tracer_provider(endpoint="", service_name="banking-api") is None


async def test_request_spans_reach_the_collector_with_the_api_trace_id(
    receiver: str, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'banking.db'}"
    await asyncio.to_thread(upgrade, url)
    container = build_container(make_settings(url))
    provider = build_tracer_provider(endpoint=receiver, service_name="banking-api")
    assert provider is not None
    app = create_rest_app(container, tracer_provider=provider)
    user = await container.users.create(
        None,
        username="trace-user",
        email="t@example.com",
        password="trace-password-1",
        role=Role.CUSTOMER,
    )
    token = container.tokens.issue(user.user_id, user.username, user.role)
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        continued = await client.get(
            "/api/v1/accounts",
            headers={
                "Authorization": f"Bearer {token}",
                "traceparent": f"00-{caller_trace}-00f067aa0ba902b7-01",
            },
        )
        fresh = await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    await container.close()
    provider.shutdown()

    assert continued.headers["X-Trace-ID"] == caller_trace
    spans = []
    for path, body in _Receiver.bodies:
        assert path == "/v1/traces"
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            assert service["service.name"] == "banking-api"
            for scope_spans in resource_spans.scope_spans:
                spans.extend(scope_spans.spans)
    by_trace = {span.trace_id.hex(): span for span in spans}
    assert by_trace[caller_trace].name == "GET /api/v1/accounts"
    assert by_trace[fresh.headers["X-Trace-ID"]].name == "GET /api/v1/users/me"
    attributes = {a.key: a.value for a in by_trace[caller_trace].attributes}
    assert attributes["http.response.status_code"].int_value == 200
