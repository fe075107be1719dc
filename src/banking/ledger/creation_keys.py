"""Idempotent creation of accounts and users (``Idempotency-Key``, Stripe's semantics).

A key is scoped to the caller (their user id) and the operation (``account.create``,
``user.create``). The first request with a key claims it in the same transaction that creates
the resource, in the ``idempotency_keys`` table whose unique key ``(scope, caller_id, key)``
decides between concurrent duplicates: exactly one creates, the others find its claim and
answer the same resource (a replay). The same key with other parameters is
``IDEMPOTENCY_CONFLICT`` naming the fields that differ, and creates nothing.

Only non-secret parameters are stored (``parameters``, and their ``fingerprint``). A user's
password is never stored with the key, not even hashed: a replay checks the password against
the created user's own password hash instead, so a retry with another password is a conflict
on ``password`` while the key table holds nothing that reveals it.

A key expires after ``IDEMPOTENCY_KEY_RETENTION_HOURS``; an expired key may be used again.
Purging is lazy: claiming a key first deletes the caller's expired keys.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from uuid import UUID

from banking.domain.errors import IdempotencyConflict
from banking.ledger.movements import check_idempotency_key

ACCOUNT_CREATE: Final = "account.create"
USER_CREATE: Final = "user.create"
RETENTION_HOURS_DEFAULT: Final = 24.0


@dataclass(frozen=True, slots=True)
class CreationKey:
    """A claimed idempotency key: who used it for what, with which parameters, and the id of
    the resource it created."""

    scope: str
    caller_id: UUID
    key: str
    parameters: Mapping[str, str]
    resource_id: UUID
    created_at: datetime

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.parameters)


def fingerprint_of(parameters: Mapping[str, str]) -> str:
    """SHA-256 of the parameters in canonical JSON (sorted keys)."""
    canonical = json.dumps(dict(parameters), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_key(key: str) -> str:
    """``key`` when it is 1 to ``BATCH_KEY_LENGTH_MAX`` printable characters, the rule of the
    batch API's key; ``ValidationFailed`` otherwise."""
    check_idempotency_key(key)
    return key


def require_same(stored: CreationKey, asked: Mapping[str, str]) -> None:
    """Nothing when ``asked`` are the parameters ``stored`` was claimed with; otherwise
    ``IdempotencyConflict`` naming the fields that differ."""
    if stored.fingerprint == fingerprint_of(asked):
        return
    raise conflict(differing_fields(stored, asked))


def differing_fields(stored: CreationKey, asked: Mapping[str, str]) -> list[str]:
    """The parameters in which ``asked`` differs from those ``stored`` was claimed with."""
    names = sorted(set(stored.parameters) | set(asked))
    return [name for name in names if stored.parameters.get(name) != asked.get(name)]


def conflict(differing: list[str]) -> IdempotencyConflict:
    verb = "differs" if len(differing) == 1 else "differ"
    return IdempotencyConflict(
        "the Idempotency-Key was already used with different parameters"
        + (f": {', '.join(differing)} {verb}" if differing else ""),
        fields=differing,
    )
