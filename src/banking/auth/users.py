"""Use cases on users: create, authenticate, read, change (activate, deactivate, role); and the
first admin of a fresh install."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from banking.auth.passwords import PASSWORD_LENGTH_MAX, PASSWORD_LENGTH_MIN, Passwords
from banking.auth.tokens import TokenService
from banking.domain.clock import utc_now
from banking.domain.errors import (
    Forbidden,
    InvariantViolated,
    Unauthenticated,
    UserAlreadyExists,
    UserNotFound,
    ValidationFailed,
)
from banking.domain.records import StaffAction, StaffActionType
from banking.domain.roles import Actor, Role
from banking.events.outbox import staff_action_event
from banking.ledger.access import require_manages_users
from banking.ledger.creation_keys import (
    RETENTION_HOURS_DEFAULT,
    USER_CREATE,
    CreationKey,
    check_key,
    conflict,
    differing_fields,
)
from banking.observability import context
from banking.observability.logging import get_logger
from banking.storage import repositories as repo
from banking.storage.database import Database, is_unique_violation
from banking.storage.tables import outbox

log = get_logger("banking.auth")

_USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{3,64}$")
_EMAIL = re.compile(
    r"^[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]{1,189}\.[^@\s\x00-\x1f\x7f]{1,63}$"
)
BOOTSTRAP_ADMIN_USERNAME = "admin"


@dataclass(frozen=True, slots=True)
class User:
    user_id: UUID
    username: str
    email: str
    role: Role
    is_active: bool
    created_at: datetime
    last_login: datetime | None


def _user(row: Any) -> User:
    return User(
        row.user_id,
        row.username,
        row.email,
        Role(row.role),
        row.is_active,
        row.created_at,
        row.last_login,
    )


class UserService:
    def __init__(
        self,
        database: Database,
        tokens: TokenService,
        passwords: Passwords | None = None,
        *,
        key_retention_hours: float = RETENTION_HOURS_DEFAULT,
    ) -> None:
        self._database = database
        self._tokens = tokens
        self._passwords = passwords or Passwords()
        self._key_retention = timedelta(hours=key_retention_hours)

    async def create(
        self, actor: Actor | None, *, username: str, email: str, password: str, role: Role
    ) -> User:
        """Create a user. ``actor`` None means the operator's command line (trusted)."""
        user, _ = await self.create_once(
            actor, username=username, email=email, password=password, role=role
        )
        return user

    async def create_once(
        self,
        actor: Actor | None,
        *,
        username: str,
        email: str,
        password: str,
        role: Role,
        idempotency_key: str | None = None,
    ) -> tuple[User, bool]:
        """``create`` under an ``Idempotency-Key`` (``banking.ledger.creation_keys``): the
        user, and True when it is the one an earlier request with the key created (same
        username, email, role and password). Other parameters are ``IDEMPOTENCY_CONFLICT``
        naming them, ``password`` included (checked against the user's own password hash:
        the key's row holds no password, hashed or not); nothing is created."""
        if actor is not None:
            require_manages_users(actor)
        key = None if idempotency_key is None else check_key(idempotency_key)
        if key is not None and actor is None:
            raise ValidationFailed("an idempotency key needs a caller", field="idempotency_key")
        if not _USERNAME.fullmatch(username):
            raise ValidationFailed(
                "username must be 3-64 letters, digits or _.@-", field="username"
            )
        if not _EMAIL.fullmatch(email):
            raise ValidationFailed("email is not a valid address", field="email")
        if not PASSWORD_LENGTH_MIN <= len(password) <= PASSWORD_LENGTH_MAX:
            raise ValidationFailed(
                f"password must be {PASSWORD_LENGTH_MIN} to {PASSWORD_LENGTH_MAX} characters",
                field="password",
            )
        user = User(uuid4(), username, email.lower(), role, True, utc_now(), None)
        values = {
            "user_id": user.user_id,
            "username": user.username,
            "password_hash": self._passwords.hash(password),
            "email": user.email,
            "role": role.value,
            "is_active": True,
            "created_at": user.created_at,
            "last_login": None,
        }

        # Audited in the same transaction (no password, no hash: who, whom, which role).
        action = StaffAction(
            action_id=uuid4(),
            action=StaffActionType.USER_CREATED,
            actor=actor,
            created_at=user.created_at,
            trace_id=context.current("trace_id"),
            user_id=user.user_id,
            details={"username": user.username, "role": role.value},
        )

        parameters = {"username": user.username, "email": user.email, "role": role.value}
        claim = None
        if key is not None and actor is not None:
            claim = CreationKey(
                USER_CREATE, actor.user_id, key, parameters, user.user_id, user.created_at
            )

        async def work(connection: AsyncConnection) -> CreationKey | None:
            if claim is not None:
                stored = await repo.claim_creation_key(
                    connection, claim, expired_before=claim.created_at - self._key_retention
                )
                if stored is not None:
                    return stored
            await repo.insert_user(connection, values)
            await connection.execute(insert(outbox), [staff_action_event(action)])
            return None

        try:
            stored = await self._database.run_in_transaction(work)
        except IntegrityError as error:
            if is_unique_violation(error):
                raise UserAlreadyExists("username or email is already taken") from error
            raise
        if stored is None:
            return user, False
        return await self._replayed(stored, parameters, password), True

    async def _replayed(
        self, stored: CreationKey, parameters: dict[str, str], password: str
    ) -> User:
        async with self._database.read() as connection:
            row = await repo.get_user(connection, stored.resource_id)
        if row is None:
            raise InvariantViolated(f"the idempotency key holds user {stored.resource_id}")
        differing = differing_fields(stored, parameters)
        if not self._passwords.verify(row.password_hash, password):
            differing.append("password")
        if differing:
            raise conflict(sorted(differing))
        return _user(row)

    async def authenticate(self, username: str, password: str) -> tuple[str, int]:
        """A fresh access token and its lifetime in seconds, for valid active credentials."""
        self._tokens.require_issuer()  # before the password is checked or a login recorded
        row = None
        if _USERNAME.fullmatch(username):  # anything else cannot be a user: no lookup
            async with self._database.read() as connection:
                row = await repo.get_user_by_username(connection, username)
        valid = self._passwords.verify(row.password_hash if row else None, password)
        if row is None or not valid or not row.is_active:
            raise Unauthenticated("incorrect username or password")

        async def work(connection: AsyncConnection) -> None:
            await repo.set_last_login(connection, row.user_id, utc_now())

        await self._database.run_in_transaction(work)
        token = self._tokens.issue(row.user_id, row.username, Role(row.role))
        return token, self._tokens.expire_seconds

    async def get(self, actor: Actor, user_id: UUID) -> User:
        if actor.user_id != user_id:
            require_manages_users(actor)
        async with self._database.read() as connection:
            row = await repo.get_user(connection, user_id)
        if row is None:
            raise UserNotFound("user not found")
        return _user(row)

    async def update(
        self,
        actor: Actor,
        user_id: UUID,
        *,
        is_active: bool | None = None,
        role: Role | None = None,
    ) -> User:
        """Deactivate or reactivate a user, or change their role (admins only). Their tokens
        follow within ``TOKEN_USER_RECHECK_SECONDS`` on every instance, at once on this one.
        An admin cannot deactivate or demote themselves, so one active admin always remains
        who can undo a change."""
        require_manages_users(actor)
        if is_active is None and role is None:
            raise ValidationFailed("nothing to change: send is_active or role")
        if actor.user_id == user_id and (is_active is False or role not in (None, Role.ADMIN)):
            raise ValidationFailed(
                "an admin cannot deactivate or demote their own account",
                field="is_active" if is_active is False else "role",
            )
        changes: dict[str, Any] = {}
        if is_active is not None:
            changes["is_active"] = is_active
        if role is not None:
            changes["role"] = role.value

        async def work(connection: AsyncConnection) -> tuple[Any, Any]:
            # Both rows locked (in id order): the admin must still be one as this commits,
            # so two admins cannot demote each other at the same moment.
            rows = {
                row.user_id: row
                for row in await repo.lock_users(connection, {actor.user_id, user_id})
            }
            acting = rows.get(actor.user_id)
            if acting is None or not acting.is_active or acting.role != Role.ADMIN.value:
                raise Forbidden("managing users needs the admin role")
            before = rows.get(user_id)
            if before is None:
                raise UserNotFound("user not found")
            await repo.update_user(connection, user_id, changes)
            return before, await repo.get_user(connection, user_id)

        before, after = await self._database.run_in_transaction(work)
        self._tokens.forget_user(user_id)
        log.info(
            "user_changed",
            changed_user_id=str(user_id),
            changed_username=after.username,
            by_user_id=str(actor.user_id),
            by_username=actor.username,
            **{f"{name}_before": getattr(before, name) for name in changes},
            **{f"{name}_after": getattr(after, name) for name in changes},
        )
        return _user(after)

    async def create_bootstrap_admin(self) -> str | None:
        """On an install without users, create ``admin`` with a random password and return
        the password (shown once). Returns None when users already exist."""
        async with self._database.read() as connection:
            if await repo.count_users(connection) > 0:
                return None
        password = secrets.token_urlsafe(18)
        try:
            await self.create(
                None,
                username=BOOTSTRAP_ADMIN_USERNAME,
                email="admin@localhost.localdomain",
                password=password,
                role=Role.ADMIN,
            )
        except UserAlreadyExists:
            return None  # another process bootstrapped first
        return password
