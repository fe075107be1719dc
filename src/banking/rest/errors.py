"""The one table from domain error codes to HTTP, and the error envelope every failure uses."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from banking.domain.errors import (
    AccountBusy,
    BankingError,
    InvariantViolated,
    RateLimited,
    ValidationFailed,
)
from banking.observability.context import current
from banking.observability.logging import get_logger

log = get_logger(__name__)

HTTP_STATUS_BY_CODE: Final[dict[str, int]] = {
    "VALIDATION_ERROR": 422,
    "PAYLOAD_TOO_LARGE": 413,
    "INSUFFICIENT_FUNDS": 422,
    "CURRENCY_MISMATCH": 422,
    "ACCOUNT_NOT_FOUND": 404,
    "TRANSACTION_NOT_FOUND": 404,
    "USER_NOT_FOUND": 404,
    "NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "NOT_ACCEPTABLE": 406,
    "ACCOUNT_INACTIVE": 409,
    "IDEMPOTENCY_CONFLICT": 409,
    "ACCOUNT_BUSY": 409,
    "USER_ALREADY_EXISTS": 409,
    "UNAUTHENTICATED": 401,
    "FORBIDDEN": 403,
    "RATE_LIMITED": 429,
    "SERVICE_UNAVAILABLE": 503,
    "INTERNAL_ERROR": 500,
}
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
    if isinstance(error, RateLimited):
        headers.update(error.details.get("headers") or {})  # RateLimit-* of the refusing limit
    field = error.field if isinstance(error, ValidationFailed) else None
    details = [{"field": field}] if field else None
    return error_response(
        error.code,
        error.message,
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
    response = error_response(code, message, headers=getattr(error, "headers", None))
    response.status_code = error.status_code if error.status_code != 400 else 422
    return response


def _is_outage(error: Exception) -> bool:
    """The database (or the network to it) is unavailable: a retry later can succeed."""
    if isinstance(error, DBAPIError):
        return bool(error.connection_invalidated) or isinstance(
            error, OperationalError | InterfaceError
        )
    return isinstance(error, ConnectionError | TimeoutError)


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    metrics = getattr(request.app.state, "metrics", None)
    if _is_outage(error):
        log.error("dependency_unavailable", error_type=type(error).__name__)
        if metrics is not None:
            metrics.errors.labels("SERVICE_UNAVAILABLE").inc()
        return error_response(
            "SERVICE_UNAVAILABLE",
            "the service is temporarily unavailable; retry with the same reference_id",
            headers={"Retry-After": "1"},
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
