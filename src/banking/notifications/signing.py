"""Signed deliveries: ``Banking-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>``.

The MAC is over ``f"{t}.{body}"`` (the timestamp, a dot and the exact body bytes) with the
webhook's secret, so a receiver can tell that the bank sent this body at that time; refusing
timestamps older than a tolerance stops replays. docs/webhooks.md gives receivers the same
check in a few lines of Python.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Final

SIGNATURE_HEADER: Final = "Banking-Signature"
EVENT_ID_HEADER: Final = "Banking-Event-Id"
EVENT_TYPE_HEADER: Final = "Banking-Event-Type"
DELIVERY_ID_HEADER: Final = "Banking-Delivery-Id"
SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - a prefix, not a secret
SECRET_BYTES: Final = 32
TOLERANCE_SECONDS_DEFAULT: Final = 300


def new_secret() -> str:
    """A fresh signing secret (256 random bits)."""
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def mac(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``f"{timestamp}.{body}"`` under ``secret``."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    """The ``Banking-Signature`` value of ``body`` signed now (or at ``timestamp``)."""
    at = int(time.time()) if timestamp is None else timestamp
    return f"t={at},v1={mac(secret, at, body)}"


def verify(
    secret: str,
    header: str,
    body: bytes,
    *,
    tolerance_seconds: int = TOLERANCE_SECONDS_DEFAULT,
    now: int | None = None,
) -> bool:
    """Whether ``header`` is a valid signature of ``body`` made within the tolerance."""
    fields: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        fields.setdefault(name, []).append(value)
    stamps = fields.get("t", [])
    if len(stamps) != 1 or not stamps[0].isdigit():
        return False
    timestamp = int(stamps[0])
    current = int(time.time()) if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        return False
    expected = mac(secret, timestamp, body)
    return any(hmac.compare_digest(expected, given) for given in fields.get("v1", []))
