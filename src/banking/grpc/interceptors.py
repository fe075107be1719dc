"""The gRPC door's interceptors: request context and metrics, authentication, and the one table
from domain error codes to gRPC status codes.

They run outermost first, as ``server.build_server`` lists them:

1. ``RequestContextInterceptor``: keeps or makes ``x-request-id`` / ``x-trace-id``, binds them
   into the log context, echoes them in the initial metadata, counts and times the call.
2. ``ErrorInterceptor``: turns a ``BankingError`` into its status code (``GRPC_STATUS_BY_CODE``)
   and the standard rich error model (``rich_status``): a ``google.rpc.Status`` in the
   ``grpc-status-details-bin`` trailer with ``ErrorInfo`` (the stable code as ``reason``),
   ``BadRequest`` for a bad field, ``RetryInfo`` when a retry later can succeed and
   ``RequestInfo``.
3. ``AuthInterceptor``: ``authorization: Bearer <jwt>`` through the same ``TokenService`` as REST,
   then the caller's rate limit (the same per-user budget as REST); the actor is handed to the
   servicer through a context variable. Health and reflection are public.
"""

from __future__ import annotations

import abc
import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from typing import Any, Final

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from banking.auth.tokens import TokenService
from banking.cache.ratelimit import SCOPE_DEFAULT, RateLimiter
from banking.domain.errors import (
    AccountBusy,
    BankingError,
    BatchItemFailed,
    InvariantViolated,
    RateLimited,
    ServiceUnavailable,
    Unauthenticated,
    ValidationFailed,
)
from banking.domain.roles import Actor
from banking.observability import context as log_context
from banking.observability.logging import get_logger
from banking.observability.metrics import Metrics
from banking.storage.database import is_outage

log = get_logger("banking.grpc")

GRPC_STATUS_BY_CODE: Final[dict[str, grpc.StatusCode]] = {
    "VALIDATION_ERROR": grpc.StatusCode.INVALID_ARGUMENT,
    "PAYLOAD_TOO_LARGE": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "INSUFFICIENT_FUNDS": grpc.StatusCode.FAILED_PRECONDITION,
    "CURRENCY_MISMATCH": grpc.StatusCode.FAILED_PRECONDITION,
    "ACCOUNT_INACTIVE": grpc.StatusCode.FAILED_PRECONDITION,
    "FRAUD_REJECTED": grpc.StatusCode.FAILED_PRECONDITION,
    "TRANSACTION_NOT_HELD": grpc.StatusCode.FAILED_PRECONDITION,
    "TRANSACTION_NOT_REVERSIBLE": grpc.StatusCode.FAILED_PRECONDITION,
    "HOLD_NOT_OPEN": grpc.StatusCode.FAILED_PRECONDITION,
    "HOLD_AMOUNT_EXCEEDED": grpc.StatusCode.FAILED_PRECONDITION,
    "HOLD_NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "ACCOUNT_NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "TRANSACTION_NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "USER_NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "IDEMPOTENCY_CONFLICT": grpc.StatusCode.ALREADY_EXISTS,
    "USER_ALREADY_EXISTS": grpc.StatusCode.ALREADY_EXISTS,
    # The optional per-account lock stayed busy; nothing was done: retry after `retry-after`.
    "ACCOUNT_BUSY": grpc.StatusCode.UNAVAILABLE,
    "UNAUTHENTICATED": grpc.StatusCode.UNAUTHENTICATED,
    "FORBIDDEN": grpc.StatusCode.PERMISSION_DENIED,
    "RATE_LIMITED": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "SERVICE_UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
    "INTERNAL_ERROR": grpc.StatusCode.INTERNAL,
}

# ErrorInfo.domain: the API that gave the reason (reasons are unique within it).
ERROR_DOMAIN: Final = "banking.v1"
# ErrorInfo.metadata keys, named as in the REST error envelope.
TRANSACTION_ID_INFO: Final = "transaction_id"
REQUEST_ID_INFO: Final = "request_id"
TRACE_ID_INFO: Final = "trace_id"
REPLAYED_INFO: Final = "idempotent_replayed"
# The failing item's position when an atomic batch stored nothing (``BatchItemFailed``).
BATCH_INDEX_INFO: Final = "index"
# UNAVAILABLE because the database is down: retry (with the same reference_id) after this.
OUTAGE_RETRY_SECONDS: Final = 1

# A replayed answer (a success or a replayed decline) says so in its trailing metadata.
REPLAYED_KEY: Final = "idempotent-replayed"
# Deprecated: the trailing keys a failed call carried before the rich error model. Still sent
# alongside it in 0.1.x for clients that read them; removed in the next minor version.
ERROR_CODE_KEY: Final = "error-code"
ERROR_FIELD_KEY: Final = "error-field"
TRANSACTION_ID_KEY: Final = "transaction-id"
RETRY_AFTER_KEY: Final = "retry-after"

REQUEST_ID_KEY: Final = "x-request-id"
TRACE_ID_KEY: Final = "x-trace-id"

# Callable without a token: load balancers and tools must see health and the schema.
PUBLIC_METHOD_PREFIXES: Final = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)

_actor: ContextVar[Actor | None] = ContextVar("banking_grpc_actor", default=None)

Around = Callable[[grpc.aio.ServicerContext[Any, Any]], AbstractAsyncContextManager[None]]


def current_actor() -> Actor:
    """The caller authenticated by ``AuthInterceptor`` for the call being served."""
    actor = _actor.get()
    if actor is None:
        raise Unauthenticated("missing bearer token")
    return actor


def status_for(error: BankingError) -> grpc.StatusCode:
    return GRPC_STATUS_BY_CODE.get(error.code, grpc.StatusCode.INTERNAL)


def retry_after_seconds(error: BankingError) -> int | None:
    """How long to wait before the same request can succeed, or None when waiting won't help."""
    if isinstance(error, RateLimited | AccountBusy):
        return error.retry_after_seconds
    if isinstance(error, ServiceUnavailable):
        return OUTAGE_RETRY_SECONDS
    return None


def rich_status(
    error: BankingError, message: str, *, batch_index: int | None = None
) -> status_pb2.Status:
    """The ``google.rpc.Status`` of a failed call (AIP-193): ``ErrorInfo`` always (reason = the
    stable code, the ids in its metadata, and ``batch_index``, the failing item of an atomic
    batch), ``BadRequest`` naming a bad field, ``RetryInfo`` when a retry later can succeed,
    ``RequestInfo`` with the request id."""
    code = status_for(error)
    status = status_pb2.Status(code=code.value[0], message=message)
    request_id = log_context.current("request_id")
    trace_id = log_context.current("trace_id")
    metadata = {
        TRANSACTION_ID_INFO: str(error.transaction_id) if error.transaction_id else None,
        REQUEST_ID_INFO: request_id,
        TRACE_ID_INFO: trace_id,
        REPLAYED_INFO: "true" if error.replayed else None,
        BATCH_INDEX_INFO: str(batch_index) if batch_index is not None else None,
    }
    status.details.add().Pack(
        error_details_pb2.ErrorInfo(
            reason=error.code,
            domain=ERROR_DOMAIN,
            metadata={key: value for key, value in metadata.items() if value},
        )
    )
    if isinstance(error, ValidationFailed) and error.field:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=error.field, description=message, reason=error.code
        )
        status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    retry_after = retry_after_seconds(error)
    if retry_after is not None:
        delay = duration_pb2.Duration(seconds=retry_after)
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    if request_id:
        status.details.add().Pack(error_details_pb2.RequestInfo(request_id=request_id))
    return status


def _legacy_trailing(error: BankingError) -> list[tuple[str, str]]:
    """The deprecated keys (see ``ERROR_CODE_KEY``) and the replay flag."""
    trailing = [(ERROR_CODE_KEY, error.code)]
    if isinstance(error, ValidationFailed) and error.field:
        trailing.append((ERROR_FIELD_KEY, error.field))
    if error.transaction_id is not None:
        trailing.append((TRANSACTION_ID_KEY, str(error.transaction_id)))
    if error.replayed:
        trailing.append((REPLAYED_KEY, "true"))
    if isinstance(error, RateLimited | AccountBusy):
        trailing.append((RETRY_AFTER_KEY, str(error.retry_after_seconds)))
    return trailing


def _metadata(details: grpc.HandlerCallDetails) -> dict[str, str]:
    pairs: Sequence[tuple[str, str | bytes]] = details.invocation_metadata or ()
    return {key.lower(): value for key, value in pairs if isinstance(value, str)}


class _AroundInterceptor(grpc.aio.ServerInterceptor):
    """Runs ``around(details, context)`` around every call's behaviour, unary or streaming."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return _wrap(handler, lambda context: self.around(handler_call_details, context))

    @abc.abstractmethod
    def around(
        self, details: grpc.HandlerCallDetails, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AbstractAsyncContextManager[None]:
        """What each subclass does for the whole of a call."""


def _wrap(handler: Any, around: Around) -> Any:
    """The same handler with ``around`` entered for the whole call (a stream until it ends)."""
    codecs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        unary = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            async with around(context):
                return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **codecs)
    if handler.unary_stream is not None:
        stream = handler.unary_stream

        async def unary_stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            async with around(context):
                async for response in _responses(stream(request, context)):
                    yield response

        return grpc.unary_stream_rpc_method_handler(unary_stream, **codecs)
    if handler.stream_stream is not None:
        bidi = handler.stream_stream

        async def stream_stream(
            requests: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            async with around(context):
                async for response in _responses(bidi(requests, context)):
                    yield response

        return grpc.stream_stream_rpc_method_handler(stream_stream, **codecs)
    return handler  # client streaming: no such method in this API


async def _responses(result: Any) -> AsyncIterator[Any]:
    """A streaming behaviour either yields its responses or writes them with ``context.write``
    (the health service's Watch does); both are served."""
    if inspect.isasyncgen(result):
        async for response in result:
            yield response
    else:
        await result


class RequestContextInterceptor(_AroundInterceptor):
    """Request and trace ids (kept when the client sends sane ones), log line, metrics."""

    def __init__(self, metrics: Metrics | None) -> None:
        self._metrics = metrics

    @asynccontextmanager
    async def around(
        self, details: grpc.HandlerCallDetails, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        started = time.perf_counter()
        metadata = _metadata(details)
        request_id = log_context.accept_or_new_id(metadata.get(REQUEST_ID_KEY))
        trace_id = log_context.accept_or_new_id(_trace_id(metadata))
        log_context.clear()
        log_context.bind(request_id=request_id, trace_id=trace_id)
        await context.send_initial_metadata(
            ((REQUEST_ID_KEY, request_id), (TRACE_ID_KEY, trace_id))
        )
        code = grpc.StatusCode.OK
        try:
            yield
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except BaseException:
            code = _code_of(context)
            raise
        finally:
            elapsed = time.perf_counter() - started
            if self._metrics is not None:
                self._metrics.grpc_requests.labels(details.method, code.name).inc()
                self._metrics.grpc_latency.labels(details.method).observe(elapsed)
            log.info(
                "grpc_request",
                method=details.method,
                code=code.name,
                duration_ms=round(elapsed * 1000, 2),
            )
            log_context.clear()


def _trace_id(metadata: dict[str, str]) -> str | None:
    traceparent = metadata.get("traceparent")
    if traceparent:
        parts = traceparent.split("-")
        if len(parts) == 4 and len(parts[1]) == 32:
            return parts[1]
    return metadata.get(TRACE_ID_KEY)


def _code_of(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    """The status an aborted call ended with (``context.abort`` records it on the context)."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    for candidate in grpc.StatusCode:
        if candidate.value[0] == code:
            return candidate
    return grpc.StatusCode.UNKNOWN


class ErrorInterceptor(_AroundInterceptor):
    """The one place where a domain error becomes a gRPC status (``GRPC_STATUS_BY_CODE``) and
    its rich details (``rich_status``)."""

    def __init__(self, metrics: Metrics | None) -> None:
        self._metrics = metrics

    @asynccontextmanager
    async def around(
        self, details: grpc.HandlerCallDetails, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        try:
            yield
        except grpc.aio.AbortError:
            raise
        except BankingError as error:
            await self._abort(context, error)
        except Exception as error:
            # The database (or the network to it) is down: the client may retry later. The one
            # classification of outages is storage/database.py's, the same as REST's.
            if is_outage(error):
                log.warning("grpc_dependency_unavailable", error_type=type(error).__name__)
                await self._abort(context, ServiceUnavailable("service is temporarily unavailable"))
                return
            log.error("grpc_unhandled_error", error_type=type(error).__name__, exc_info=error)
            await self._abort(context, InvariantViolated("internal error"))

    async def _abort(
        self, context: grpc.aio.ServicerContext[Any, Any], error: BankingError
    ) -> None:
        # An atomic batch that stored nothing fails as its failing item's single call would,
        # with the item's position in the ErrorInfo and the message that names it.
        batch_index = None
        message = error.message
        if isinstance(error, BatchItemFailed):
            batch_index, error = error.index, error.error
        if self._metrics is not None:
            self._metrics.errors.labels(error.code).inc()
        if isinstance(error, InvariantViolated):
            if self._metrics is not None:
                self._metrics.invariant_violations.inc()
            log.error("invariant_violated", message=error.message)
            message = "internal error"
        status = rpc_status.to_status(rich_status(error, message, batch_index=batch_index))
        await context.abort(
            status.code,
            status.details,
            trailing_metadata=(*status.trailing_metadata, *_legacy_trailing(error)),
        )


class AuthInterceptor(_AroundInterceptor):
    """``authorization: Bearer <jwt>``, verified like REST, and the caller's rate limit; what
    the actor may do is the core's decision."""

    def __init__(self, tokens: TokenService, limiter: RateLimiter | None = None) -> None:
        self._tokens = tokens
        self._limiter = limiter

    @asynccontextmanager
    async def around(
        self, details: grpc.HandlerCallDetails, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        if details.method.startswith(PUBLIC_METHOD_PREFIXES):
            yield
            return
        scheme, _, token = _metadata(details).get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("missing bearer token")
        actor = await self._tokens.authenticate(token.strip())
        log_context.bind(user_id=str(actor.user_id))
        if self._limiter is not None:
            # The key REST uses too: one budget per user, whichever door the calls come through.
            decision = await self._limiter.check(f"user:{actor.user_id}", SCOPE_DEFAULT)
            if not decision.allowed:
                raise RateLimited(
                    "too many requests; retry later",
                    retry_after_seconds=decision.retry_after_seconds,
                )
        # Not reset afterwards: every call runs in its own task, whose context ends with it.
        _actor.set(actor)
        yield
