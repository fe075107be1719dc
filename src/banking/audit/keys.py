"""The signing key rotation, audited: when ``banking serve`` starts with a signing key id
other than the last one recorded (in the outbox or the audit trail), one ``staff.key_rotated``
action is written. Key ids only, never key material. The first start records the key in use
(``previous_kid`` null), so later rotations have something to compare with."""

from __future__ import annotations

import json
from typing import Final
from uuid import uuid4

from sqlalchemy.ext.asyncio import AsyncConnection

from banking.audit import store
from banking.domain.clock import utc_now
from banking.domain.records import StaffAction, StaffActionType
from banking.events import outbox
from banking.observability.logging import get_logger
from banking.storage.database import Database
from banking.storage.tables import outbox as outbox_table

log = get_logger(__name__)

# The keys whose id is audited: token signing (JWT ``kid``) and command signing.
KEY_TOKENS: Final = "token"
KEY_COMMANDS: Final = "command"
_RECENT_ACTIONS_MAX: Final = 200


def _last_kids(payloads: list[str]) -> dict[str, str | None]:
    """The newest recorded kid per key, from ``staff.key_rotated`` payloads, newest first."""
    found: dict[str, str | None] = {}
    for text in payloads:
        try:
            details = json.loads(json.loads(text).get("details") or "{}")
        except (ValueError, AttributeError, TypeError):
            continue
        key = details.get("key") if isinstance(details, dict) else None
        if isinstance(key, str) and key not in found:
            kid = details.get("kid")
            found[key] = kid if isinstance(kid, str) else None
    return found


async def record_key_rotations(database: Database, signing_kids: dict[str, str | None]) -> int:
    """Write a ``staff.key_rotated`` action for each key whose signing kid differs from the
    last recorded one; how many were written."""

    async def work(connection: AsyncConnection) -> int:
        event_type = outbox.staff_event_type(StaffActionType.KEY_ROTATED)
        last = _last_kids(
            await store.last_staff_actions(connection, event_type, limit=_RECENT_ACTIONS_MAX)
        )
        rows = []
        for key, kid in signing_kids.items():
            if kid is None or last.get(key) == kid:
                continue
            action = StaffAction(
                action_id=uuid4(),
                action=StaffActionType.KEY_ROTATED,
                actor=None,
                created_at=utc_now(),
                details={"key": key, "kid": kid, "previous_kid": last.get(key)},
            )
            rows.append(outbox.staff_action_event(action))
        if rows:
            await connection.execute(outbox_table.insert(), rows)
        return len(rows)

    written = await database.run_in_transaction(work)
    if written:
        log.info("signing_key_rotation_recorded", keys=written)
    return written
