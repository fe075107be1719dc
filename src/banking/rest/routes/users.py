"""``/api/v1/auth/token`` (OAuth2 password flow), ``/api/v1/users`` and the public token
keys (``/.well-known/jwks.json``)."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Response, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, ConfigDict, StrictBool

from banking.domain.roles import Role
from banking.rest.dependencies import ContainerDep, CurrentActor
from banking.rest.errors import ErrorCode
from banking.rest.openapi import body_link, responses
from banking.rest.ratelimit import limit_password_guessing
from banking.rest.routes import Route
from banking.rest.schemas import CreationIdempotencyKey, TokenRead, UserCreateBody, UserRead

router = APIRouter(prefix="/api/v1", route_class=Route)
E = ErrorCode
_OPEN_AN_ACCOUNT = {
    "openAccount": body_link(
        "openAccount", "Open an account for this user (a customer).", customer_id="user_id"
    )
}


@router.post(
    "/auth/token",
    response_model=TokenRead,
    tags=["auth"],
    responses=responses(E.VALIDATION_ERROR, E.UNAUTHENTICATED),
    # RATE_LIMIT_TOKEN per client address and username, before the password is checked.
    dependencies=[Depends(limit_password_guessing)],
    openapi_extra={
        "requestBody": {
            "content": {
                "application/x-www-form-urlencoded": {
                    "example": {"username": "dana", "password": "correct-horse-battery"}
                }
            }
        }
    },
)
async def issue_token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], container: ContainerDep
) -> TokenRead:
    """Exchange a username and password (form fields) for a bearer access token."""
    token, expires_in = await container.users.authenticate(form.username, form.password)
    return TokenRead(access_token=token, expires_in=expires_in)


@router.get(
    "/users/me",
    response_model=UserRead,
    tags=["users"],
    responses=responses(
        E.UNAUTHENTICATED, E.USER_NOT_FOUND, success={200: {"links": _OPEN_AN_ACCOUNT}}
    ),
)
async def get_current_user(actor: CurrentActor, container: ContainerDep) -> UserRead:
    """The caller's own user."""
    user = await container.users.get(actor, actor.user_id)
    return _read(user)


@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    response_model=UserRead,
    tags=["users"],
    responses=responses(
        E.UNAUTHENTICATED,
        E.FORBIDDEN,
        E.VALIDATION_ERROR,
        E.USER_ALREADY_EXISTS,
        E.IDEMPOTENCY_CONFLICT,
        success={201: {"links": _OPEN_AN_ACCOUNT}},
        replayable=True,
    ),
)
async def create_user(
    body: UserCreateBody,
    actor: CurrentActor,
    container: ContainerDep,
    response: Response,
    idempotency_key: CreationIdempotencyKey = None,
) -> UserRead:
    """Create a user (admins only). With `Idempotency-Key`, a retry with the same fields
    (password included) answers the user the first request created (`Idempotent-Replayed:
    true`); other fields answer 409 `IDEMPOTENCY_CONFLICT` naming them."""
    user, replayed = await container.users.create_once(
        actor,
        username=body.username,
        email=body.email,
        password=body.password,
        role=body.role,
        idempotency_key=idempotency_key,
    )
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return _read(user)


class UserPatchBody(BaseModel):
    """What an admin may change about a user; at least one field."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"is_active": False}, {"role": "teller"}],
            # At least one of the two, not null (else 422 "nothing to change").
            "anyOf": [
                {"required": ["is_active"], "properties": {"is_active": {"type": "boolean"}}},
                {
                    "required": ["role"],
                    "properties": {"role": {"$ref": "#/components/schemas/Role"}},
                },
            ],
        },
    )

    # Strict: 0, 1 or "no" would silently pass as a boolean.
    is_active: StrictBool | None = None
    role: Role | None = None


@router.patch(
    "/users/{user_id}",
    response_model=UserRead,
    tags=["users"],
    responses=responses(E.UNAUTHENTICATED, E.FORBIDDEN, E.USER_NOT_FOUND, E.VALIDATION_ERROR),
)
async def update_user(
    user_id: UUID, body: UserPatchBody, actor: CurrentActor, container: ContainerDep
) -> UserRead:
    """Deactivate (``is_active: false``) or reactivate a user, or change their role (admins
    only; not their own account). The user's existing tokens stop working, or act with the
    new role, within ``TOKEN_USER_RECHECK_SECONDS``."""
    user = await container.users.update(actor, user_id, is_active=body.is_active, role=body.role)
    return _read(user)


# Outside /api/v1: where other services look for the keys that verify this API's tokens.
well_known_router = APIRouter(route_class=Route)
JWKS_MAX_AGE_SECONDS = 300


@well_known_router.get(
    "/.well-known/jwks.json",
    tags=["auth"],
    responses=responses(
        success={
            200: {
                "headers": {"Cache-Control": {"schema": {"type": "string"}, "required": True}},
                "content": {"application/json": {"example": {"keys": []}}},
            }
        }
    ),
)
async def jwks(container: ContainerDep, response: Response) -> dict[str, Any]:
    """The public keys that verify this API's tokens (JWKS, RFC 7517), by ``kid``: with
    ``JWT_ALGORITHM`` EdDSA or RS256. Empty with a shared secret (HS256), which is never
    published."""
    response.headers["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE_SECONDS}"
    return dict(container.tokens.jwks())


def _read(user: object) -> UserRead:
    return UserRead.model_validate(user, from_attributes=True)
