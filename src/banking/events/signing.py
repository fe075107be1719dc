"""Signed commands: who may move money through ``banking.transactions.submitted``.

A command message is applied only when it carries a valid HMAC-SHA256 signature by a key of
the keyring (``COMMAND_SIGNING_KEYS``: this service's own key, which the relay signs with, and
one per service that sends commands). Two CloudEvents extension headers carry it:

- ``ce_signaturekid``: the key id (which service signed);
- ``ce_signature``: the HMAC-SHA256, lowercase hex, over ``signing_input``.

The signature covers what decides what a command does and which event it is, so none of it
can be changed or moved to another message without the key:

- the event id (``ce_id``): copying a signature onto another command fails;
- the event type (``ce_type``);
- the Kafka key (the account id: the partition, so the order, of the command);
- the value bytes, exactly as sent (the command itself: amount, accounts, requested_by).

Everything else is left out on purpose: the dead-letter headers (``attempts``, ``error``,
``failed_at``, ...) are added and changed as a command is retried, and ``traceparent`` or
``ce_time`` say nothing about what moves. The headers of schema v1 (``event_id``,
``event_type``) name the same id and type, so a command upgraded by the dead-letter topics
keeps its signature.

``signing_input`` is ``b"banking.command.v1\\n"`` followed by each of the four fields (UTF-8
for the id, type and key; the key empty when absent) as an 8-byte big-endian length and the
bytes: no field can borrow bytes from the next. Verification compares with
``hmac.compare_digest``. A refused command says why, in a bounded reason (``REASONS``), and
never which secret was expected.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from banking.config import (
    DEVELOPMENT_COMMAND_SIGNING_KEY,
    DEVELOPMENT_COMMAND_SIGNING_KID,
    CommandSigningKeys,
    Settings,
)
from banking.events.envelope import read_headers
from banking.events.transport import Message

SIGNATURE: Final = "ce_signature"
SIGNATURE_KID: Final = "ce_signaturekid"
SIGNING_PREFIX: Final = b"banking.command.v1\n"

RefusalReason = Literal["missing", "unknown_key", "bad_signature"]
REASONS: Final[tuple[RefusalReason, ...]] = ("missing", "unknown_key", "bad_signature")
_TEXTS: Final[dict[RefusalReason, str]] = {
    "missing": "missing signature",
    "unknown_key": "unknown signing key",
    "bad_signature": "bad signature",
}


class UnauthenticatedCommand(Exception):
    """A command without a valid signature: refused, never applied."""

    def __init__(self, reason: RefusalReason) -> None:
        super().__init__(f"unauthenticated command: {_TEXTS[reason]}")
        self.reason: RefusalReason = reason


def signing_input(event_id: str, event_type: str, key: str | None, value: bytes) -> bytes:
    """The exact bytes a command's signature is computed over (see the module docstring)."""
    parts = (event_id.encode(), event_type.encode(), (key or "").encode(), value)
    return SIGNING_PREFIX + b"".join(len(part).to_bytes(8, "big") + part for part in parts)


def signature(secret: str, event_id: str, event_type: str, key: str | None, value: bytes) -> str:
    """The ``ce_signature`` of a command signed with ``secret``."""
    data = signing_input(event_id, event_type, key, value)
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class CommandKeyring:
    """Signs this service's commands with its own key; verifies commands by any known key."""

    signing_kid: str
    secrets: Mapping[str, str] = field(repr=False)

    @classmethod
    def of(cls, keys: CommandSigningKeys) -> CommandKeyring:
        return cls(keys.signing_kid, dict(keys.secrets))

    def signature_headers(
        self, event_id: str, event_type: str, key: str | None, value: bytes
    ) -> dict[str, str]:
        secret = self.secrets[self.signing_kid]
        return {
            SIGNATURE_KID: self.signing_kid,
            SIGNATURE: signature(secret, event_id, event_type, key, value),
        }

    def verify(self, message: Message) -> None:
        """Return when the message is signed by a known key; raise ``UnauthenticatedCommand``
        otherwise."""
        given = message.headers.get(SIGNATURE)
        kid = message.headers.get(SIGNATURE_KID)
        read = read_headers(message.headers)
        if not given or not kid or not read.event_id or not read.event_type:
            raise UnauthenticatedCommand("missing")
        secret = self.secrets.get(kid)
        if secret is None:
            raise UnauthenticatedCommand("unknown_key")
        expected = signature(secret, read.event_id, read.event_type, message.key, message.value)
        if not hmac.compare_digest(expected.encode(), given.strip().lower().encode()):
            raise UnauthenticatedCommand("bad_signature")


def keyring_of(settings: Settings) -> CommandKeyring:
    """The keyring the environment configures (the development key when unset there)."""
    return CommandKeyring.of(settings.command_keys())


def development_keyring() -> CommandKeyring:
    """The development fallback keyring: what an unconfigured process signs and verifies with."""
    return CommandKeyring(
        DEVELOPMENT_COMMAND_SIGNING_KID,
        {DEVELOPMENT_COMMAND_SIGNING_KID: DEVELOPMENT_COMMAND_SIGNING_KEY},
    )
