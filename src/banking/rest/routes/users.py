"""``/api/v1/auth/token`` (OAuth2 password flow) and ``/api/v1/users``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status
from fastapi.security import OAuth2PasswordRequestForm

from banking.rest.dependencies import ContainerDep, CurrentActor
from banking.rest.jsonbody import ExactJSONRoute
from banking.rest.ratelimit import limit_password_guessing
from banking.rest.schemas import ErrorEnvelope, TokenRead, UserCreateBody, UserRead

router = APIRouter(prefix="/api/v1", route_class=ExactJSONRoute)


@router.post(
    "/auth/token",
    response_model=TokenRead,
    tags=["auth"],
    responses={401: {"model": ErrorEnvelope}, 429: {"model": ErrorEnvelope}},
    # RATE_LIMIT_TOKEN per client address and username, before the password is checked.
    dependencies=[Depends(limit_password_guessing)],
)
async def issue_token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], container: ContainerDep
) -> TokenRead:
    """Exchange a username and password (form fields) for a bearer access token."""
    token, expires_in = await container.users.authenticate(form.username, form.password)
    return TokenRead(access_token=token, expires_in=expires_in)


@router.get(
    "/users/me", response_model=UserRead, tags=["users"], responses={401: {"model": ErrorEnvelope}}
)
async def me(actor: CurrentActor, container: ContainerDep) -> UserRead:
    user = await container.users.get(actor, actor.user_id)
    return _read(user)


@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    response_model=UserRead,
    tags=["users"],
    responses={code: {"model": ErrorEnvelope} for code in (401, 403, 409, 422)},
)
async def create_user(
    body: UserCreateBody, actor: CurrentActor, container: ContainerDep
) -> UserRead:
    """Create a user (admins only)."""
    user = await container.users.create(
        actor, username=body.username, email=body.email, password=body.password, role=body.role
    )
    return _read(user)


def _read(user: object) -> UserRead:
    return UserRead.model_validate(user, from_attributes=True)
