"""The one table from domain error codes to HTTP, and the error envelope every failure uses."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from banking.domain.errors import (
    AccountBusy,
    BankingError,
    BatchItemFailed,
    InvariantViolated,
    RateLimited,
    ServiceUnavailable,
    ValidationFailed,
)
from banking.observability.context import current
from banking.observability.logging import get_logger
from banking.storage.database import is_outage

log = get_logger(__name__)
# What a 503 for an outage tells the client to wait before retrying (same reference_id).
OUTAGE_RETRY_AFTER_SECONDS: Final = 1


class ErrorCode(StrEnum):
    """Every stable code of the error envelope (DESIGN.md section 5): the OpenAPI document
    gives it as an enum, and ``HTTP_STATUS_BY_CODE`` gives each its one HTTP status."""

    VALIDATION_ERROR = "VALIDATION_ERROR"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
    ACCOUNT_NOT_FOUND = "ACCOUNT_NOT_FOUND"
    TRANSACTION_NOT_FOUND = "TRANSACTION_NOT_FOUND"
    USER_NOT_FOUND = "USER_NOT_FOUND"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    NOT_ACCEPTABLE = "NOT_ACCEPTABLE"
    ACCOUNT_INACTIVE = "ACCOUNT_INACTIVE"
    IDEMPOTENCY_CONFLICT = "IDEMPOTENCY_CONFLICT"
    ACCOUNT_BUSY = "ACCOUNT_BUSY"
    FRAUD_REJECTED = "FRAUD_REJECTED"
    TRANSACTION_NOT_HELD = "TRANSACTION_NOT_HELD"
    TRANSACTION_NOT_REVERSIBLE = "TRANSACTION_NOT_REVERSIBLE"
    HOLD_NOT_FOUND = "HOLD_NOT_FOUND"
    HOLD_NOT_OPEN = "HOLD_NOT_OPEN"
    HOLD_AMOUNT_EXCEEDED = "HOLD_AMOUNT_EXCEEDED"
    USER_ALREADY_EXISTS = "USER_ALREADY_EXISTS"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    RATE_LIMITED = "RATE_LIMITED"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    INTERNAL_ERROR = "INTERNAL_ERROR"


HTTP_STATUS_BY_CODE: Final[dict[str, int]] = {
    ErrorCode.VALIDATION_ERROR: 422,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.INSUFFICIENT_FUNDS: 422,
    ErrorCode.CURRENCY_MISMATCH: 422,
    ErrorCode.ACCOUNT_NOT_FOUND: 404,
    ErrorCode.TRANSACTION_NOT_FOUND: 404,
    ErrorCode.USER_NOT_FOUND: 404,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.NOT_ACCEPTABLE: 406,
    ErrorCode.ACCOUNT_INACTIVE: 409,
    ErrorCode.IDEMPOTENCY_CONFLICT: 409,
    ErrorCode.ACCOUNT_BUSY: 409,
    ErrorCode.FRAUD_REJECTED: 422,
    ErrorCode.TRANSACTION_NOT_HELD: 409,
    ErrorCode.TRANSACTION_NOT_REVERSIBLE: 409,
    ErrorCode.HOLD_NOT_FOUND: 404,
    ErrorCode.HOLD_NOT_OPEN: 409,
    ErrorCode.HOLD_AMOUNT_EXCEEDED: 422,
    ErrorCode.USER_ALREADY_EXISTS: 409,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.INTERNAL_ERROR: 500,
}
if set(HTTP_STATUS_BY_CODE) != set(ErrorCode):  # an explicit check: python -O keeps it
    raise RuntimeError("every ErrorCode needs exactly one HTTP status")
_CODE_BY_HTTP_STATUS: Final[dict[int, str]] = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    413: "PAYLOAD_TOO_LARGE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    503: "SERVICE_UNAVAILABLE",
}


def error_response(
    code: str,
    message: str,
    *,
    transaction_id: Any = None,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "code": code,
        "message": message,
        "trace_id": current("trace_id") or "",
        "request_id": current("request_id") or "",
        "timestamp": datetime.now(UTC).isoformat(),
    }
    if transaction_id is not None:
        body["transaction_id"] = str(transaction_id)
    if details:
        body["details"] = details
    return JSONResponse(
        {"error": body}, status_code=HTTP_STATUS_BY_CODE.get(code, 500), headers=headers
    )


async def _banking_error(request: Request, error: Exception) -> JSONResponse:
    if not isinstance(error, BankingError):
        return await _unexpected(request, error)
    # An atomic batch that stored nothing answers as its failing item's single request would,
    # with the item's index in the details and the message that names it.
    failed = error if isinstance(error, BatchItemFailed) else None
    if failed is not None:
        error = failed.error
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.errors.labels(error.code).inc()
        if isinstance(error, InvariantViolated):
            metrics.invariant_violations.inc()
    if isinstance(error, InvariantViolated):
        log.error("invariant_violated", message=error.message)
        return error_response("INTERNAL_ERROR", "internal error")
    headers: dict[str, str] = {}
    if error.replayed:
        headers["Idempotent-Replayed"] = "true"
    if error.code == "UNAUTHENTICATED":
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(error, RateLimited | AccountBusy):
        headers["Retry-After"] = str(error.retry_after_seconds)
    if isinstance(error, ServiceUnavailable):
        headers["Retry-After"] = str(OUTAGE_RETRY_AFTER_SECONDS)
    if isinstance(error, RateLimited):
        headers.update(error.details.get("headers") or {})  # RateLimit-* of the refusing limit
    field = error.field if isinstance(error, ValidationFailed) else None
    details: list[dict[str, Any]] | None = [{"field": field}] if field else None
    if failed is not None:
        details = [{"field": field, "index": failed.index}]
    return error_response(
        error.code,
        failed.message if failed is not None else error.message,
        transaction_id=error.transaction_id,
        details=details,
        headers=headers or None,
    )


def _describe_validation(errors: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    details = []
    if any(item.get("type") == "json_invalid" for item in errors):
        return "request body is not valid JSON", [{"field": None, "type": "json_invalid"}]
    for item in errors:
        location = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        message = str(item.get("msg", "invalid value")).removeprefix("Value error, ")
        detail = {"field": location or None, "message": message, "type": item.get("type")}
        if detail not in details:  # FastAPI reports a form field once per model it feeds
            details.append(detail)
    summary = "; ".join(
        f"{d['field']}: {d['message']}" if d["field"] else str(d["message"]) for d in details
    )
    return summary or "request is not valid", details


async def _request_validation(request: Request, error: Exception) -> JSONResponse:
    if not isinstance(error, RequestValidationError):
        return await _unexpected(request, error)
    message, details = _describe_validation(list(error.errors()))
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.errors.labels("VALIDATION_ERROR").inc()
    return error_response("VALIDATION_ERROR", message, details=details)


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    if not isinstance(error, StarletteHTTPException):
        return await _unexpected(request, error)
    code = _CODE_BY_HTTP_STATUS.get(error.status_code, "INTERNAL_ERROR")
    message = error.detail if isinstance(error.detail, str) else "request failed"
    if error.status_code == 400:
        message = "request body is not valid JSON"
    headers = getattr(error, "headers", None)
    if error.status_code == 405:
        headers = {**(headers or {}), **_allow(request)}
    response = error_response(code, message, headers=headers)
    response.status_code = error.status_code if error.status_code != 400 else 422
    return response


def _allow(request: Request) -> dict[str, str]:
    """``Allow`` with every method of the path: the route that refused the method answers
    for its own method only, while a path such as ``/accounts/{account_id}`` has one route per
    method (``state.methods_by_path`` is built by ``banking.rest.app``)."""
    route = request.scope.get("route")
    table: dict[str, frozenset[str]] = getattr(request.app.state, "methods_by_path", {})
    methods = table.get(getattr(route, "path_format", ""))
    return {"Allow": ", ".join(sorted(methods))} if methods else {}


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    metrics = getattr(request.app.state, "metrics", None)
    if is_outage(error):  # the one classification: storage/database.py
        log.error("dependency_unavailable", error_type=type(error).__name__)
        if metrics is not None:
            metrics.errors.labels("SERVICE_UNAVAILABLE").inc()
        return error_response(
            "SERVICE_UNAVAILABLE",
            "the service is temporarily unavailable; retry with the same reference_id",
            headers={"Retry-After": str(OUTAGE_RETRY_AFTER_SECONDS)},
        )
    log.error("unhandled_error", error_type=type(error).__name__, exc_info=error)
    if metrics is not None:
        metrics.errors.labels("INTERNAL_ERROR").inc()
    return error_response("INTERNAL_ERROR", "internal error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(BankingError, _banking_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Outages are answered by ExceptionMiddleware (a 503, no re-raise); anything else that
    # escapes reaches the last-resort handler (a 500, logged with its traceback).
    for outage in (DBAPIError, ConnectionError, TimeoutError):
        app.add_exception_handler(outage, _unexpected)
    app.add_exception_handler(Exception, _unexpected)
