"""The HTTP surface around the routes: ids, security headers, compression, CORS, trusted hosts,
health and readiness, OpenAPI and the self-hosted docs, metrics and the access log."""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from banking.bootstrap import build_container, create_rest_app
from banking.domain.roles import Role
from banking.events import topics
from banking.observability.logging import configure_logging
from banking.storage.tables import outbox, transaction_logs
from tests.conftest import Bank, make_settings

HEX32 = re.compile(r"^[0-9a-f]{32}$")
EXPECTED_SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'self'",
}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"], body
    error = body["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    assert error["trace_id"] == response.headers["x-trace-id"]
    assert datetime.fromisoformat(error["timestamp"]).tzinfo is not None
    return error


def assert_security_headers(response: httpx.Response) -> None:
    for name, value in EXPECTED_SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.headers)
    hsts = response.headers.get("strict-transport-security", "")
    max_age = re.search(r"max-age=(\d+)", hsts)
    assert max_age and int(max_age.group(1)) >= 180 * 24 * 3600, hsts


@asynccontextmanager
async def client_for(database_url: str, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An API built with non-default settings, like the ``bank`` fixture builds the default."""
    container = build_container(make_settings(database_url, **overrides))
    app = create_rest_app(container)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client
    finally:
        await container.close()


# --- request and trace ids --------------------------------------------------------------


async def test_client_request_id_is_echoed(bank: Bank) -> None:
    response = await bank.client.get("/health", headers={"X-Request-ID": "client-req-42"})
    assert response.headers["x-request-id"] == "client-req-42"
    error = await bank.client.get("/api/v1/users/me", headers={"X-Request-ID": "client-req-43"})
    assert_error(error, 401, "UNAUTHENTICATED")
    assert error.json()["error"]["request_id"] == "client-req-43"


async def test_request_id_is_generated_when_absent_or_unsafe(bank: Bank) -> None:
    first = await bank.client.get("/health")
    second = await bank.client.get("/health")
    assert HEX32.fullmatch(first.headers["x-request-id"])
    assert HEX32.fullmatch(second.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    for unsafe in ('has spaces and "quotes"', "x" * 300, "<script>"):
        response = await bank.client.get("/health", headers={"X-Request-ID": unsafe})
        assert HEX32.fullmatch(response.headers["x-request-id"]), (unsafe, response.headers)


async def test_ids_and_security_headers_on_every_kind_of_response(
    bank: Bank, staff: dict[str, str]
) -> None:
    responses = {
        "ok": await bank.client.get("/health"),
        "unauthenticated": await bank.client.get("/api/v1/users/me"),
        "validation": await bank.client.post(
            "/api/v1/transactions/debit", json={"amount": "1"}, headers=staff
        ),
        "unknown-route": await bank.client.get("/api/v1/nothing-here"),
        "method-not-allowed": await bank.client.delete("/health"),
        "too-large": await bank.client.post(
            "/api/v1/transactions/debit",
            content=b"{" + b" " * 70_000 + b"}",
            headers={**staff, "Content-Type": "application/json"},
        ),
        "static-asset": await bank.client.get("/docs-assets/static/docs-init.js"),
    }
    for name, response in responses.items():
        assert HEX32.fullmatch(response.headers.get("x-request-id", "")), (name, response.headers)
        assert HEX32.fullmatch(response.headers.get("x-trace-id", "")), (name, response.headers)
        assert_security_headers(response)
    assert_error(responses["unknown-route"], 404, "NOT_FOUND")
    assert_error(responses["method-not-allowed"], 405, "METHOD_NOT_ALLOWED")
    assert_error(responses["too-large"], 413, "PAYLOAD_TOO_LARGE")
    assert_error(responses["validation"], 422, "VALIDATION_ERROR")


async def test_traceparent_trace_id_is_adopted_and_recorded(
    bank: Bank, staff: dict[str, str]
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    customer_id, _ = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, staff)
    response = await bank.client.post(
        "/api/v1/transactions/credit",
        json={"account_id": account_id, "amount": "3.00", "currency": "USD"},
        headers={**staff, "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-trace-id"] == trace_id
    async with bank.container.database.read() as connection:
        logged = (
            (
                await connection.execute(
                    select(transaction_logs.c.metadata).where(
                        transaction_logs.c.transaction_id
                        == uuid.UUID(response.json()["transaction_id"])
                    )
                )
            )
            .scalars()
            .all()
        )
        events = (
            (
                await connection.execute(
                    # the users were made before the request (staff actions, without its trace)
                    select(outbox.c.trace_id).where(outbox.c.topic != topics.AUDIT_ACTIONS)
                )
            )
            .scalars()
            .all()
        )
    assert [entry["trace_id"] for entry in logged] == [trace_id]
    assert events and set(events) == {trace_id}  # the account was opened without events

    error = await bank.client.get(
        "/api/v1/users/me", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    )
    assert error.json()["error"]["trace_id"] == trace_id
    malformed = await bank.client.get("/health", headers={"traceparent": "garbage"})
    assert HEX32.fullmatch(malformed.headers["x-trace-id"])


# --- compression, CORS, trusted hosts ---------------------------------------------------


async def test_large_json_is_gzipped_when_asked(bank: Bank, staff: dict[str, str]) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, staff, funded="100.00")
    for index in range(8):
        debit = await bank.client.post(
            "/api/v1/transactions/debit",
            json={
                "account_id": account_id,
                "amount": "1.00",
                "currency": "USD",
                "reference_id": f"gzip-{index}",
            },
            headers=customer,
        )
        assert debit.status_code == 200, debit.text
    url = f"/api/v1/accounts/{account_id}/transactions"

    zipped = await bank.client.get(url, headers={**customer, "Accept-Encoding": "gzip"})
    assert zipped.status_code == 200
    assert zipped.headers["content-encoding"] == "gzip"
    assert len(zipped.content) > 1000  # httpx has decoded it
    assert len(zipped.json()["transactions"]) == 9

    plain = await bank.client.get(url, headers={**customer, "Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.json() == zipped.json()

    small = await bank.client.get("/health", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in small.headers


async def test_cors_allows_only_the_configured_origin(database_url: str) -> None:
    allowed = "https://app.example.com"
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,idempotency-key",
    }
    async with client_for(database_url, cors_allow_origins=[allowed]) as client:
        ok = await client.options(
            "/api/v1/transactions/debit", headers={"Origin": allowed, **preflight}
        )
        assert ok.status_code == 200, ok.text
        assert ok.headers["access-control-allow-origin"] == allowed
        assert "POST" in ok.headers["access-control-allow-methods"]
        assert "idempotency-key" in ok.headers["access-control-allow-headers"].lower()

        evil = await client.options(
            "/api/v1/transactions/debit",
            headers={"Origin": "https://evil.example.com", **preflight},
        )
        assert evil.status_code == 400
        assert "access-control-allow-origin" not in evil.headers

        simple = await client.get("/health", headers={"Origin": allowed})
        assert simple.headers["access-control-allow-origin"] == allowed
        assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()
        other = await client.get("/health", headers={"Origin": "https://evil.example.com"})
        assert other.status_code == 200
        assert "access-control-allow-origin" not in other.headers


async def test_no_cors_headers_when_no_origin_is_configured(bank: Bank) -> None:
    response = await bank.client.get("/health", headers={"Origin": "https://app.example.com"})
    assert "access-control-allow-origin" not in response.headers


async def test_untrusted_host_is_refused(database_url: str) -> None:
    async with client_for(database_url, trusted_hosts=["api.example.com"]) as client:
        refused = await client.get("/health", headers={"Host": "evil.example.com"})
        assert refused.status_code == 400
        assert "healthy" not in refused.text
        assert HEX32.fullmatch(refused.headers["x-request-id"])
        assert HEX32.fullmatch(refused.headers["x-trace-id"])
        assert_security_headers(refused)
        trusted = await client.get("/health", headers={"Host": "api.example.com"})
        assert trusted.status_code == 200
        assert trusted.json() == {"status": "healthy"}


# --- health, readiness ------------------------------------------------------------------


async def test_health_and_ready(bank: Bank) -> None:
    health = await bank.client.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "healthy"}
    ready = await bank.client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "ok"
    assert ready.json()["status"] == "ready"


async def test_ready_reports_an_unreachable_database() -> None:
    # Nothing listens on port 1: the connection is refused at once. (A failing SQLite open
    # leaves aiosqlite's worker thread racing the test's event loop shutdown, so not that.)
    async with client_for("postgresql+asyncpg://banking:banking@127.0.0.1:1/banking") as client:
        health = await client.get("/health")
        assert health.json() == {"status": "healthy"}
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] == "unavailable"
        assert ready.json()["status"] == "unavailable"
        assert "Traceback" not in ready.text


async def test_money_request_while_the_database_is_down_is_a_503_to_retry() -> None:
    async with client_for("postgresql+asyncpg://banking:banking@127.0.0.1:1/banking") as client:
        container = client._transport.app.state.container  # type: ignore[attr-defined]
        user_id = uuid.uuid4()
        token = container.tokens.issue(user_id, "someone", Role.CUSTOMER)
        response = await client.post(
            "/api/v1/transactions/debit",
            json={"account_id": str(uuid.uuid4()), "amount": "1.00", "currency": "USD"},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert response.headers["Retry-After"] == "1"
    assert "Traceback" not in response.text


# --- OpenAPI and docs -------------------------------------------------------------------


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec["components"]["schemas"][name]
    return schema


async def test_openapi_documents_money_endpoints_with_string_amounts(bank: Bank) -> None:
    response = await bank.client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    for endpoint in ("debit", "credit", "transfer"):
        operation = spec["paths"][f"/api/v1/transactions/{endpoint}"]["post"]
        body = resolve(spec, operation["requestBody"]["content"]["application/json"]["schema"])
        # Requests take decimal text or a JSON number (read from its text, never a float).
        amount = body["properties"]["amount"]
        assert [branch["type"] for branch in amount["anyOf"]] == ["string", "number"], amount
        assert "amount" in body["required"] and "currency" in body["required"]
        answer = resolve(
            spec, operation["responses"]["200"]["content"]["application/json"]["schema"]
        )
        for money in ("amount", "available_balance"):
            assert answer["properties"][money]["type"] == "string", answer["properties"][money]
        assert {"401", "403", "404", "422"} <= set(operation["responses"])
    balance = spec["paths"]["/api/v1/accounts/{account_id}/balance"]["get"]
    balance_schema = resolve(
        spec, balance["responses"]["200"]["content"]["application/json"]["schema"]
    )
    assert balance_schema["properties"]["available_balance"]["type"] == "string"


async def test_docs_page_uses_only_local_assets(bank: Bank) -> None:
    page = await bank.client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == "default-src 'self'"
    tags = re.findall(r"<(?:script|link)\b[^>]*>", page.text)
    assert tags, page.text
    references = [
        match.group(1) for tag in tags if (match := re.search(r'(?:src|href)="([^"]+)"', tag))
    ]
    assert len(references) >= 3, references
    for tag in tags:
        assert "http://" not in tag and "https://" not in tag and '"//' not in tag, tag
    # No inline script: CSP default-src 'self' would block it.
    assert len(re.findall(r"<script\b", page.text)) == len(
        [tag for tag in tags if tag.startswith("<script") and "src=" in tag]
    )
    kinds = set()
    for reference in references:
        assert reference.startswith("/docs-assets/"), reference
        asset = await bank.client.get(reference)
        assert asset.status_code == 200, reference
        content_type = asset.headers["content-type"]
        assert "javascript" in content_type or "text/css" in content_type, (reference, content_type)
        assert len(asset.content) > 100, reference
        kinds.add("css" if "css" in content_type else "js")
    assert kinds == {"css", "js"}
    init = await bank.client.get("/docs-assets/static/docs-init.js")
    assert "/openapi.json" in init.text


# --- metrics ----------------------------------------------------------------------------


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def value_of(parsed: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(
        value
        for sample_name, sample_labels, value in parsed
        if sample_name == name and labels.items() <= sample_labels.items()
    )


async def test_metrics_count_requests_movements_and_declines(
    bank: Bank, staff: dict[str, str]
) -> None:
    customer_id, customer = await bank.user(Role.CUSTOMER)
    account_id = await bank.account(customer_id, staff, funded="10.00")
    completed = await bank.client.post(
        "/api/v1/transactions/debit",
        json={"account_id": account_id, "amount": "4.00", "currency": "USD"},
        headers=customer,
    )
    assert completed.status_code == 200, completed.text
    declined = await bank.client.post(
        "/api/v1/transactions/debit",
        json={"account_id": account_id, "amount": "7.00", "currency": "USD"},
        headers=customer,
    )
    assert_error(declined, 422, "INSUFFICIENT_FUNDS")
    assert await bank.balance(account_id, customer) == Decimal("6.00")
    missing = await bank.client.get(f"/api/v1/accounts/{uuid.uuid4()}/balance", headers=customer)
    assert_error(missing, 404, "ACCOUNT_NOT_FOUND")
    await bank.client.get(f"/api/v1/nowhere/{account_id}")

    response = await bank.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    parsed = samples(response.text)

    debit_route = "/api/v1/transactions/debit"
    assert (
        value_of(
            parsed, "banking_http_requests_total", method="POST", route=debit_route, status="200"
        )
        == 1
    )
    assert (
        value_of(
            parsed, "banking_http_requests_total", method="POST", route=debit_route, status="422"
        )
        == 1
    )
    assert (
        value_of(
            parsed,
            "banking_http_requests_total",
            method="GET",
            route="/api/v1/accounts/{account_id}/balance",
            status="404",
        )
        >= 1
    )
    assert value_of(parsed, "banking_http_requests_total", route="unmatched", status="404") == 1
    assert value_of(parsed, "banking_money_movements_total", type="debit", status="completed") == 1
    assert value_of(parsed, "banking_money_movements_total", type="debit", status="failed") == 1
    assert (
        value_of(
            parsed,
            "banking_money_movement_declines_total",
            type="debit",
            reason="INSUFFICIENT_FUNDS",
        )
        == 1
    )
    assert value_of(parsed, "banking_money_movements_total", type="credit", status="completed") == 1
    assert 'banking_money_movements_total{status="completed",type="debit"} 1.0' in response.text
    assert 'banking_money_movements_total{status="failed",type="debit"} 1.0' in response.text
    assert (
        'banking_money_movement_declines_total{reason="INSUFFICIENT_FUNDS",type="debit"} 1.0'
        in response.text
    )

    identifiers = {account_id, str(customer_id), completed.json()["transaction_id"]}
    identifiers |= {value.replace("-", "") for value in identifiers}
    label_values = {value for _, labels, _ in parsed for value in labels.values()}
    assert not any(identifier in label for identifier in identifiers for label in label_values), (
        label_values
    )
    for identifier in identifiers:
        assert identifier not in response.text


# --- logs -------------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo the test's configure_logging, so other tests keep pytest's logging set-up."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_structlog = structlog.get_config()
    try:
        yield
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        structlog.configure(**saved_structlog)


async def test_logs_carry_request_ids_but_no_secrets(
    bank: Bank,
    staff: dict[str, str],
    restore_logging: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Configured here, in the test's call phase, so the handler writes to the captured stderr.
    configure_logging(level="INFO", json_output=True)
    assert logging.getLogger().handlers[0].stream is sys.stderr  # type: ignore[attr-defined]
    password = "a-very-secret-password-0451"
    user = await bank.container.users.create(
        None, username="dora", email="dora@example.com", password=password, role=Role.CUSTOMER
    )
    account_id = await bank.account(user.user_id, staff, funded="20.00")
    capsys.readouterr()

    wrong = await bank.client.post(
        "/api/v1/auth/token",
        data={"username": "dora", "password": password + "-typo"},
        headers={"X-Request-ID": "log-wrong-login"},
    )
    assert wrong.status_code == 401
    login = await bank.client.post(
        "/api/v1/auth/token",
        data={"username": "dora", "password": password},
        headers={"X-Request-ID": "log-login"},
    )
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    debit = await bank.client.post(
        "/api/v1/transactions/debit",
        json={"account_id": account_id, "amount": "2.50", "currency": "USD"},
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": "log-debit"},
    )
    assert debit.status_code == 200, debit.text

    captured = capsys.readouterr()
    output = captured.err + captured.out
    assert password not in output
    assert token not in output
    assert token.split(".")[2] not in output  # not even the signature part

    lines = [json.loads(line) for line in captured.err.splitlines() if line.startswith("{")]
    requests = {
        line.get("request_id"): line for line in lines if line.get("event") == "http_request"
    }
    assert {"log-wrong-login", "log-login", "log-debit"} <= set(requests), lines
    assert requests["log-debit"]["route"] == "/api/v1/transactions/debit"
    assert requests["log-debit"]["status"] == 200
    assert requests["log-wrong-login"]["status"] == 401
    assert requests["log-login"]["method"] == "POST"
