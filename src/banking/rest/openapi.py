"""The OpenAPI document: every response an operation can give, with its schema, headers and
examples, built in one place.

A route declares what is particular to it with ``responses(...)``: the error codes it can
answer (grouped by their one HTTP status, ``banking.rest.errors.HTTP_STATUS_BY_CODE``), its
success headers and its links. ``install_openapi`` then adds what every operation shares: the
request and trace id headers on every response, the rate-limit headers, 429, 500 and 503 on
every ``/api`` operation, 413 where a body is read, and readable operation ids; it replaces
anything of FastAPI's own validation error (the server never answers it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from copy import deepcopy
from typing import Any, Final

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel

from banking.rest.errors import HTTP_STATUS_BY_CODE, ErrorCode
from banking.rest.schemas import ErrorEnvelope

Responses = dict[int | str, dict[str, Any]]
_SCHEMAS: Final = "#/components/schemas/"
_HEADERS: Final = "#/components/headers/"
_ID_PATTERN: Final = r"^[A-Za-z0-9._:-]{1,128}$"

# Every header the server sets, once; responses refer to them by name.
HEADERS: Final[dict[str, dict[str, Any]]] = {
    "X-Request-ID": {
        "description": "The request's id: the client's `X-Request-ID` when it is 1 to 128 of "
        "`A-Za-z0-9._:-`, else a new one. Also in the error body and the logs.",
        "schema": {"type": "string", "pattern": _ID_PATTERN},
    },
    "X-Trace-ID": {
        "description": "The trace id (from `traceparent` when the client sent one).",
        "schema": {"type": "string", "pattern": _ID_PATTERN},
    },
    "RateLimit-Limit": {
        "description": "Requests allowed in the current window (when rate limiting is on).",
        "schema": {"type": "integer", "minimum": 0},
    },
    "RateLimit-Remaining": {
        "description": "Requests left in the current window.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "RateLimit-Reset": {
        "description": "Seconds until the window resets.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "Retry-After": {
        "description": "Seconds to wait before retrying (with the same `reference_id`).",
        "schema": {"type": "integer", "minimum": 0},
    },
    "WWW-Authenticate": {
        "description": "The authentication scheme: a bearer token from `POST /api/v1/auth/token`.",
        "schema": {"type": "string", "enum": ["Bearer"]},
    },
    "ETag": {
        "description": "The balance version, quoted: send it as `If-None-Match`.",
        "schema": {"type": "string", "pattern": r'^"[0-9]+"$'},
    },
    "Idempotent-Replayed": {
        "description": "Present when this is the stored answer to an earlier request with the "
        "same idempotency key (nothing moved again).",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "Location": {
        "description": "Where the created resource (or the pending transaction) is read.",
        "schema": {"type": "string", "pattern": r"^/api/v1/[a-z]+/[0-9a-f-]{36}$"},
    },
    "Preference-Applied": {
        "description": "The `Prefer` preference the server honoured.",
        "schema": {"type": "string", "enum": ["respond-async"]},
    },
    "X-Next-Cursor": {
        "description": "The cursor of the next page, when there is one (also `next_cursor` in "
        "the JSON body; the only way to page Arrow and Parquet answers).",
        "schema": {"type": "string"},
    },
    # A statement's figures around its rows, on its CSV, Arrow and Parquet answers.
    **{
        f"X-Statement-{name}": {
            "description": f"The statement's {what} (also in the Arrow/Parquet schema metadata).",
            "schema": {"type": "string", "pattern": pattern},
        }
        for name, what, pattern in (
            ("Opening-Balance", "opening balance", r"^[0-9]+\.[0-9]{2}$"),
            ("Closing-Balance", "closing balance", r"^[0-9]+\.[0-9]{2}$"),
            ("Credits-Total", "credits and incoming transfers", r"^[0-9]+\.[0-9]{2}$"),
            ("Debits-Total", "debits and outgoing transfers", r"^[0-9]+\.[0-9]{2}$"),
            ("Count", "number of legs", r"^[0-9]+$"),
        )
    },
}
_RATE_LIMIT_HEADERS: Final = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")

# Each error status's envelope schema, its code narrowed to the codes of that status.
_ERROR_SCHEMA_NAMES: Final[dict[int, str]] = {
    401: "UnauthenticatedError",
    403: "ForbiddenError",
    404: "NotFoundError",
    405: "MethodNotAllowedError",
    406: "NotAcceptableError",
    409: "ConflictError",
    413: "PayloadTooLargeError",
    422: "UnprocessableError",
    429: "RateLimitedError",
    500: "InternalError",
    503: "ServiceUnavailableError",
}
_STATUS_DESCRIPTIONS: Final[dict[int, str]] = {
    401: "Missing, expired or invalid bearer token.",
    403: "The caller's role may not do this.",
    404: "Not found, or not visible to the caller (another customer's account is not found).",
    405: "The path does not take this method (`Allow` lists the ones it takes).",
    406: "None of the media types in `Accept` can be served.",
    409: "The request conflicts with the state of the books.",
    413: "The request body is larger than the limit (64 KiB by default).",
    422: "The request is not valid, or the movement was declined (the failed leg is recorded: "
    "`transaction_id`).",
    429: "Too many requests: retry after `Retry-After` seconds.",
    500: "A bug or an invariant that did not hold; nothing is half done.",
    503: "A dependency (the database) is unavailable: retry later with the same `reference_id`.",
}
EXAMPLE_MESSAGES: Final[dict[ErrorCode, str]] = {
    ErrorCode.VALIDATION_ERROR: "amount: amount must be greater than zero",
    ErrorCode.PAYLOAD_TOO_LARGE: "request body is larger than 65536 bytes",
    ErrorCode.INSUFFICIENT_FUNDS: "insufficient funds",
    ErrorCode.CURRENCY_MISMATCH: "account holds USD, request is in EUR",
    ErrorCode.ACCOUNT_NOT_FOUND: "account not found",
    ErrorCode.TRANSACTION_NOT_FOUND: "transaction not found",
    ErrorCode.USER_NOT_FOUND: "user not found",
    ErrorCode.NOT_FOUND: "Not Found",
    ErrorCode.METHOD_NOT_ALLOWED: "Method Not Allowed",
    ErrorCode.NOT_ACCEPTABLE: "Not Acceptable",
    ErrorCode.ACCOUNT_INACTIVE: "account is frozen",
    ErrorCode.IDEMPOTENCY_CONFLICT: "the idempotency key was already used with other parameters",
    ErrorCode.ACCOUNT_BUSY: "account is busy; retry",
    ErrorCode.FRAUD_REJECTED: "rejected by a fraud reviewer",
    ErrorCode.TRANSACTION_NOT_HELD: "the transaction is not held for review",
    ErrorCode.TRANSACTION_NOT_REVERSIBLE: "only a completed movement can be reversed; this one "
    "is failed",
    ErrorCode.HOLD_NOT_FOUND: "hold not found",
    ErrorCode.HOLD_NOT_OPEN: "the hold is captured",
    ErrorCode.HOLD_AMOUNT_EXCEEDED: "the capture of 30.01 exceeds the 30.00 left on the hold",
    ErrorCode.USER_ALREADY_EXISTS: "username or email is already taken",
    ErrorCode.UNAUTHENTICATED: "missing bearer token",
    ErrorCode.FORBIDDEN: "crediting an account needs the teller or admin role",
    ErrorCode.RATE_LIMITED: "too many requests; retry later",
    ErrorCode.SERVICE_UNAVAILABLE: "the service is temporarily unavailable; retry with the "
    "same reference_id",
    ErrorCode.INTERNAL_ERROR: "internal error",
}
# What every /api operation can answer: a rate limit, an outage, a bug.
_EVERY_API_OPERATION: Final = (
    ErrorCode.RATE_LIMITED,
    ErrorCode.SERVICE_UNAVAILABLE,
    ErrorCode.INTERNAL_ERROR,
)
_EXAMPLE_IDS: Final = {
    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    "request_id": "0af7651916cd43dd8448eb211c80319c",
    "timestamp": "2026-01-31T12:00:00.000000+00:00",
}
_DECLINES: Final = frozenset(
    {ErrorCode.INSUFFICIENT_FUNDS, ErrorCode.ACCOUNT_INACTIVE, ErrorCode.CURRENCY_MISMATCH}
)


def header(name: str, *, required: bool) -> dict[str, Any]:
    """A reference to one of ``HEADERS`` (``required``: on every response of that status)."""
    if name not in HEADERS:
        raise KeyError(f"undocumented header {name}")
    return {"$ref": f"{_HEADERS}{name}"} | ({"required": True} if required else {})


def _example(code: ErrorCode) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code.value, "message": EXAMPLE_MESSAGES[code], **_EXAMPLE_IDS}
    if code in _DECLINES:
        body["transaction_id"] = "6fa459ea-ee8a-4ca4-894e-db77e160355e"
    if code is ErrorCode.VALIDATION_ERROR:
        body["details"] = [
            {
                "field": "amount",
                "message": "amount must be greater than zero",
                "type": "value_error",
            }
        ]
    return {"summary": code.value, "value": {"error": body}}


def _error_response(status: int, codes: Iterable[ErrorCode]) -> dict[str, Any]:
    chosen = sorted(set(codes), key=list(ErrorCode).index)
    headers: dict[str, Any] = {}
    if status == 401:
        headers["WWW-Authenticate"] = header("WWW-Authenticate", required=True)
    if status in (429, 503):
        headers["Retry-After"] = header("Retry-After", required=True)
    if ErrorCode.ACCOUNT_BUSY in chosen:
        headers["Retry-After"] = header("Retry-After", required=False)
    if status == 429:
        headers.update({name: header(name, required=True) for name in _RATE_LIMIT_HEADERS})
    codes_text = ", ".join(f"`{code.value}`" for code in chosen)
    return {
        "description": f"{_STATUS_DESCRIPTIONS[status]} Codes: {codes_text}.",
        "headers": headers,
        "content": {
            "application/json": {
                "schema": {"$ref": f"{_SCHEMAS}{_ERROR_SCHEMA_NAMES[status]}"},
                "examples": {code.value: _example(code) for code in chosen},
            }
        },
    }


def responses(
    *codes: ErrorCode,
    success: Mapping[int, dict[str, Any]] | None = None,
    replayable: bool = False,
) -> Responses:
    """The ``responses=`` of a route: an envelope response for each error status its ``codes``
    have, plus ``success`` (status -> extra OpenAPI of that response: headers, links, ...).
    ``replayable``: a movement, whose answers may be replays (``Idempotent-Replayed``)."""
    by_status: dict[int, list[ErrorCode]] = {}
    for code in codes:
        by_status.setdefault(HTTP_STATUS_BY_CODE[code], []).append(code)
    result: Responses = {
        status: _error_response(status, chosen) for status, chosen in by_status.items()
    }
    for success_status, extra in (success or {}).items():
        result[success_status] = deepcopy(dict(extra))
    if replayable:
        for answered, response in result.items():
            if int(answered) < 300 or int(answered) in (409, 422):
                response.setdefault("headers", {})["Idempotent-Replayed"] = header(
                    "Idempotent-Replayed", required=False
                )
    return result


def link(operation_id: str, description: str, **parameters: str) -> dict[str, Any]:
    """An OpenAPI link to ``operation_id`` whose parameters come from this response's body
    field of the same name (``transaction_id="transaction_id"``)."""
    return {
        "operationId": operation_id,
        "description": description,
        "parameters": {name: f"$response.body#/{field}" for name, field in parameters.items()},
    }


def body_link(operation_id: str, description: str, **fields: str) -> dict[str, Any]:
    """An OpenAPI link to ``operation_id`` whose request body takes these fields of this
    response's body (the other fields are the client's)."""
    return {
        "operationId": operation_id,
        "description": description,
        "requestBody": {name: f"$response.body#/{field}" for name, field in fields.items()},
    }


def operation_id(route: APIRoute) -> str:
    """Readable operation ids for generated clients: the route function's name in camelCase
    (``debit_account`` -> ``debitAccount``)."""
    first, *rest = route.name.split("_")
    return first + "".join(part.title() for part in rest)


def _error_components() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    envelope = ErrorEnvelope.model_json_schema(ref_template=_SCHEMAS + "{model}")
    schemas.update(envelope.pop("$defs"))
    schemas["ErrorEnvelope"] = envelope
    for status, name in _ERROR_SCHEMA_NAMES.items():
        codes = [code.value for code in ErrorCode if HTTP_STATUS_BY_CODE[code] == status]
        schemas[name] = {
            "title": name,
            "type": "object",
            "description": f"The error envelope of a {status}.",
            "properties": {
                "error": {
                    "allOf": [{"$ref": f"{_SCHEMAS}ErrorBody"}],
                    "properties": {"code": {"type": "string", "enum": codes}},
                }
            },
            "required": ["error"],
            "additionalProperties": False,
        }
    return schemas


def _model_examples() -> dict[str, list[Any]]:
    """The ``examples`` of the project's models, by model name (the component's name)."""
    found: dict[str, list[Any]] = {}
    models = list(BaseModel.__subclasses__())
    while models:
        model = models.pop()
        models.extend(model.__subclasses__())
        extra = model.model_config.get("json_schema_extra")
        if model.__module__.startswith("banking.") and isinstance(extra, dict):
            examples = extra.get("examples")
            if isinstance(examples, list):
                found[model.__name__] = examples
    return found


def _complete(
    spec: dict[str, Any], *, rate_limited: bool, parameter_maxima: Mapping[str, int]
) -> dict[str, Any]:
    components = spec.setdefault("components", {})
    components.setdefault("schemas", {}).update(_error_components())
    # FastAPI drops every null from the document, also inside examples ("last_login": null
    # is a required field): the models' own examples go back in whole.
    for name, examples in _model_examples().items():
        if name in components["schemas"]:
            components["schemas"][name]["examples"] = deepcopy(examples)
    for unused in ("HTTPValidationError", "ValidationError"):
        components["schemas"].pop(unused, None)
    components["headers"] = deepcopy(HEADERS)
    shared_api = {
        HTTP_STATUS_BY_CODE[code]: _error_response(HTTP_STATUS_BY_CODE[code], [code])
        for code in _EVERY_API_OPERATION
    }
    too_large = _error_response(413, [ErrorCode.PAYLOAD_TOO_LARGE])
    for path, operations in spec.get("paths", {}).items():
        api = path.startswith("/api/")
        for operation in operations.values():
            _forms_as_read(spec, operation)
            answers: dict[str, Any] = operation.setdefault("responses", {})
            schema = answers.get("422", {}).get("content", {}).get("application/json", {})
            if schema.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                # FastAPI's own, for a route that did not declare VALIDATION_ERROR: the server
                # answers the envelope instead.
                answers["422"] = _error_response(422, [ErrorCode.VALIDATION_ERROR])
            if api:
                for status, response in shared_api.items():
                    answers.setdefault(str(status), deepcopy(response))
                if "requestBody" in operation:
                    answers.setdefault("413", deepcopy(too_large))
            for response in answers.values():
                headers = response.setdefault("headers", {})
                headers.setdefault("X-Request-ID", header("X-Request-ID", required=True))
                headers.setdefault("X-Trace-ID", header("X-Trace-ID", required=True))
                if api and rate_limited:
                    for name in _RATE_LIMIT_HEADERS:
                        headers.setdefault(name, header(name, required=False))
            for parameter in operation.get("parameters", []):
                maximum = parameter_maxima.get(parameter.get("name", ""))
                if maximum is not None:
                    _set_maximum(parameter.get("schema", {}), maximum)
    return spec


def _forms_as_read(spec: dict[str, Any], operation: dict[str, Any]) -> None:
    """Form fields as FastAPI reads them: a form has no null (``grant_type=null`` is the text
    "null"), so an optional field's ``anyOf [..., null]`` becomes the field; and an empty
    value is an absent field, so a required one needs a character and an optional one may
    also be empty."""
    content = operation.get("requestBody", {}).get("content", {})
    for media_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        reference = content.get(media_type, {}).get("schema", {}).get("$ref", "")
        schema = spec["components"]["schemas"].get(reference.removeprefix(_SCHEMAS), {})
        required = set(schema.get("required", []))
        for name, field in schema.get("properties", {}).items():
            branches = [b for b in field.get("anyOf", []) if b.get("type") != "null"]
            if len(branches) == 1 and len(field["anyOf"]) == 2:
                rest = {k: v for k, v in field.items() if k not in ("anyOf", "default")}
                field = schema["properties"][name] = {**rest, **branches[0]}
            if field.get("type") != "string":
                continue
            if name in required:
                field["minLength"] = max(1, field.get("minLength", 0))
            elif "pattern" in field:
                field["pattern"] = f"{field['pattern']}|^$"


def _set_maximum(schema: dict[str, Any], maximum: int) -> None:
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "integer":
            branch["maximum"] = maximum


def install_openapi(
    app: FastAPI, *, rate_limited: bool, parameter_maxima: Mapping[str, int]
) -> None:
    """Make ``app.openapi()`` (and ``/openapi.json``) the completed document, built once.
    ``parameter_maxima``: limits that come from settings (``page_size``)."""
    generate = app.openapi
    completed: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        if not completed:
            completed.append(
                _complete(
                    deepcopy(generate()),
                    rate_limited=rate_limited,
                    parameter_maxima=parameter_maxima,
                )
            )
            app.openapi_schema = completed[0]
        return completed[0]

    app.openapi = openapi  # type: ignore[method-assign]
