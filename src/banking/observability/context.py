"""Per-request context carried into every log line: request, trace, user, transaction ids."""

from __future__ import annotations

import re
import uuid

import structlog

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def accept_or_new_id(client_value: str | None) -> str:
    """Keep an id the client sent when it is a sane token; otherwise make a new one."""
    if client_value and _SAFE_ID.fullmatch(client_value):
        return client_value
    return uuid.uuid4().hex


def bind(**values: str | None) -> None:
    structlog.contextvars.bind_contextvars(**{k: v for k, v in values.items() if v is not None})


def clear() -> None:
    structlog.contextvars.clear_contextvars()


def current(name: str) -> str | None:
    value = structlog.contextvars.get_contextvars().get(name)
    return str(value) if value is not None else None
